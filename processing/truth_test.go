package processing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

// TestProcessLooksUpAmbiguousOutcomes covers docs/contract.md §6.8: failed is
// recorded only when no attempt can have charged, or a lookup says none did.
func TestProcessLooksUpAmbiguousOutcomes(t *testing.T) {
	t.Parallel()
	var (
		down        = trouble()
		charged     = lookupStep{res: payment.LookupResult{Found: true, ChargeID: "ch_found", AmountMinor: 1250, Currency: "EUR", PaymentID: testPayment}}
		noCharge    = lookupStep{}
		unanswered  = lookupStep{err: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503}}
		inFlightGW  = gwErr(payment.ClassRetry, 409, "", 0)
		ambiguousAt = func(attempt int) claimStep {
			return claimStep{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: attempt,
				From: payment.StatusProcessing, Record: payment.Record{Ambiguous: true}}}
		}
	)
	tests := []struct {
		name          string
		msg           processing.Message
		claim         claimStep
		gw            []gwStep
		lookups       []lookupStep
		wantAction    processing.Action
		wantVerdict   string
		wantOutcome   payment.Status // "" when none is announced
		wantDLQ       payment.DeadLetterReason
		wantLookups   int
		wantCharges   int
		wantCompletes []payment.Completion
		wantReleases  []payment.Release
	}{
		{
			name: "trouble on the last delivery, charged after all: succeeded with the gateway's charge id",
			msg:  delivery(5), gw: []gwStep{down}, lookups: []lookupStep{charged},
			wantAction: processing.ActionAck, wantVerdict: "succeeded", wantOutcome: payment.StatusSucceeded,
			wantLookups: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusSucceeded, "ch_found", ""))},
		},
		{
			name: "trouble on the last delivery, no charge: failed, dead-lettered exhausted",
			msg:  delivery(5), gw: []gwStep{down}, lookups: []lookupStep{noCharge},
			wantAction: processing.ActionTerm, wantVerdict: "exhausted", wantOutcome: payment.StatusFailed,
			wantDLQ: payment.ReasonExhausted, wantLookups: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted))},
		},
		{
			name: "trouble on the last delivery, lookup unanswered: unknown, dead-lettered exhausted, not announced",
			msg:  delivery(5), gw: []gwStep{down}, lookups: []lookupStep{unanswered},
			wantAction: processing.ActionTerm, wantVerdict: "exhausted",
			wantDLQ: payment.ReasonExhausted, wantLookups: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusUnknown, "", ""))},
		},
		{
			name: "409 on the last delivery of a key never ambiguous: failed without a lookup",
			msg:  delivery(5), gw: []gwStep{inFlightGW},
			wantAction: processing.ActionTerm, wantVerdict: "exhausted", wantOutcome: payment.StatusFailed,
			wantDLQ: payment.ReasonExhausted, wantCharges: 1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted)},
		},
		{
			name: "409 on the last delivery of an ambiguous row: looked up",
			msg:  delivery(5), claim: ambiguousAt(3), gw: []gwStep{inFlightGW}, lookups: []lookupStep{charged},
			wantAction: processing.ActionAck, wantVerdict: "succeeded", wantOutcome: payment.StatusSucceeded,
			wantLookups: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{lookedUp(completion(3, payment.StatusSucceeded, "ch_found", ""))},
		},
		{
			name: "rejected after an ambiguous attempt: looked up before failed",
			msg:  delivery(2), claim: ambiguousAt(2), gw: []gwStep{gwErr(payment.ClassRejected, 400, "bad", 0)},
			lookups:    []lookupStep{noCharge},
			wantAction: processing.ActionTerm, wantVerdict: "gateway_rejected", wantOutcome: payment.StatusFailed,
			wantDLQ: payment.ReasonGatewayRejected, wantLookups: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{lookedUp(completion(2, payment.StatusFailed, "", "bad"))},
		},
		{
			name: "a replay of a failed ambiguous row that was charged: succeeded, no second charge",
			msg:  delivery(1),
			claim: claimStep{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 6,
				From: payment.StatusFailed, Record: payment.Record{Ambiguous: true}}},
			lookups:    []lookupStep{charged},
			wantAction: processing.ActionAck, wantVerdict: "succeeded", wantOutcome: payment.StatusSucceeded,
			wantLookups: 1,
			wantCompletes: []payment.Completion{{Key: testKey, Attempt: 6, Owner: testOwner, Status: payment.StatusSucceeded,
				Gateway: testGateway, GatewayChargeID: "ch_found", Ambiguous: true}},
		},
		{
			name: "a replay of a failed ambiguous row that was not charged: charged",
			msg:  delivery(1),
			claim: claimStep{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 6,
				From: payment.StatusFailed, Record: payment.Record{Ambiguous: true}}},
			lookups:    []lookupStep{noCharge},
			wantAction: processing.ActionAck, wantVerdict: "succeeded", wantOutcome: payment.StatusSucceeded,
			wantLookups: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{completion(6, payment.StatusSucceeded, "ch_1", "")},
		},
		{
			name: "a replay whose lookup is unanswered: retried, nothing charged",
			msg:  delivery(1),
			claim: claimStep{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 6,
				From: payment.StatusFailed, Record: payment.Record{Ambiguous: true}}},
			lookups:    []lookupStep{unanswered},
			wantAction: processing.ActionRetry, wantVerdict: "retry", wantLookups: 1,
			wantReleases: []payment.Release{ambiguousRelease(6)},
		},
		{
			name: "a replay of a failed row that never was ambiguous: charged without a lookup",
			msg:  delivery(1),
			claim: claimStep{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 6,
				From: payment.StatusFailed}},
			wantAction: processing.ActionAck, wantVerdict: "succeeded", wantOutcome: payment.StatusSucceeded,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(6, payment.StatusSucceeded, "ch_1", "")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			claims := &fakeClaims{}
			if tt.claim.res.Kind != 0 {
				claims.claims = []claimStep{tt.claim}
			}
			gw := newFakeGateway(tt.gw...)
			gw.lookups = tt.lookups
			b := setup(t, testConfig(), claims, gw)

			got := b.proc.Process(t.Context(), tt.msg)
			require.Equal(t, tt.wantAction, got.Action, "%v", got.Err)
			require.Equal(t, tt.wantVerdict, got.Verdict.String())
			if tt.wantOutcome == "" {
				require.Nil(t, got.Outcome)
			} else {
				require.NotNil(t, got.Outcome)
				require.Equal(t, tt.wantOutcome, got.Outcome.Status)
			}
			if tt.wantDLQ == "" {
				require.Nil(t, got.DeadLetter)
			} else {
				require.NotNil(t, got.DeadLetter)
				require.Equal(t, tt.wantDLQ, got.DeadLetter.Reason)
			}
			require.Len(t, gw.lookupCalls(), tt.wantLookups, "lookups")
			require.Len(t, gw.calls(), tt.wantCharges, "charges")
			_, completes, releases := claims.calls()
			require.Equal(t, tt.wantCompletes, completes)
			for i := range releases {
				releases[i].Hold = 0
			}
			require.Equal(t, tt.wantReleases, releases)
		})
	}
}

