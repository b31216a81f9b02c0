//go:build composetest

package composetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/audit"
)

// envInt reads a positive integer setting of the test.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "%s=%q", name, v)
	require.Positive(t, n, "%s", name)
	return n
}

// repoRoot is the repository's root, where docker-compose.yml is.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	require.NoError(t, err)
	return root
}

// composeCommand is COMPOSE split into words, default "docker compose".
func composeCommand() []string {
	if c := strings.Fields(os.Getenv("COMPOSE")); len(c) > 0 {
		return c
	}
	return []string{"docker", "compose"}
}

// TestCompose runs the whole compose stack and its faults; see the package
// documentation. Settings (environment): COMPOSE (the compose command,
// default "docker compose"), COMPOSE_TEST_PAYMENTS (the first batch,
// default 10000), COMPOSE_TEST_BATCH (the batch published with each fault,
// default 1000), COMPOSE_TEST_KEEP=1 (leave the stack running), and the
// image variables of docker-compose.yml (PAYSTREAM_IMAGE,
// PAYSTREAM_NATS_IMAGE, PAYSTREAM_POSTGRES_IMAGE).
func TestCompose(t *testing.T) {
	root := repoRoot(t)
	composeCmd := composeCommand()
	first := envInt(t, "COMPOSE_TEST_PAYMENTS", 10000)
	batch := envInt(t, "COMPOSE_TEST_BATCH", 1000)
	project := fmt.Sprintf("paystream-ct-%d", time.Now().UnixNano()%1_000_000_000)
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("compose-test %6.1fs "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
	}
	s, err := New(Config{Dir: root, Compose: composeCmd, Project: project, Logf: logf})
	require.NoError(t, err)

	ctx := t.Context()
	// Always take the project down, volumes included, even after a failure.
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			fmt.Println(s.Logs(dctx, 40, "nats", "postgres", "gatewaysim", "worker"))
		}
		if os.Getenv("COMPOSE_TEST_KEEP") == "1" {
			logf("keeping project %s (docker compose -p %s down -v)", project, project)
			return
		}
		if err := s.Down(dctx); err != nil {
			t.Errorf("down: %v", err)
		}
		logf("project %s removed", project)
	})

	logf("up: project %s (%s)", project, strings.Join(composeCmd, " "))
	require.NoError(t, s.Up(ctx), "compose up")
	logf("up: every service healthy")

	a, err := audit.New(ctx, audit.Config{NATSURL: s.NATSURL(), DatabaseURL: s.DatabaseURL(), GatewayURL: s.GatewayURL()})
	require.NoError(t, err)
	defer a.Close()

	var ledger Ledger
	seed := time.Now().UnixNano() % 1_000_000
	// publishing starts the publisher service with a batch of n at rate
	// per second (0: at once) and returns a function that waits for it
	// and records the batch. The faults below run while it publishes, so
	// that they hit work in flight.
	publishing := func(t *testing.T, n int, rate float64) (published func()) {
		seed++
		b := Batch{Seed: seed, Count: n, Rate: rate}
		pstart := time.Now()
		type result struct {
			sum  PublishSummary
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			sum, err := s.Publish(ctx, b)
			done <- result{sum, err, time.Since(pstart)}
		}()
		var once bool
		var res result
		wait := func() {
			if !once {
				once, res = true, <-done
			}
		}
		// A phase that fails first still waits for its publisher (which
		// ends with ctx).
		t.Cleanup(wait)
		return func() {
			t.Helper()
			wait()
			require.NoError(t, res.err, "publish %d", n)
			ledger.Add(b)
			logf("published %d messages (seed %d, %d valid, %d duplicates, %d invalid) in %s",
				res.sum.Sent, b.Seed, res.sum.Valid, res.sum.Duplicates, res.sum.Invalid, res.took.Round(100*time.Millisecond))
		}
	}
	publish := func(t *testing.T, n int) { publishing(t, n, 0)() }
	// rate spreads a fault's batch over about 30s: the fault starts 5s
	// into it and lasts 20-40s.
	rate := float64(batch) / 30
	check := func(t *testing.T, phase string) {
		t.Helper()
		r, line, err := Audit(ctx, a, &ledger, phase, 6*time.Minute)
		require.NoError(t, err)
		fmt.Println(line)
		require.True(t, r.OK(), "%s: %s", phase, strings.Join(r.Problems(), "\n"))
	}
	worker := func(t *testing.T, i int) string {
		t.Helper()
		ids, err := s.Containers(ctx, "worker")
		require.NoError(t, err)
		require.Greater(t, len(ids), i, "workers running: %d", len(ids))
		return ids[i]
	}
	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}

	// 1. The first batch, no fault.
	publish(t, first)
	check(t, "baseline")

	// 2. A worker frozen past its lease (30s) while it holds claims; its
	// late writes after the thaw must be fenced.
	t.Run("pause", func(t *testing.T) {
		published := publishing(t, batch, rate)
		sleep(5 * time.Second)
		id := worker(t, 0)
		_, err := s.Docker(ctx, time.Minute, "pause", id)
		require.NoError(t, err)
		logf("paused worker %s for 40s", short(id))
		sleep(40 * time.Second)
		_, err = s.Docker(ctx, time.Minute, "unpause", id)
		require.NoError(t, err)
		require.NoError(t, s.WaitHealthy(ctx, id, 2*time.Minute))
		published()
		check(t, "pause")
	})

	// 3. A worker cut off from the network (NATS, Postgres, gateway) for 20s.
	t.Run("partition", func(t *testing.T) {
		published := publishing(t, batch, rate)
		sleep(5 * time.Second)
		id := worker(t, 1)
		_, err := s.Docker(ctx, time.Minute, "network", "disconnect", "--force", s.Network(), id)
		require.NoError(t, err)
		logf("disconnected worker %s from %s for 20s", short(id), s.Network())
		sleep(20 * time.Second)
		_, err = s.Docker(ctx, time.Minute, "network", "connect", s.Network(), id)
		require.NoError(t, err)
		require.NoError(t, s.WaitHealthy(ctx, id, 2*time.Minute))
		published()
		check(t, "partition")
	})

	// 4. docker kill (SIGKILL) of a worker mid-work. Docker's restart
	// policy does not restart a container killed through the API (20.10
	// does not), so unless it did after 5s the test starts it again, as an
	// operator would.
	t.Run("kill", func(t *testing.T) {
		published := publishing(t, batch, rate)
		sleep(5 * time.Second)
		id := worker(t, 2)
		before, err := s.Inspect(ctx, id)
		require.NoError(t, err)
		_, err = s.Docker(ctx, time.Minute, "kill", id)
		require.NoError(t, err)
		restarted := false
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); sleep(time.Second) {
			if st, err := s.Inspect(ctx, id); err == nil && st.RestartCount > before.RestartCount && st.Running {
				restarted = true
				break
			}
		}
		if !restarted {
			_, err = s.Docker(ctx, time.Minute, "start", id)
			require.NoError(t, err)
		}
		logf("killed worker %s; restarted by %s", short(id), map[bool]string{true: "its restart policy", false: "docker start"}[restarted])
		require.NoError(t, s.WaitServiceHealthy(ctx, "worker", 3, 3*time.Minute))
		published()
		check(t, "kill")
	})

	// 5. and 6. Postgres, then NATS, restarted under load. The publisher
	// keeps publishing through the Postgres restart; it would fail on a
	// NATS that is down (its publishes are not retried across a restart),
	// so the NATS batch is published first and restarted while the
	// workers process it.
	for _, svc := range []string{"postgres", "nats"} {
		t.Run(svc+"-restart", func(t *testing.T) {
			var published func()
			if svc == "nats" {
				publish(t, batch)
			} else {
				published = publishing(t, batch, rate)
				sleep(5 * time.Second)
			}
			id, err := s.Container(ctx, svc)
			require.NoError(t, err)
			_, err = s.Docker(ctx, 2*time.Minute, "restart", "--time", "10", id)
			require.NoError(t, err)
			logf("restarted %s %s", svc, short(id))
			require.NoError(t, s.WaitHealthy(ctx, id, 3*time.Minute))
			require.NoError(t, s.WaitServiceHealthy(ctx, "worker", 3, 3*time.Minute))
			if published != nil {
				published()
			}
			check(t, svc+"-restart")
		})
	}

	// 7. Scale the workers 3 → 6 → 3 with load flowing.
	for _, n := range []int{6, 3} {
		t.Run(fmt.Sprintf("scale-%d", n), func(t *testing.T) {
			published := publishing(t, batch, rate)
			sleep(5 * time.Second)
			_, err := s.Compose(ctx, 5*time.Minute, "up", "--detach", "--no-build", "--pull", "never", "--no-recreate",
				"--scale", fmt.Sprintf("worker=%d", n), "--wait", "--wait-timeout", "180", "worker")
			require.NoError(t, err)
			logf("scaled workers to %d", n)
			require.NoError(t, s.WaitServiceHealthy(ctx, "worker", n, 3*time.Minute))
			published()
			check(t, fmt.Sprintf("scale-%d", n))
		})
	}
	logf("done: %d payments audited after 8 phases", ledger.Keys())
}
