package risk_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/risk"
	"github.com/paystream/paystream/risk/riskhttp"
)

// simulator starts a gateway simulator with cfg over real HTTP and returns
// it and a risk checker for it; both stop when the test ends.
func simulator(t *testing.T, cfg sim.Config) (*sim.Server, *riskhttp.HTTP) {
	t.Helper()
	s := sim.New(cfg, zerolog.Nop(), nil)
	srv := httptest.NewServer(s)
	c, err := riskhttp.New(srv.URL, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return s, c
}

func query(amount int64) risk.Query {
	return risk.Query{PaymentID: "pay_1", MerchantID: "m_1", AmountMinor: amount, Currency: "EUR"}
}

// arrivals wraps a simulator's handler and signals each risk check that
// reaches it, so that a test can order calls without sleeping.
type arrivals struct {
	next http.Handler
	seen chan struct{}
}

func (a arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.seen <- struct{}{}
	a.next.ServeHTTP(w, r)
}

// after is a checker that calls its Checker only once a signal came: the
// fast provider answers after the slow one has surely received its call.
type after struct {
	risk.Checker
	signal <-chan struct{}
}

func (a after) Check(ctx context.Context, q risk.Query) (risk.Decision, error) {
	select {
	case <-a.signal:
	case <-ctx.Done():
		return risk.Decision{}, ctx.Err()
	}
	return a.Checker.Check(ctx, q)
}

func TestFastAnswerWinsAndTheSlowCallIsCancelled(t *testing.T) {
	t.Parallel()
	_, fast := simulator(t, sim.Config{})
	slowSim := sim.New(sim.Config{RiskLatency: time.Hour}, zerolog.Nop(), nil)
	seen := make(chan struct{}, 2)
	srv := httptest.NewServer(arrivals{slowSim, seen})
	slow, err := riskhttp.New(srv.URL, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		slow.Close()
		srv.Close()
	})
	f, err := risk.NewFanOut(time.Minute, slow, after{fast, seen})
	require.NoError(t, err)

	d, err := f.Check(t.Context(), query(1000))
	require.NoError(t, err)
	assert.Equal(t, risk.Allow, d.Verdict)
	assert.Equal(t, fast.Name(), d.Provider)

	d, err = f.Check(t.Context(), query(1066))
	require.NoError(t, err)
	assert.Equal(t, risk.Deny, d.Verdict)
	assert.Equal(t, "amount_rule", d.Reason)

	// Both slow calls reached the simulator and were cancelled: it saw its
	// clients go.
	require.Eventually(t, func() bool { return slowSim.Stats().RiskCanceled == 2 }, 10*time.Second, 5*time.Millisecond)
	assert.EqualValues(t, 2, slowSim.Stats().RiskChecks)
}

func TestAnErroringProviderDoesNotDecide(t *testing.T) {
	t.Parallel()
	_, failing := simulator(t, sim.Config{RiskErrorRate: 1})
	okSim, ok := simulator(t, sim.Config{RiskLatency: 20 * time.Millisecond})
	f, err := risk.NewFanOut(time.Minute, failing, ok)
	require.NoError(t, err)
	d, err := f.Check(t.Context(), query(2066))
	require.NoError(t, err)
	assert.Equal(t, risk.Deny, d.Verdict)
	assert.Equal(t, ok.Name(), d.Provider)
	assert.EqualValues(t, 1, okSim.Stats().RiskDenied)
}

func TestNoAnswer(t *testing.T) {
	t.Parallel()
	_, a := simulator(t, sim.Config{RiskErrorRate: 1})
	_, b := simulator(t, sim.Config{RiskErrorRate: 1})
	f, err := risk.NewFanOut(time.Minute, a, b)
	require.NoError(t, err)
	_, err = f.Check(t.Context(), query(1000))
	require.ErrorIs(t, err, risk.ErrNoAnswer)
	assert.Contains(t, err.Error(), "answered 503")

	// Every provider slower than the timeout.
	slowSim, slow := simulator(t, sim.Config{RiskLatency: time.Hour})
	f, err = risk.NewFanOut(50*time.Millisecond, slow)
	require.NoError(t, err)
	_, err = f.Check(t.Context(), query(1000))
	require.ErrorIs(t, err, risk.ErrNoAnswer)
	assert.Contains(t, err.Error(), "within 50ms")
	require.Eventually(t, func() bool { return slowSim.Stats().RiskCanceled == 1 }, 10*time.Second, 5*time.Millisecond)
}