// TestProcessChargesTheStoredRequest: every attempt for a key sends the body
// stored by its first claim, never a later duplicate's (docs/contract.md §5).
func TestProcessChargesTheStoredRequest(t *testing.T) {
	t.Parallel()
	first := []byte(`{"payment_id":"` + testPayment + `","idempotency_key":"` + testKey +
		`","merchant_id":"m_1","customer_id":"c_1","amount_minor":1250,"currency":"EUR",` +
		`"payment_method":"pm_card_visa","description":"the first description"}`)
	claims := &fakeClaims{claims: []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 2,
		From: payment.StatusProcessing, Request: first}}}}
	b := setup(t, testConfig(), claims, nil)

	got := b.proc.Process(t.Context(), delivery(1)) // description "order 7"
	require.Equal(t, processing.ActionAck, got.Action, "%v", got.Err)
	charges := b.gw.calls()
	require.Len(t, charges, 1)
	require.Equal(t, "the first description", charges[0].Description)
}

// TestProcessSettlesAStoredRequestThatNoLongerValidates covers §6.9 on the
// message path: a take-over whose stored request a lowered limit now
// refuses ends failed/invalid, dead-lettered once, without a gateway call.
func TestProcessSettlesAStoredRequestThatNoLongerValidates(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Limits = payment.Limits{MaxAmountMinor: 1000} // the stored request asks 1250
	small := []byte(`{"payment_id":"` + testPayment + `","idempotency_key":"` + testKey +
		`","merchant_id":"m_1","amount_minor":999,"currency":"EUR","payment_method":"pm_card_visa"}`)
	claims := &fakeClaims{claims: []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 2,
		From: payment.StatusProcessing, Request: requestBody()}}}}
	b := setup(t, cfg, claims, nil)

	got := b.proc.Process(t.Context(), processing.Message{Subject: testSubject, Data: small, StreamSeq: 9, NumDelivered: 1})
	require.Equal(t, processing.ActionTerm, got.Action)
	require.Equal(t, payment.ReasonInvalid, got.DeadLetter.Reason)
	require.Equal(t, payment.StatusFailed, got.Outcome.Status)
	require.Equal(t, payment.ErrorCodeInvalid, got.Outcome.ErrorCode)
	require.Empty(t, b.gw.calls())
	require.Empty(t, b.gw.lookupCalls(), "no attempt could have charged")

	// When one could have, the gateway is asked first.
	claims = &fakeClaims{claims: []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 2,
		From: payment.StatusProcessing, Request: requestBody(), Record: payment.Record{Ambiguous: true}}}}}
	gw := newFakeGateway()
	gw.lookups = []lookupStep{{res: payment.LookupResult{Found: true, ChargeID: "ch_7"}}}
	b = setup(t, cfg, claims, gw)
	got = b.proc.Process(t.Context(), processing.Message{Subject: testSubject, Data: small, StreamSeq: 9, NumDelivered: 1})
	require.Equal(t, processing.ActionAck, got.Action)
	require.Equal(t, payment.StatusSucceeded, got.Outcome.Status)
	require.Equal(t, "ch_7", got.Outcome.GatewayChargeID)
	require.Empty(t, gw.calls())
}

