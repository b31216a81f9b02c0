//go:build composetest

package composetest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/publish"
)

// TestComposeCluster runs the "cluster" profile (three NATS nodes, R3
// streams, three workers), publishes from the host with every publish
// retried under its message id until acknowledged, and cuts the PAYMENTS
// stream's leader off the network (from the other two nodes and from the
// workers) for 20s mid-run, then heals it. Every acknowledged publish must
// end as one final row, announced, and nobody may be charged twice.
// Settings: COMPOSE, COMPOSE_TEST_CLUSTER_PAYMENTS (default 3000).
func TestComposeCluster(t *testing.T) {
	root := repoRoot(t)
	n := envInt(t, "COMPOSE_TEST_CLUSTER_PAYMENTS", 3000)
	project := fmt.Sprintf("paystream-cc-%d", time.Now().UnixNano()%1_000_000_000)
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("compose-test %6.1fs "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	ports, err := freePorts(3)
	require.NoError(t, err)
	env := map[string]string{"COMPOSE_PROFILES": "cluster"}
	var urls []string
	for i, p := range ports {
		env[fmt.Sprintf("HOST_NATS_%d_PORT", i+1)] = strconv.Itoa(p)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	s, err := New(Config{Dir: root, Compose: composeCommand(), Project: project, Env: env, Logf: logf})
	require.NoError(t, err)
	ctx := t.Context()
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			fmt.Println(s.Logs(dctx, 40, "nats-1", "nats-2", "nats-3", "worker-cluster"))
		}
		if err := s.Down(dctx); err != nil {
			t.Errorf("down: %v", err)
		}
		logf("project %s removed", project)
	})

	logf("up: project %s, profile cluster", project)
	_, err = s.Compose(ctx, 6*time.Minute, "up", "--detach", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "300",
		"nats-1", "nats-2", "nats-3", "postgres", "gatewaysim", "worker-cluster")
	require.NoError(t, err, "compose up")
	logf("up: every service healthy")

	a, err := audit.New(ctx, audit.Config{NATSURL: strings.Join(urls, ","), DatabaseURL: s.DatabaseURL(), GatewayURL: s.GatewayURL()})
	require.NoError(t, err)
	defer a.Close()
	js := a.JetStream()

	info, err := js.Stream(ctx, "PAYMENTS")
	require.NoError(t, err, "the workers have not created the PAYMENTS stream")
	si := info.CachedInfo()
	require.Equal(t, 3, si.Config.Replicas, "PAYMENTS replicas")
	require.NotNil(t, si.Cluster)
	leader := si.Cluster.Leader
	require.NotEmpty(t, leader)
	logf("PAYMENTS: R%d, leader %s", si.Config.Replicas, leader)

	// Publish in the background: each message retried under its message id
	// (the stream's duplicate window makes a retry of a stored message a
	// no-op) until acknowledged, 4 at a time, about 100 per second.
	seed := time.Now().UnixNano() % 1_000_000
	opts := publish.GenOptions{Merchants: Merchants}
	var (
		mu      sync.Mutex
		acked   []string
		retries int
	)
	pubDone := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		next := make(chan int)
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					it := publish.Generate(seed, i, opts)
					msg := &nats.Msg{Subject: contract.SubjectPrefix + ".requests." + it.Merchant, Data: it.Body, Header: nats.Header{}}
					msg.Header.Set(nats.MsgIdHdr, it.MsgID)
					deadline := time.Now().Add(2 * time.Minute)
					for {
						pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						_, err := js.PublishMsg(pctx, msg)
						cancel()
						if err == nil {
							break
						}
						if ctx.Err() != nil || time.Now().After(deadline) {
							errs <- fmt.Errorf("publish %s: %w", it.MsgID, err)
							return
						}
						mu.Lock()
						retries++
						mu.Unlock()
						time.Sleep(200 * time.Millisecond)
					}
					if it.Kind == publish.KindValid {
						mu.Lock()
						acked = append(acked, it.Request.EffectiveKey())
						mu.Unlock()
					}
				}
			}()
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
	feed:
		for i := range n {
			select {
			case <-ctx.Done():
				break feed
			case <-tick.C:
			}
			select {
			case next <- i:
			case err := <-errs:
				close(next)
				wg.Wait()
				pubDone <- err
				return
			}
		}
		close(next)
		wg.Wait()
		select {
		case err := <-errs:
			pubDone <- err
		default:
			pubDone <- ctx.Err()
		}
	}()

	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	sleep(8 * time.Second)
	id, err := s.Container(ctx, leader)
	require.NoError(t, err)
	_, err = s.Docker(ctx, time.Minute, "network", "disconnect", "--force", s.Network(), id)
	require.NoError(t, err)
	logf("partitioned the PAYMENTS leader %s (%s) from the other nodes and the workers for 20s", leader, short(id))
	sleep(20 * time.Second)
	if info, err := js.Stream(ctx, "PAYMENTS"); err == nil && info.CachedInfo().Cluster != nil {
		logf("during the partition the PAYMENTS leader is %s", info.CachedInfo().Cluster.Leader)
	}
	_, err = s.Docker(ctx, time.Minute, "network", "connect", "--alias", leader, s.Network(), id)
	require.NoError(t, err)
	logf("healed %s", leader)
	require.NoError(t, s.WaitHealthy(ctx, id, 3*time.Minute))

	select {
	case err := <-pubDone:
		require.NoError(t, err)
	case <-time.After(5 * time.Minute):
		t.Fatal("publishing did not finish")
	}
	mu.Lock()
	keys := append([]string(nil), acked...)
	logf("published %d items, %d valid acknowledged, %d publish retries", n, len(keys), retries)
	mu.Unlock()

	l := &Ledger{keys: keys}
	r, line, err := Audit(ctx, a, l, "cluster-leader", 6*time.Minute)
	require.NoError(t, err)
	fmt.Println(line)
	require.True(t, r.OK(), "%s", strings.Join(r.Problems(), "\n"))
}
