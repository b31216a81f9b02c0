package processing_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// Fixed values of the test requests and fakes.
const (
	testOwner   = "worker-test"
	testGateway = "fakegw"
	testSubject = "payments.requests.m_1"
	testKey     = "key_1"
	testPayment = "pay_1"
)

// completedAt is the completion time the fake store stamps on final rows.
var completedAt = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// requestBody returns a valid request v1 body for testPayment under testKey.
func requestBody() []byte {
	return []byte(`{"payment_id":"` + testPayment + `","idempotency_key":"` + testKey +
		`","merchant_id":"m_1","customer_id":"c_1","amount_minor":1250,"currency":"EUR",` +
		`"payment_method":"pm_card_visa","description":"order 7"}`)
}

// delivery returns the n-th delivery of the valid test request.
func delivery(n uint64) processing.Message {
	return processing.Message{Subject: testSubject, Data: requestBody(), StreamSeq: 42, NumDelivered: n}
}

// claimStep is one scripted answer of fakeClaims.Claim.
type claimStep struct {
	res   payment.ClaimResult
	err   error
	panic any    // when set, Claim panics with it
	hook  func() // when set, called before answering
}

// fakeClaims is a scriptable processing.Claims. Claim answers from claims,
// one step per call, repeating the last; Complete answers from completeErrs
// the same way (nil: success, building the row from the completion and the
// last claim); Release returns releaseErr. Every call is recorded.
type fakeClaims struct {
	mu            sync.Mutex
	claims        []claimStep
	completeErrs  []error
	completePanic any
	releaseErr    error

	claimCalls    []payment.Claim
	completeCalls []payment.Completion
	releaseCalls  []payment.Release
}

func step[T any](steps []T, n int) (T, bool) {
	var zero T
	if len(steps) == 0 {
		return zero, false
	}
	return steps[min(n, len(steps)-1)], true
}

func (f *fakeClaims) Claim(_ context.Context, c payment.Claim) (payment.ClaimResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.claimCalls)
	f.claimCalls = append(f.claimCalls, c)
	s, ok := step(f.claims, n)
	if !ok {
		return payment.ClaimResult{Kind: payment.ClaimNew, Attempt: 1}, nil
	}
	if s.hook != nil {
		s.hook()
	}
	if s.panic != nil {
		panic(s.panic)
	}
	return s.res, s.err
}

func (f *fakeClaims) Complete(_ context.Context, c payment.Completion) (payment.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.completeCalls)
	f.completeCalls = append(f.completeCalls, c)
	if f.completePanic != nil {
		panic(f.completePanic)
	}
	if err, _ := step(f.completeErrs, n); err != nil {
		return payment.Record{}, err
	}
	var claim payment.Claim
	if len(f.claimCalls) > 0 {
		claim = f.claimCalls[len(f.claimCalls)-1]
	}
	return payment.Record{
		IdempotencyKey:  c.Key,
		PaymentID:       claim.PaymentID,
		MerchantID:      claim.MerchantID,
		AmountMinor:     claim.AmountMinor,
		Currency:        claim.Currency,
		Status:          c.Status,
		Attempts:        c.Attempt,
		Gateway:         c.Gateway,
		GatewayChargeID: c.GatewayChargeID,
		ErrorCode:       c.ErrorCode,
		CompletedAt:     completedAt,
	}, nil
}

func (f *fakeClaims) Release(_ context.Context, r payment.Release) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseCalls = append(f.releaseCalls, r)
	return f.releaseErr
}

// calls returns the calls made, without the gateway calls that completions
// and releases carry (see gatewayCalls).
func (f *fakeClaims) calls() (claims []payment.Claim, completes []payment.Completion, releases []payment.Release) {
	f.mu.Lock()
	defer f.mu.Unlock()
	claims = append([]payment.Claim(nil), f.claimCalls...)
	for _, c := range f.completeCalls {
		c.Attempts = nil
		completes = append(completes, c)
	}
	for _, r := range f.releaseCalls {
		r.Attempts = nil
		releases = append(releases, r)
	}
	return claims, completes, releases
}

// gatewayCalls returns the gateway calls recorded with each completion and
// release, in call order, with start times and durations zeroed.
func (f *fakeClaims) gatewayCalls() (completes, releases [][]payment.Attempt) {
	f.mu.Lock()
	defer f.mu.Unlock()
	strip := func(as []payment.Attempt) []payment.Attempt {
		out := make([]payment.Attempt, 0, len(as))
		for _, a := range as {
			a.StartedAt, a.Duration = time.Time{}, 0
			out = append(out, a)
		}
		return out
	}
	for _, c := range f.completeCalls {
		completes = append(completes, strip(c.Attempts))
	}
	for _, r := range f.releaseCalls {
		releases = append(releases, strip(r.Attempts))
	}
	return completes, releases
}

