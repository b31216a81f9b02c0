package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

// fairLoad is one run of the fairness measurement: merchant "quiet"
// publishes one request every tick, each of `steady` other merchants
// likewise, and merchant "flood" publishes floodBurst requests at once
// every burstEvery ticks.
type fairLoad struct {
	lookahead  int
	ticks      int
	tick       time.Duration
	steady     int
	floodBurst int
	burstEvery int
}

// fairResult is what a run measured: the publish-to-outcome latency of each
// of the quiet merchant's payments.
type fairResult struct {
	quiet []time.Duration
	flood []time.Duration
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// runFairLoad runs one load against a fresh stack (embedded NATS, a fresh
// Postgres schema) with one worker of 8 slots calling a gatewaysim over
// HTTP that answers each charge after 50ms.
func runFairLoad(t testing.TB, l fairLoad) fairResult {
	t.Helper()
	gs := sim.New(sim.Config{Latency: 50 * time.Millisecond, Seed: 7}, zerolog.Nop(), prometheus.NewRegistry())
	srv := httptest.NewServer(gs)
	t.Cleanup(srv.Close)
	gw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: srv.URL, Name: "sim", Timeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(gw.Close)

	s := newStack(t, stackOptions{gw: gw, concurrency: 8, failures: 1000})
	s.ccfg.Lookahead = l.lookahead

	var mu sync.Mutex
	published := map[string]time.Time{}
	var res fairResult
	done := make(chan struct{})
	total := l.ticks*(1+l.steady) + (l.ticks+l.burstEvery-1)/l.burstEvery*l.floodBurst
	sub, err := s.nc.Subscribe("payments.results.>", func(m *nats.Msg) {
		var o payment.Outcome
		if json.Unmarshal(m.Data, &o) != nil {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		at, ok := published[o.PaymentID]
		if !ok {
			return
		}
		delete(published, o.PaymentID)
		if o.PaymentID[0] == 'q' {
			res.quiet = append(res.quiet, now.Sub(at))
		} else {
			res.flood = append(res.flood, now.Sub(at))
		}
		if len(res.quiet)+len(res.flood) == total && total > 0 {
			close(done)
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, s.nc.Flush())

	s.startWorker("fair")
	// Warm up (connections to Postgres and the gateway, the batcher) before
	// measuring.
	mu.Lock()
	for i := range 16 {
		published["w"+fmt.Sprint(i)] = time.Now()
	}
	total += 16
	mu.Unlock()
	for i := range 16 {
		r := request(i, 1000)
		r.PaymentID, r.MerchantID = "w"+fmt.Sprint(i), "warm"
		s.publishRequest(r, "")
	}
	s.waitFor("warm-up", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(res.flood) == 16
	})
	mu.Lock()
	res.flood = nil
	total -= 16
	mu.Unlock()
	publish := func(merchant, id string, i int) {
		r := request(i, int64(1000+i%50*2))
		r.PaymentID, r.MerchantID = id, merchant
		body, err := json.Marshal(r)
		require.NoError(t, err)
		mu.Lock()
		published[id] = time.Now()
		mu.Unlock()
		s.publish("payments.requests."+merchant, body, id)
	}
	// The load's own pacing: a ticker paces the publishing, it does not
	// wait for the system under test.
	ticker := time.NewTicker(l.tick)
	defer ticker.Stop()
	q, f := 0, 0
	for tick := range l.ticks {
		if tick%l.burstEvery == 0 {
			for range l.floodBurst {
				publish("flood", fmt.Sprintf("f%05d", f), f)
				f++
			}
		}
		for m := range l.steady {
			publish(fmt.Sprintf("steady%d", m), fmt.Sprintf("s%d_%05d", m, tick), tick)
		}
		publish("quiet", fmt.Sprintf("q%05d", q), q)
		q++
		<-ticker.C
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d of %d outcomes arrived", len(res.quiet)+len(res.flood), total)
	}
	mu.Lock()
	defer mu.Unlock()
	return res
}

// BenchmarkFairness measures what one merchant's flood does to another's
// latency (docs/fleet.md "Fairness"): the quiet merchant publishes 5
// payments a second throughout. In the fair baseline nine other merchants
// do the same (50 a second, evenly spread); in the flood one other merchant
// publishes 9 times as much (90 % of the same load) in bursts of 45 every
// second. Each run is one worker of 8 slots against a gatewaysim answering
// in 50ms (so at most 160 payments a second, the flood's mean load being
// 50). It reports the quiet merchant's p99 under the flood over its
// baseline p99, with the fair scheduler (quiet_p99_over_baseline_fair; the
// issue's target is ≤ 2) and with pulls only into free slots, first come
// first served (…_fifo). A measurement, not a test: on a machine too busy to
// carry the offered load every queue grows and the ratios say nothing
// (TestFairnessOrder is the test). Each iteration is the whole run of about
// 30 s: make bench runs it with -benchtime=1x.
func BenchmarkFairness(b *testing.B) {
	const ticks, tick = 40, 200 * time.Millisecond // 8s of load per run
	for range b.N {
		baseline := runFairLoad(b, fairLoad{lookahead: 64, ticks: ticks, tick: tick, steady: 9, burstEvery: 1})
		fifo := runFairLoad(b, fairLoad{lookahead: 0, ticks: ticks, tick: tick, floodBurst: 45, burstEvery: 5})
		fair := runFairLoad(b, fairLoad{lookahead: 64, ticks: ticks, tick: tick, floodBurst: 45, burstEvery: 5})
		report := func(name string, r fairResult) time.Duration {
			b.Logf("%-9s quiet n=%d p50=%v p99=%v max=%v | flood n=%d p50=%v p99=%v", name,
				len(r.quiet), pct(r.quiet, .5).Round(time.Millisecond), pct(r.quiet, .99).Round(time.Millisecond),
				pct(r.quiet, 1).Round(time.Millisecond),
				len(r.flood), pct(r.flood, .5).Round(time.Millisecond), pct(r.flood, .99).Round(time.Millisecond))
			return pct(r.quiet, .99)
		}
		base := report("baseline", baseline)
		f0 := report("fifo", fifo)
		f1 := report("fair", fair)
		b.ReportMetric(float64(base)/float64(time.Millisecond), "quiet_p99_baseline_ms")
		b.ReportMetric(float64(f1)/float64(base), "quiet_p99_over_baseline_fair")
		b.ReportMetric(float64(f0)/float64(base), "quiet_p99_over_baseline_fifo")
	}
}

// gateGateway holds every charge until the test releases it, and records
// the merchants in the order their charges started.
type gateGateway struct {
	processing.Gateway
	started chan string   // a merchant id per charge started
	release chan struct{} // one receive lets one charge finish
}

func (g *gateGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	select {
	case g.started <- c.MerchantID:
	case <-ctx.Done(): // a test that failed reads no more: let the worker stop
		return payment.ChargeResult{}, ctx.Err()
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return payment.ChargeResult{}, ctx.Err()
	}
	return g.Gateway.Charge(ctx, c)
}

// TestFairnessOrder is the fair scheduler end to end, without timing: one
// worker of 2 slots whose charges wait for the test. A merchant floods 30
// payments and fills both slots; a quiet merchant's one payment, published
// after them, is fetched into the lookahead and must start as soon as a
// slot frees (it has none in flight, the flood has one), not after the
// flood's 28 — which is what first come first served (lookahead 0) does,
// checked beside it.
func TestFairnessOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		lookahead int
		quietAt   int // the quiet payment's place among the charges started
	}{
		{"fair", 64, 3},
		{"fifo", 0, 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const flood = 30
			gw := &gateGateway{Gateway: gateway.NewFake(gateway.FakeConfig{Seed: 1}),
				started: make(chan string, flood+1), release: make(chan struct{})}
			s := newStack(t, stackOptions{gw: gw, concurrency: 2, failures: 1000})
			s.ccfg.Lookahead = tc.lookahead
			publish := func(merchant, id string, i int) {
				r := request(i, 1000)
				r.PaymentID, r.MerchantID = id, merchant
				body, err := json.Marshal(r)
				require.NoError(t, err)
				s.publish("payments.requests."+merchant, body, id)
			}
			for i := range flood {
				publish("flood", fmt.Sprintf("f%02d", i), i)
			}
			publish("quiet", "q00", 0)
			s.startWorker("fair")
			next := func() string {
				t.Helper()
				select {
				case m := <-gw.started:
					return m
				case <-time.After(30 * time.Second):
					t.Fatal("no charge started")
					return ""
				}
			}
			order := []string{next(), next()}
			require.Equal(t, []string{"flood", "flood"}, order, "the flood came first and fills both slots")
			if tc.lookahead > 0 {
				// Every message is fetched (2 in slots, 29 held) before a
				// slot frees: the consumer has delivered all 31.
				s.waitFor("all fetched", 30*time.Second, func() bool {
					_, ackPending := s.pending()
					return ackPending == flood+1
				})
			}
			for len(order) < flood+1 {
				gw.release <- struct{}{}
				order = append(order, next())
			}
			require.Equal(t, "quiet", order[tc.quietAt-1], "the quiet payment's place: %v", order)
			for range 2 {
				gw.release <- struct{}{}
			}
			s.waitSettled(30 * time.Second)
		})
	}
}
