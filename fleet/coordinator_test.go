package fleet_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/testenv/natstest"
)

// localsMu guards every fakeLocal's fields, so that a test can read all
// the members' shares at one instant (a snapshot under one lock): read one
// at a time, a busy machine may preempt the reader between them, and the
// sum of an old share and a new one can exceed the budget though the
// shares held at any one instant never do.
var localsMu sync.Mutex

// fakeLocal is a guard that always wants more (every wait throttled) and
// whose breaker stays closed.
type fakeLocal struct {
	asked   int64
	share   float64
	breaker string
	changed chan struct{}
}

func newFakeLocal() *fakeLocal { return &fakeLocal{breaker: "closed", changed: make(chan struct{}, 1)} }

func (l *fakeLocal) Stats() fleet.LocalStats {
	localsMu.Lock()
	defer localsMu.Unlock()
	l.asked += 10
	return fleet.LocalStats{Breaker: l.breaker, Asked: l.asked, Throttled: l.asked}
}

func (l *fakeLocal) SetShare(share float64, _ bool) {
	localsMu.Lock()
	defer localsMu.Unlock()
	l.share = share
}

// SetFleet is not looked at: the coordinator test is about shares.
func (l *fakeLocal) SetFleet(bool, time.Time) {}

func (l *fakeLocal) Changed() <-chan struct{} { return l.changed }

// member runs a Coordinator on a fakeLocal until stopped.
type member struct {
	local  *fakeLocal
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// connectJS connects to ns, with opts, for the test's length.
func connectJS(t *testing.T, ns *natstest.Server, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.URL(), opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

func runMember(t *testing.T, ns *natstest.Server, cfg fleet.GatewayConfig) *member {
	t.Helper()
	js := connectJS(t, ns)
	m := &member{local: newFakeLocal()}
	c := fleet.NewCoordinator(js, cfg, m.local, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done.Go(func() { _ = c.Run(ctx) })
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	m.cancel()
	m.done.Wait()
}

// TestCoordinatorsShareTheBudget: three workers that all want more end with
// R/3 each; a fourth joining makes them shrink to R/4 before it grows, and
// the sum of the grants never exceeds R; one leaving frees its share at once.
func TestCoordinatorsShareTheBudget(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	const r = 120.0
	cfg := func(id string) fleet.GatewayConfig {
		// 250 ms: a member is dead one second after its last step (three
		// intervals and one of grace). A coordinator starved longer than
		// that keeps applying a share the others have reclaimed — the
		// limit of any lease (docs/fleet.md) — which a test process
		// beside a CI run and the fleet's other tests did reach at 100 ms.
		return fleet.GatewayConfig{WorkerID: id, Gateway: "gw", Budget: r, Interval: 250 * time.Millisecond}
	}
	ms := map[string]*member{}
	for _, id := range []string{"a", "b", "c"} {
		ms[id] = runMember(t, ns, cfg(id))
	}
	shares := func() (sum float64, each map[string]float64) {
		each = map[string]float64{}
		localsMu.Lock()
		defer localsMu.Unlock()
		for id, m := range ms {
			each[id] = m.local.share
			sum += m.local.share
		}
		return sum, each
	}
	settled := func(n int) func() bool {
		return func() bool {
			sum, each := shares()
			require.LessOrEqual(t, sum, r+1e-6, "never more than R: %v", each)
			for _, s := range each {
				if s < r/float64(n)*0.98 || s > r/float64(n)*1.02 {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, settled(3), 10*time.Second, 5*time.Millisecond)
	ms["d"] = runMember(t, ns, cfg("d"))
	require.Eventually(t, settled(4), 10*time.Second, 5*time.Millisecond)
	ms["a"].stop()
	delete(ms, "a")
	require.Eventually(t, settled(3), 10*time.Second, 5*time.Millisecond)
}

// TestCoordinatorKeepsItsWatch: the watch on the gateway's record (an
// ordered consumer on the bucket's stream) is made once and kept across
// steps. It used to end with the step that made it, so that every step was
// followed by a new watch, a new consumer on the server and, as the ended
// watch's closed channel woke Run, another step: a loop that never rested.
func TestCoordinatorKeepsItsWatch(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	// An hour's interval: only a local change or an update makes a step.
	m := runMember(t, ns, fleet.GatewayConfig{WorkerID: "a", Gateway: "gw", Budget: 100, Interval: time.Hour})
	consumers, _ := bucketConsumers(t, ns)
	var watch []string
	require.Eventually(t, func() bool { watch = consumers(); return len(watch) == 1 }, 10*time.Second, 5*time.Millisecond)
	steps := func() int64 { localsMu.Lock(); defer localsMu.Unlock(); return m.local.asked / 10 }
	for range 3 {
		before := steps()
		m.local.changed <- struct{}{}
		require.Eventually(t, func() bool { return steps() > before }, 10*time.Second, 5*time.Millisecond)
		require.Equal(t, watch, consumers(), "the watch is the one made at the start")
	}
}

// TestCoordinatorWatchesAMadeAgainBucket: when the bucket is deleted under
// a running coordinator, its steps fail, the next one makes the bucket
// again, and the watch is made anew on it (an ordered consumer on the
// deleted stream would stay open but never see an update).
func TestCoordinatorWatchesAMadeAgainBucket(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	m := runMember(t, ns, fleet.GatewayConfig{WorkerID: "a", Gateway: "gw", Budget: 100, Interval: time.Hour})
	names, js := bucketConsumers(t, ns)
	consumers := func() int { return len(names()) }
	ctx := context.Background()
	require.Eventually(t, func() bool { return consumers() == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, js.DeleteKeyValue(ctx, contract.GatewaysBucket))
	// Each local change makes a step: the first fails (no bucket), a later
	// one makes the bucket and the watch again.
	require.Eventually(t, func() bool {
		select {
		case m.local.changed <- struct{}{}:
		default:
		}
		return consumers() == 1
	}, 10*time.Second, 20*time.Millisecond, "a watch on the bucket made again")
}

// bucketConsumers returns a function listing the consumers on the gateways
// bucket's stream (none when the stream is missing), and its JetStream
// context.
func bucketConsumers(t *testing.T, ns *natstest.Server) (func() []string, jetstream.JetStream) {
	t.Helper()
	js := connectJS(t, ns)
	return func() []string {
		ctx := context.Background()
		s, err := js.Stream(ctx, "KV_"+contract.GatewaysBucket)
		if err != nil {
			return nil
		}
		var names []string
		for name := range s.ConsumerNames(ctx).Name() {
			names = append(names, name)
		}
		return names
	}, js
}
