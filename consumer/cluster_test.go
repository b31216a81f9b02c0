package consumer_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

// newClusterStack is newStack on a NATS cluster: its client and every
// worker started with startClusterWorker connect with all of urls, and the
// streams and consumer are provisioned with Replicas 3. The stack's nats
// field stays nil: use the cluster to stop nodes.
func newClusterStack(t *testing.T, urls []string, o stackOptions) *stack {
	t.Helper()
	return newStackAt(t, o, strings.Join(urls, ","), 3)
}

// startClusterWorker is startWorker with a connection to every URL of the
// cluster, as a worker given PAYSTREAM_NATS_URL=url1,url2,url3 has.
func (s *stack) startClusterWorker(name string, urls []string) *worker {
	s.t.Helper()
	return s.startWorkerAt(name, strings.Join(urls, ","))
}

// publishRetrying publishes a request with its payment id as message id,
// retrying while the stream fails over; the message id makes a retry of a
// publish that did land a no-op.
func (s *stack) publishRetrying(r *payment.Request) {
	s.t.Helper()
	body, err := json.Marshal(r)
	require.NoError(s.t, err)
	require.EventuallyWithT(s.t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := s.js.Publish(ctx, "payments.requests."+r.MerchantID, body, jetstream.WithMsgID(r.PaymentID))
		require.NoError(c, err)
	}, 30*time.Second, 50*time.Millisecond, "publish %s", r.PaymentID)
}

// gatedGateway lets the first free charges through and holds every later
// one until open is closed, so that a test knows payments are in flight.
type gatedGateway struct {
	processing.Gateway
	free    int64
	open    chan struct{}
	calls   atomic.Int64
	waiting atomic.Int64
}

func (g *gatedGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	if g.calls.Add(1) > g.free {
		g.waiting.Add(1)
		select {
		case <-g.open:
			g.waiting.Add(-1)
		case <-ctx.Done():
			g.waiting.Add(-1)
			return payment.ChargeResult{}, ctx.Err()
		}
	}
	return g.Gateway.Charge(ctx, c)
}

// TestClusterNodeLossMidRun runs two workers against a three-node JetStream
// cluster with every stream at replicas 3, stops the node that leads the
// requests stream while payments are in flight, and checks that nothing is
// lost, nothing is charged twice and nothing is dead-lettered.
func TestClusterNodeLossMidRun(t *testing.T) {
	t.Parallel()
	c := natstest.NewCluster(t, 3)
	urls := c.URLs()
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 11, Latency: 2 * time.Millisecond})
	gate := &gatedGateway{Gateway: fake, free: 40, open: make(chan struct{})}
	// A short AckWait and lease bound how long a delivery whose ack died
	// with the node waits before it is redelivered and taken over.
	s := newClusterStack(t, urls, stackOptions{
		gw: gate, concurrency: 8, ackWait: 3 * time.Second, lease: 5 * time.Second, shutdown: 10 * time.Second,
	})

	for _, name := range []string{s.ccfg.Stream, s.ccfg.ResultsStream, s.ccfg.DLQStream} {
		st, err := s.js.Stream(context.Background(), name)
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, "stream %s replicas", name)
	}

	const before, after = 240, 60
	const n = before + after
	declines := 0
	req := func(i int) *payment.Request {
		amount := int64(1000 + i)
		if amount%100 == 13 {
			declines++
		}
		return request(i, amount)
	}
	for i := range before {
		s.publishRetrying(req(i))
	}

	w1 := s.startClusterWorker("w1", urls)
	w2 := s.startClusterWorker("w2", urls)
	// The first 40 charges go through; then both workers fill their slots
	// with payments held at the gateway: the node goes down mid-run.
	s.waitFor("progress, then payments in flight", 30*time.Second, func() bool {
		return s.finalRows() >= 20 && gate.waiting.Load() >= 8
	})

	var leader int
	require.Eventually(t, func() bool {
		leader = c.StreamLeader("", s.ccfg.Stream)
		return leader >= 0
	}, 10*time.Second, 20*time.Millisecond, "find the leader of %s", s.ccfg.Stream)
	c.Kill(leader)
	t.Logf("stopped node %d, the leader of %s, at %d of %d final rows with %d charges in flight",
		leader, s.ccfg.Stream, s.finalRows(), n, gate.waiting.Load())
	close(gate.open)

	// The survivors elect a new leader; new requests are accepted.
	require.Eventually(t, func() bool {
		l := c.StreamLeader("", s.ccfg.Stream)
		return l >= 0 && l != leader
	}, 20*time.Second, 20*time.Millisecond, "new leader of %s", s.ccfg.Stream)
	for i := before; i < n; i++ {
		s.publishRetrying(req(i))
	}

	s.waitFor("every payment final", 45*time.Second, func() bool { return s.finalRows() == n })
	s.waitSettled(20 * time.Second)

	counts := s.counts()
	require.Equal(t, n-declines, counts[payment.StatusSucceeded])
	require.Equal(t, declines, counts[payment.StatusDeclined])
	require.Zero(t, counts[payment.StatusFailed])
	require.Zero(t, counts[payment.StatusProcessing])
	var rows, keys int
	require.NoError(t, s.pool.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT payment_id) FROM payments`).Scan(&rows, &keys))
	require.Equal(t, n, rows, "one row per payment")
	require.Equal(t, n, keys)

	st := fake.Stats()
	require.Empty(t, st.DoubleCharged, "no payment charged twice")
	require.EqualValues(t, n-declines, st.Charges)
	require.Zero(t, s.streamCount(s.ccfg.DLQStream), "no dead letters")
	require.Equal(t, n, s.streamCount(s.ccfg.ResultsStream), "one outcome event per payment")

	w1.stop(t)
	w2.stop(t)
	for _, w := range []*worker{w1, w2} {
		require.Positive(t, counterSum(t, w, "paystream_messages_total"), "worker %s processed nothing", w.name)
	}
}