// TestProcessHoldsTheLeaseUntilTheRetry: a release keeps the row leased
// until the retry is due, never less than a Retry-After.
func TestProcessHoldsTheLeaseUntilTheRetry(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(gwErr(payment.ClassRetry, 429, "rate_limited", 20*time.Second))
	b := setup(t, testConfig(), nil, gw)
	got := b.proc.Process(t.Context(), delivery(1))
	require.Equal(t, processing.ActionRetry, got.Action)
	require.GreaterOrEqual(t, got.Delay, 20*time.Second)
	_, _, releases := b.claims.calls()
	require.Len(t, releases, 1)
	require.GreaterOrEqual(t, releases[0].Hold, 20*time.Second, "the lease ends before the Retry-After")
	require.LessOrEqual(t, releases[0].Hold, got.Delay, "the redelivery would find its own lease held")
	require.False(t, releases[0].Ambiguous, "a 429 charged nothing")
}

// extendingClaims is fakeClaims with ExtendLease, reporting each extension.
type extendingClaims struct {
	*fakeClaims
	extended chan int
	fenceAt  int // the extension that reports ErrFenced; 0 = none
	n        int
}

func (c *extendingClaims) ExtendLease(_ context.Context, key string, attempt int, owner string, lease time.Duration) error {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	if key != testKey || owner != testOwner || attempt != 1 || lease <= 0 {
		return fmt.Errorf("unexpected extension %s/%d/%s/%s", key, attempt, owner, lease)
	}
	c.extended <- n
	if n == c.fenceAt {
		return payment.ErrFenced
	}
	return nil
}

// gatedGateway charges once release is closed.
type gatedGateway struct {
	*fakeGateway
	release chan struct{}
}

func (g *gatedGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	select {
	case <-g.release:
	case <-ctx.Done():
		return payment.ChargeResult{}, ctx.Err()
	}
	return g.fakeGateway.Charge(ctx, c)
}