// blocking is a checker that answers only when its context ends, and
// counts the calls it saw cancelled; a fake beside the real HTTP above.
type blocking struct{ cancelled atomic.Int64 }

func (b *blocking) Name() string { return "blocking" }
func (b *blocking) Check(ctx context.Context, _ risk.Query) (risk.Decision, error) {
	<-ctx.Done()
	b.cancelled.Add(1)
	return risk.Decision{}, ctx.Err()
}

type fixed struct{ d risk.Decision }

func (f fixed) Name() string                                             { return "fixed" }
func (f fixed) Check(context.Context, risk.Query) (risk.Decision, error) { return f.d, nil }

// TestCheckWaitsForItsGoroutines: when Check returns, every loser has been
// cancelled and has returned (goleak checks the rest at exit).
func TestCheckWaitsForItsGoroutines(t *testing.T) {
	t.Parallel()
	b := &blocking{}
	f, err := risk.NewFanOut(time.Hour, b, b, fixed{risk.Decision{Verdict: risk.Allow}})
	require.NoError(t, err)
	d, err := f.Check(t.Context(), query(1))
	require.NoError(t, err)
	assert.Equal(t, risk.Allow, d.Verdict)
	assert.Equal(t, "fixed", d.Provider)
	assert.EqualValues(t, 2, b.cancelled.Load(), "Check returned before its losers did")

	// An unknown verdict is an error, not an answer.
	f, err = risk.NewFanOut(time.Hour, fixed{risk.Decision{Verdict: "maybe"}})
	require.NoError(t, err)
	_, err = f.Check(t.Context(), query(1))
	require.ErrorIs(t, err, risk.ErrNoAnswer)

	// The caller's context ends the fan-out too.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f, err = risk.NewFanOut(time.Hour, b)
	require.NoError(t, err)
	_, err = f.Check(ctx, query(1))
	require.ErrorIs(t, err, risk.ErrNoAnswer)
	require.ErrorIs(t, err, context.Canceled)
}

func TestNewFanOutRefuses(t *testing.T) {
	t.Parallel()
	_, err := risk.NewFanOut(time.Second)
	require.Error(t, err)
	_, err = risk.NewFanOut(0, fixed{})
	require.Error(t, err)
	_, err = risk.NewFanOut(time.Second, nil)
	require.Error(t, err)
	for _, u := range []string{"ftp://x", "http://", "http://u:p@x", "http://x/?a=1", "::"} {
		_, err := riskhttp.New(u, nil)
		require.Error(t, err, u)
	}
}

// TestChargingGatewaysAreNoCheckers is the compile-level guarantee that a
// charge cannot be fanned out: FanOut takes only risk.Checker, and no
// charging gateway — the gateway port itself, the HTTP client, the fake —
// is one. (A line such as `risk.NewFanOut(t, gw)` with a gateway.HTTP does
// not compile; this test keeps it so should someone add a Check method to
// a gateway.)
func TestChargingGatewaysAreNoCheckers(t *testing.T) {
	t.Parallel()
	checker := reflect.TypeFor[risk.Checker]()
	for _, typ := range []reflect.Type{
		reflect.TypeFor[processing.Gateway](),
		reflect.TypeFor[*gateway.HTTP](),
		reflect.TypeFor[*gateway.Fake](),
	} {
		assert.False(t, typ.Implements(checker), "%s must not be a risk.Checker", typ)
	}
	// And the other way round: a checker is no gateway.
	assert.False(t, reflect.TypeFor[*riskhttp.HTTP]().Implements(reflect.TypeFor[processing.Gateway]()))
	assert.False(t, reflect.TypeFor[*risk.FanOut]().Implements(reflect.TypeFor[processing.Gateway]()))
}

// TestQueryCannotCharge: a Query has exactly the fields a risk decision
// needs, and none a charge needs that it lacks — no payment method, no
// idempotency key. Adding one fails here, on purpose.
func TestQueryCannotCharge(t *testing.T) {
	t.Parallel()
	var names []string
	for f := range reflect.TypeFor[risk.Query]().Fields() {
		names = append(names, f.Name)
		lower := strings.ToLower(f.Name)
		for _, bad := range []string{"method", "card", "key", "pan", "token"} {
			assert.NotContains(t, lower, bad)
		}
	}
	assert.Equal(t, []string{"PaymentID", "MerchantID", "CustomerID", "AmountMinor", "Currency"}, names)
}
