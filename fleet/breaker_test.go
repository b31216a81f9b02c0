package fleet_test

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
)

// faultProxy puts a toxiproxy (the library, in process) between one
// stack and the simulator and returns the URL to give that stack.
func (r *rig) faultProxy(name string) (*toxiproxy.Proxy, string) {
	r.t.Helper()
	u, err := url.Parse(r.http.URL)
	require.NoError(r.t, err)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", u.Host)
	require.NoError(r.t, p.Start())
	r.t.Cleanup(p.Stop)
	return p, "http://" + p.Listen
}

// TestFleetBreaker: a sick worker (its calls reset by a fault proxy) opens
// only its own breaker — one vote of three is no quorum, the others go on
// calling; a real outage (every request answered 503) opens a quorum, the
// gateway is down for the fleet, and while it is down only the probe lease
// holder calls, one call at a time, never two workers at once; when the
// gateway recovers, the holder's probe brings the fleet back.
func TestFleetBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an outage for several seconds")
	}
	r := newRig(t, sim.Config{Latency: 5 * time.Millisecond})
	r.publish(3000, "k")
	proxy, proxyURL := r.faultProxy("w1")
	o := stackOptions{breaker: true, budget: 0, interval: 200 * time.Millisecond, ttl: 2 * time.Second, failures: 3,
		openFor: 500 * time.Millisecond, timeout: 500 * time.Millisecond}
	sick := o
	sick.gatewayURL = proxyURL
	kv := r.connect(r.kvSrv)
	w1, w2, w3 := r.start(1, sick), r.start(2, o), r.start(3, o)
	require.Eventually(t, func() bool {
		rec, ok := r.record(kv)
		return ok && len(rec.Workers) == 3
	}, 10*time.Second, 20*time.Millisecond)

	// The sick worker: its breaker opens, the fleet's does not.
	_, err := proxy.Toxics.AddToxicJson(strings.NewReader(
		`{"name":"reset","type":"reset_peer","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w1.proc.Guard().Stats().Breaker != "closed" }, 10*time.Second, 10*time.Millisecond)
	before := r.callsBy()
	require.Never(t, func() bool {
		rec, ok := r.record(kv)
		if ok && rec.Down {
			t.Logf("down: %+v", rec)
		}
		return ok && rec.Down
	}, 2*time.Second, 50*time.Millisecond, "one sick worker must not stop the fleet")
	after := r.callsBy()
	t.Logf("while w1 was sick (2s): calls by w2 %d, w3 %d; w1's breaker %s", after[2]-before[2], after[3]-before[3], w1.proc.Guard().Stats().Breaker)
	require.Greater(t, after[2], before[2], "w2 goes on calling")
	require.Greater(t, after[3], before[3], "w3 goes on calling")
	require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "reset"))

	// A real outage: a quorum, the fleet's breaker opens, one prober.
	// Fresh work first: the workers may have drained the first batch,
	// and a worker that calls nothing has no breaker to open.
	r.publish(3000, "k2")
	r.outage.Store(true)
	var down time.Time
	require.Eventually(t, func() bool {
		rec, ok := r.record(kv)
		if ok && rec.Down {
			down = rec.DownSince
		}
		return ok && rec.Down
	}, 10*time.Second, 10*time.Millisecond, "a real outage opens the fleet's breaker")
	// Calls already under way when it went down end within the call
	// timeout; from then on only the lease holder calls.
	waitSecond(t, time.Now().Add(o.timeout))
	r.watch(true)
	start := r.callsBy()
	var (
		hmu     sync.Mutex
		holders = map[string]bool{}
	)
	require.Never(t, func() bool {
		rec, ok := r.record(kv)
		if ok && rec.Probe != nil {
			hmu.Lock()
			holders[rec.Probe.Holder] = true
			hmu.Unlock()
		}
		return ok && !rec.Down
	}, 3*time.Second, 20*time.Millisecond, "the gateway stays down while it fails")
	hmu.Lock()
	defer hmu.Unlock()
	overlap := r.watch(false)
	end := r.callsBy()
	probes := (end[1] - start[1]) + (end[2] - start[2]) + (end[3] - start[3])
	t.Logf("fleet down since %s; in 3s: %d calls (w1 %d, w2 %d, w3 %d), probe lease holders %v, calls overlapping another worker's: %d",
		down.Format(time.TimeOnly), probes, end[1]-start[1], end[2]-start[2], end[3]-start[3], holders, overlap)
	require.Zero(t, overlap, "never two workers probing at once")
	require.LessOrEqual(t, probes, 20, "a probe at a time, not the fleet's backlog")
	require.NotEmpty(t, holders)

	// Recovery: the holder's probe succeeds, everyone calls again (with
	// work to call for).
	r.publish(3000, "k3")
	r.outage.Store(false)
	require.Eventually(t, func() bool {
		rec, ok := r.record(kv)
		return ok && !rec.Down
	}, 15*time.Second, 20*time.Millisecond, "the probe brings the fleet back")
	back := r.callsBy()
	require.Eventually(t, func() bool {
		now := r.callsBy()
		return now[1] > back[1] && now[2] > back[2] && now[3] > back[3]
	}, 15*time.Second, 20*time.Millisecond, "every worker calls again")
	_ = w2
	_ = w3
}