// TestProcessExtendsTheLeaseDuringTheCall: while a gateway call runs, the
// lease in the store is extended every third of the lease (docs/contract.md
// §11.7), and extending stops with the call.
func TestProcessExtendsTheLeaseDuringTheCall(t *testing.T) {
	t.Parallel()
	for _, fenceAt := range []int{0, 2} {
		t.Run(fmt.Sprintf("fenced at %d", fenceAt), func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.Lease = 30 * time.Millisecond
			claims := &extendingClaims{fakeClaims: &fakeClaims{}, extended: make(chan int, 16), fenceAt: fenceAt}
			gw := &gatedGateway{fakeGateway: newFakeGateway(), release: make(chan struct{})}
			b := setup(t, cfg, nil, nil)
			b.proc = processing.New(cfg, claims, gw, zerolog.Nop(), b.m)

			done := make(chan processing.Decision, 1)
			go func() { done <- b.proc.Process(t.Context(), delivery(1)) }()
			require.Equal(t, 1, receive(t, claims.extended))
			require.Equal(t, 2, receive(t, claims.extended))
			if fenceAt == 0 {
				require.Equal(t, 3, receive(t, claims.extended), "extending goes on while the call runs")
			}
			close(gw.release)
			got := receive(t, done)
			require.Equal(t, processing.ActionAck, got.Action, "%v", got.Err)
			if fenceAt != 0 {
				claims.mu.Lock()
				defer claims.mu.Unlock()
				require.Equal(t, fenceAt, claims.n, "no extension after the lease was lost")
			}
		})
	}
}

// TestProcessNotReadyWhileTheGatewayRefusesOurCredentials: a 401 or 403 is
// our configuration's fault, not the payment's (docs/contract.md §5): the
// payment is retried, and the worker says it is not ready until the gateway
// takes its calls again.
func TestProcessNotReadyWhileTheGatewayRefusesOurCredentials(t *testing.T) {
	t.Parallel()
	gw := newFakeGateway(gwErr(payment.ClassUnauthorized, 401, "invalid_api_key", 0), succeeded("ch_1"))
	b := setup(t, testConfig(), nil, gw)
	require.NoError(t, b.proc.Ready())

	got := b.proc.Process(t.Context(), delivery(1))
	require.Equal(t, processing.ActionRetry, got.Action)
	require.Nil(t, got.DeadLetter, "nothing dead-lettered for our own credentials")
	require.ErrorContains(t, b.proc.Ready(), "credentials")
	_, _, releases := b.claims.calls()
	require.Len(t, releases, 1)
	require.False(t, releases[0].Ambiguous, "a refused call charged nothing")

	got = b.proc.Process(t.Context(), delivery(2))
	require.Equal(t, processing.ActionAck, got.Action)
	require.NoError(t, b.proc.Ready(), "ready again once a call gets through")
}

// TestProcessLastDeliveryWhileTheGatewayRefusesOurCredentials: a credentials
// outage longer than a payment's deliveries does not end it failed and
// dead-lettered exhausted: its lease is given back for the sweeper to
// re-publish, and the payment is charged once the credentials work again.
func TestProcessLastDeliveryWhileTheGatewayRefusesOurCredentials(t *testing.T) {
	t.Parallel()
	refused := gwErr(payment.ClassUnauthorized, 403, "key_revoked", 0)
	gw := newFakeGateway(refused, refused, succeeded("ch_1"))
	cfg := testConfig()
	b := setup(t, cfg, nil, gw)

	got := b.proc.Process(t.Context(), delivery(1))
	require.Equal(t, processing.ActionRetry, got.Action)
	require.ErrorContains(t, b.proc.Ready(), "credentials")

	last := delivery(uint64(cfg.MaxDeliver))
	got = b.proc.Process(t.Context(), last)
	require.NotEqual(t, processing.ActionTerm, got.Action, "%v", got.Err)
	require.Nil(t, got.DeadLetter, "nothing dead-lettered for our own credentials, even on the last delivery")
	_, completes, releases := b.claims.calls()
	require.Empty(t, completes, "no row recorded failed")
	require.Len(t, releases, 2, "the lease is given back for the sweeper")
	require.Positive(t, releases[1].Hold)

	// The sweeper's copy, once the key is fixed: charged.
	got = b.proc.Process(t.Context(), delivery(1))
	require.Equal(t, processing.ActionAck, got.Action, "%v", got.Err)
	require.NoError(t, b.proc.Ready())
}

// receive takes one value from c, failing the test (not hanging it) when
// none comes within 10 s.
func receive[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received within 10s")
		panic("unreachable")
	}
}
