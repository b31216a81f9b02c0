package consumer_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

// newSim starts a gateway simulator over real HTTP.
func newSim(t *testing.T, cfg sim.Config) (*sim.Server, *httptest.Server) {
	t.Helper()
	s := sim.New(cfg, zerolog.Nop(), prometheus.NewRegistry())
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func newHTTPGateway(t *testing.T, name, url string, timeout time.Duration) *gateway.HTTP {
	t.Helper()
	gw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: url, Name: name, Timeout: timeout})
	require.NoError(t, err)
	t.Cleanup(gw.Close)
	return gw
}

// refusedURL returns an http URL on which nothing listens: connections to
// it are refused.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

func (s *stack) queryInt(q string, args ...any) int {
	s.t.Helper()
	var n int
	require.NoError(s.t, s.pool.QueryRow(s.t.Context(), q, args...).Scan(&n))
	return n
}

// TestFailoverRefused: gateway A refuses connections, so no request ever
// reaches it; B, a standby, charges every payment once (docs/contract.md §5,
// "Several gateways"). The rows name B, list A then B where a payment failed
// over (before A's breaker opened; after, new payments are claimed for B
// directly), and so do the outcome events.
func TestFailoverRefused(t *testing.T) {
	t.Parallel()
	simB, srvB := newSim(t, sim.Config{Latency: 5 * time.Millisecond, Seed: 2})
	a := newHTTPGateway(t, "a", refusedURL(t), 2*time.Second)
	b := newHTTPGateway(t, "b", srvB.URL, 2*time.Second)
	s := newStack(t, stackOptions{concurrency: 4, routes: []processing.Route{
		{Gateway: a, Weight: 1}, // every payment prefers A
		{Gateway: b, Weight: 0}, // B is the standby
	}})
	s.startWorker("w1")
	const n = 40
	for i := range n {
		s.publishRequest(request(i, int64(1000+2*i)), "")
	}
	s.waitFor("every payment final", 60*time.Second, func() bool { return s.finalRows() == n })

	require.Equal(t, map[payment.Status]int{payment.StatusSucceeded: n}, s.counts())
	st := simB.Stats()
	require.EqualValues(t, n, st.Charges, "B charged each payment once")
	require.Empty(t, st.DoubleCharged)
	for i := range n {
		require.Equal(t, 1, simB.ChargesFor(fmt.Sprintf("pay_%06d", i)))
	}
	require.Zero(t, s.queryInt(`SELECT count(*) FROM payments WHERE gateway IS DISTINCT FROM 'b'`))
	failedOver := s.queryInt(`SELECT count(*) FROM payments WHERE gateways_tried = ARRAY['a', 'b']`)
	require.Positive(t, failedOver, "some payments were claimed for A and failed over")
	require.Equal(t, n-failedOver, s.queryInt(`SELECT count(*) FROM payments WHERE gateways_tried = ARRAY['b']`))
	require.Positive(t, s.queryInt(`SELECT count(*) FROM payment_attempts WHERE gateway = 'a' AND error_code = 'connection_refused'`))
	require.Zero(t, s.queryInt(`SELECT count(*) FROM payment_attempts WHERE gateway = 'a' AND class <> 'trouble'`))
	// A row is final before its outcome event is out: wait for the events.
	s.waitFor("every outcome announced", 30*time.Second, func() bool { return len(s.outcomes()) >= n })
	outs := s.outcomes()
	require.Len(t, outs, n)
	for _, o := range outs {
		require.Equal(t, "b", o.Gateway, "the outcome names the gateway that charged")
	}
	t.Logf("%d of %d payments failed over from A to B; B charged %d, double charges %d", failedOver, n, st.Charges, len(st.DoubleCharged))
}

// TestFailoverNeverAfterAmbiguous: gateway A charges and then never
// answers (the client times out), so each attempt is ambiguous. The
// payment never goes to B, although B is healthy: on the last delivery a
// lookup on A finds the charge and the payment is recorded succeeded with
// A's charge id.
func TestFailoverNeverAfterAmbiguous(t *testing.T) {
	t.Parallel()
	simA := sim.New(sim.Config{Seed: 3}, zerolog.Nop(), prometheus.NewRegistry())
	srvA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/charges" {
			simA.ServeHTTP(httptest.NewRecorder(), r) // charges (or replays) …
			<-r.Context().Done()                      // … and the answer never comes
			return
		}
		simA.ServeHTTP(w, r) // lookups answer
	}))
	t.Cleanup(srvA.Close)
	simB, srvB := newSim(t, sim.Config{Seed: 4})
	a := newHTTPGateway(t, "a", srvA.URL, 300*time.Millisecond)
	b := newHTTPGateway(t, "b", srvB.URL, 2*time.Second)
	s := newStack(t, stackOptions{concurrency: 4, maxDeliver: 3, failures: 1000, routes: []processing.Route{
		{Gateway: a, Weight: 1},
		{Gateway: b, Weight: 0},
	}})
	s.startWorker("w1")
	const n = 3
	for i := range n {
		s.publishRequest(request(i, int64(2000+2*i)), "")
	}
	s.waitFor("every payment final", 60*time.Second, func() bool { return s.finalRows() == n })

	require.Equal(t, map[payment.Status]int{payment.StatusSucceeded: n}, s.counts())
	require.Zero(t, simB.Stats().Charges, "B is never called after an ambiguous attempt on A")
	require.Zero(t, simB.Stats().Lookups)
	for i := range n {
		key := fmt.Sprintf("pay_%06d", i)
		ks := simA.Lookup(key)
		require.True(t, ks.Charged)
		var gw, charge string
		var tried []string
		require.NoError(t, s.pool.QueryRow(t.Context(),
			`SELECT gateway, gateway_charge_id, gateways_tried FROM payments WHERE idempotency_key = $1`, key).Scan(&gw, &charge, &tried))
		require.Equal(t, "a", gw)
		require.Equal(t, ks.ChargeID, charge, "settled with A's charge id")
		require.Equal(t, []string{"a"}, tried)
		require.Equal(t, 1, simA.ChargesFor(key))
	}
	require.Zero(t, s.queryInt(`SELECT count(*) FROM payment_attempts WHERE gateway = 'b'`))
	require.Equal(t, n, s.queryInt(`SELECT count(*) FROM payment_attempts WHERE gateway = 'a' AND kind = 'lookup' AND result = 'found'`))
	for _, o := range s.outcomes() {
		require.Equal(t, "a", o.Gateway)
	}
}