// gwStep is one scripted answer of fakeGateway.Charge.
type gwStep struct {
	res   payment.ChargeResult
	err   error
	panic any  // when set, Charge panics with it
	block bool // when set, Charge waits for its ctx to end
}

// fakeGateway is a scriptable processing.Gateway: one step per call,
// repeating the last (a success when none is scripted). started receives one
// value per call that blocks, once it is blocking.
type fakeGateway struct {
	mu      sync.Mutex
	steps   []gwStep
	charges []payment.Charge
	started chan struct{}
	// lookups scripts Lookup, one step per call, repeating the last (not
	// found when none is scripted); lookedUp records the keys asked.
	lookups  []lookupStep
	lookedUp []string
}

type lookupStep struct {
	res payment.LookupResult
	err error
}

func (g *fakeGateway) Lookup(_ context.Context, key string) (payment.LookupResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.lookedUp)
	g.lookedUp = append(g.lookedUp, key)
	s, ok := step(g.lookups, n)
	if !ok {
		return payment.LookupResult{}, nil
	}
	return s.res, s.err
}

func (g *fakeGateway) lookupCalls() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.lookedUp...)
}

func newFakeGateway(steps ...gwStep) *fakeGateway {
	return &fakeGateway{steps: steps, started: make(chan struct{}, 16)}
}

func (g *fakeGateway) Name() string { return testGateway }

func (g *fakeGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.mu.Lock()
	n := len(g.charges)
	g.charges = append(g.charges, c)
	s, ok := step(g.steps, n)
	g.mu.Unlock()
	if !ok {
		return payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: fmt.Sprintf("ch_%d", n+1)}, nil
	}
	if s.panic != nil {
		panic(s.panic)
	}
	if s.block {
		g.started <- struct{}{}
		<-ctx.Done()
		return payment.ChargeResult{}, fmt.Errorf("charge %s: %w", c.IdempotencyKey, ctx.Err())
	}
	return s.res, s.err
}

func (g *fakeGateway) calls() []payment.Charge {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]payment.Charge(nil), g.charges...)
}

// Scripted gateway answers.
func succeeded(chargeID string) gwStep {
	return gwStep{res: payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: chargeID}}
}

func declined(code string) gwStep {
	return gwStep{res: payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: code}}
}

func gwErr(class payment.FailureClass, status int, code string, retryAfter time.Duration) gwStep {
	return gwStep{err: &payment.GatewayError{Class: class, StatusCode: status, Code: code, Message: "scripted", RetryAfter: retryAfter}}
}

func trouble() gwStep { return gwErr(payment.ClassTrouble, 503, "", 0) }

// testConfig is the processor configuration of the tests: MaxDeliver 5,
// backoff 100ms doubling up to 10s, no rate limit (burst 1), a breaker that
// opens after 100 failures for 30s.
func testConfig() processing.Config {
	return processing.Config{
		Owner:              testOwner,
		Lease:              time.Minute,
		MaxDeliver:         5,
		RetryBackoff:       100 * time.Millisecond,
		RetryBackoffMax:    10 * time.Second,
		RateBurst:          1,
		BreakerFailures:    100,
		BreakerOpenTimeout: 30 * time.Second,
	}
}

type bundle struct {
	proc   *processing.Processor
	claims *fakeClaims
	gw     *fakeGateway
	m      *telemetry.Metrics
}

func setup(t *testing.T, cfg processing.Config, claims *fakeClaims, gw *fakeGateway) *bundle {
	t.Helper()
	if claims == nil {
		claims = &fakeClaims{}
	}
	if gw == nil {
		gw = newFakeGateway()
	}
	m := telemetry.New(prometheus.NewRegistry())
	return &bundle{proc: processing.New(cfg, claims, gw, zerolog.Nop(), m), claims: claims, gw: gw, m: m}
}

// requireDelay checks that d lies in [lo, hi].
func requireDelay(t *testing.T, d, lo, hi time.Duration) {
	t.Helper()
	require.GreaterOrEqual(t, d, lo, "delay")
	require.LessOrEqual(t, d, hi, "delay")
}

// counterValue reads a Prometheus counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
