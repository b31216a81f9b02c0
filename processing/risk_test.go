package processing_test

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/risk"
	"github.com/paystream/paystream/risk/riskhttp"
	"github.com/paystream/paystream/telemetry"
)

// riskStack is a processor on the fake store, charging one gateway
// simulator over real HTTP and asking two more — a fast one and one that
// is slow or failing — for the risk check.
type riskStack struct {
	proc    *processing.Processor
	claims  *fakeClaims
	gwSim   *sim.Server
	charges *sim.Meter // counts the charge requests reaching the simulator
	fast    *sim.Server
	other   *sim.Server
}

func newRiskStack(t *testing.T, fast, other sim.Config, claims *fakeClaims) *riskStack {
	t.Helper()
	s := &riskStack{claims: claims, gwSim: sim.New(sim.Config{SpareLookups: true}, zerolog.Nop(), nil)}
	if s.claims == nil {
		s.claims = &fakeClaims{}
	}
	s.charges = sim.NewMeter(s.gwSim)
	gwSrv := httptest.NewServer(s.charges)
	gw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: gwSrv.URL, Name: testGateway, Timeout: 10 * time.Second})
	require.NoError(t, err)
	var checkers []risk.Checker
	for _, cfg := range []sim.Config{other, fast} {
		rs := sim.New(cfg, zerolog.Nop(), nil)
		srv := httptest.NewServer(rs)
		c, err := riskhttp.New(srv.URL, nil)
		require.NoError(t, err)
		checkers = append(checkers, c)
		t.Cleanup(func() {
			c.Close()
			srv.Close()
		})
		if s.other == nil {
			s.other = rs
		} else {
			s.fast = rs
		}
	}
	t.Cleanup(func() {
		gw.Close()
		gwSrv.Close()
	})
	fan, err := risk.NewFanOut(30*time.Second, checkers...)
	require.NoError(t, err)
	s.proc = processing.New(testConfig(), s.claims, gw, zerolog.Nop(), telemetry.New(prometheus.NewRegistry())).WithRisk(fan)
	return s
}

// riskDelivery is the n-th delivery of a request of amount.
func riskDelivery(n uint64, amount int64) processing.Message {
	body := `{"payment_id":"` + testPayment + `","idempotency_key":"` + testKey +
		`","merchant_id":"m_1","customer_id":"c_1","amount_minor":` + strconv.FormatInt(amount, 10) +
		`,"currency":"EUR","payment_method":"pm_card_visa"}`
	return processing.Message{Subject: testSubject, Data: []byte(body), StreamSeq: 42, NumDelivered: n}
}

func TestRiskAllowChargesAndTheSlowProviderIsCancelled(t *testing.T) {
	t.Parallel()
	s := newRiskStack(t, sim.Config{RiskLatency: 50 * time.Millisecond}, sim.Config{RiskLatency: time.Hour}, nil)
	d := s.proc.Process(t.Context(), riskDelivery(1, 1250))
	require.Equal(t, processing.ActionAck, d.Action, "%v", d.Err)
	require.NotNil(t, d.Outcome)
	assert.Equal(t, payment.StatusSucceeded, d.Outcome.Status)
	assert.EqualValues(t, 1, s.charges.Charges())
	assert.EqualValues(t, 1, s.gwSim.Stats().Charges)
	assert.EqualValues(t, 1, s.fast.Stats().RiskChecks)
	// The slow provider's call, if it arrived, was cancelled.
	require.Eventually(t, func() bool {
		st := s.other.Stats()
		return st.RiskCanceled == st.RiskChecks
	}, 10*time.Second, 5*time.Millisecond)
}

func TestRiskDenyNeverReachesTheChargeEndpoint(t *testing.T) {
	t.Parallel()
	s := newRiskStack(t, sim.Config{}, sim.Config{RiskErrorRate: 1}, nil)
	d := s.proc.Process(t.Context(), riskDelivery(1, 1266))
	require.Equal(t, processing.ActionAck, d.Action, "%v", d.Err)
	assert.Equal(t, payment.VerdictFailed, d.Verdict)
	assert.Nil(t, d.DeadLetter, "a deny is announced, not dead-lettered")
	require.NotNil(t, d.Outcome)
	assert.Equal(t, payment.StatusFailed, d.Outcome.Status)
	assert.Equal(t, payment.ErrorCodeRiskDenied, d.Outcome.ErrorCode)
	_, completes, releases := s.claims.calls()
	require.Len(t, completes, 1)
	assert.False(t, completes[0].Ambiguous)
	assert.Empty(t, releases)
	assert.Zero(t, s.charges.Charges(), "a denied payment reached the charge endpoint")
	assert.Zero(t, s.gwSim.Stats().Lookups, "a new claim needs no lookup")
	assert.EqualValues(t, 1, s.fast.Stats().RiskDenied)

	// A duplicate of the denied payment is announced again, still without
	// a dead letter.
	dup := &fakeClaims{claims: []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimDuplicate, Record: payment.Record{
		IdempotencyKey: testKey, PaymentID: testPayment, Status: payment.StatusFailed, ErrorCode: payment.ErrorCodeRiskDenied}}}}}
	s2 := newRiskStack(t, sim.Config{}, sim.Config{}, dup)
	d = s2.proc.Process(t.Context(), riskDelivery(1, 1266))
	assert.Equal(t, processing.ActionAck, d.Action)
	assert.Nil(t, d.DeadLetter)
	assert.Equal(t, payment.VerdictDuplicate, d.Verdict)
}

// TestRiskDenyOnATakeOverLooksUpFirst: the earlier holder of a taken-over
// lease may have sent a charge before it died, so a deny is recorded only
// after the gateway says it has none.
func TestRiskDenyOnATakeOverLooksUpFirst(t *testing.T) {
	t.Parallel()
	claims := &fakeClaims{claims: []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 2, From: payment.StatusProcessing}}}}
	s := newRiskStack(t, sim.Config{}, sim.Config{}, claims)
	d := s.proc.Process(t.Context(), riskDelivery(2, 1266))
	require.Equal(t, processing.ActionAck, d.Action, "%v", d.Err)
	require.NotNil(t, d.Outcome)
	assert.Equal(t, payment.ErrorCodeRiskDenied, d.Outcome.ErrorCode)
	assert.EqualValues(t, 1, s.gwSim.Stats().Lookups)
	assert.Zero(t, s.charges.Charges())
	_, completes, _ := claims.calls()
	require.Len(t, completes, 1)
	assert.True(t, completes[0].Ambiguous)
}

// TestRiskNoAnswerRetriesThenFailsExhausted: with no provider answering
// the check fails closed — retried, never charged unchecked — and the last
// delivery records failed exhausted (no money moved).
func TestRiskNoAnswerRetriesThenFailsExhausted(t *testing.T) {
	t.Parallel()
	s := newRiskStack(t, sim.Config{RiskErrorRate: 1}, sim.Config{RiskErrorRate: 1}, nil)
	d := s.proc.Process(t.Context(), riskDelivery(1, 1250))
	require.Equal(t, processing.ActionRetry, d.Action)
	require.ErrorIs(t, d.Err, risk.ErrNoAnswer)
	_, completes, releases := s.claims.calls()
	assert.Empty(t, completes)
	require.Len(t, releases, 1)
	assert.False(t, releases[0].Ambiguous)

	d = s.proc.Process(t.Context(), riskDelivery(5, 1250)) // the last delivery (MaxDeliver 5)
	require.Equal(t, processing.ActionTerm, d.Action)
	assert.Equal(t, payment.VerdictExhausted, d.Verdict)
	require.NotNil(t, d.Outcome)
	assert.Equal(t, payment.ErrorCodeExhausted, d.Outcome.ErrorCode)
	assert.Zero(t, s.charges.Charges())
}
