package processing_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

var errDB = errors.New("database unavailable")

// outcome returns the outcome event of the test payment as the fake store
// records it.
func outcome(status payment.Status, chargeID, errorCode string, attempts int) *payment.Outcome {
	return &payment.Outcome{
		PaymentID:       testPayment,
		IdempotencyKey:  testKey,
		Status:          status,
		AmountMinor:     1250,
		Currency:        "EUR",
		Gateway:         testGateway,
		GatewayChargeID: chargeID,
		ErrorCode:       errorCode,
		Attempts:        attempts,
		CompletedAt:     completedAt,
	}
}

// completion returns the Complete call expected for the test payment.
func completion(attempt int, status payment.Status, chargeID, errorCode string) payment.Completion {
	return payment.Completion{Key: testKey, Attempt: attempt, Owner: testOwner, Status: status,
		Gateway: testGateway, GatewayChargeID: chargeID, ErrorCode: errorCode}
}

func release(attempt int) payment.Release {
	return payment.Release{Key: testKey, Attempt: attempt, Owner: testOwner}
}

// ambiguousRelease is the release after an attempt that may have charged.
func ambiguousRelease(attempt int) payment.Release {
	r := release(attempt)
	r.Ambiguous = true
	return r
}

// lookedUp marks a completion as recorded after a lookup of an ambiguous
// attempt.
func lookedUp(c payment.Completion) payment.Completion {
	c.Ambiguous = true
	return c
}

// decision returns a decision about the test payment.
func decision(action processing.Action, label string) processing.Decision {
	return processing.Decision{Action: action, Verdict: verdictNamed(label), PaymentID: testPayment, Key: testKey}
}

// verdictNamed returns the verdict whose metrics label is name.
func verdictNamed(name string) payment.Verdict {
	for _, v := range payment.Verdicts() {
		if v.String() == name {
			return v
		}
	}
	panic("no verdict named " + name)
}

func withOutcome(d processing.Decision, o *payment.Outcome) processing.Decision {
	d.Outcome = o
	return d
}

func withDeadLetter(d processing.Decision, reason payment.DeadLetterReason) processing.Decision {
	d.DeadLetter = &processing.DeadLetter{Reason: reason}
	return d
}

func TestProcess(t *testing.T) {
	t.Parallel()

	var (
		ms = time.Millisecond
		// Backoff bounds of delivery n with base 100ms: [50ms·2^(n-1), 100ms·2^(n-1)].
		backoff1 = [2]time.Duration{50 * ms, 100 * ms}
		backoff2 = [2]time.Duration{100 * ms, 200 * ms}
		backoff3 = [2]time.Duration{200 * ms, 400 * ms}
		backoff5 = [2]time.Duration{800 * ms, 1600 * ms}

		newClaim = claimStep{res: payment.ClaimResult{Kind: payment.ClaimNew, Attempt: 1}}

		stored = payment.Record{
			IdempotencyKey: testKey, PaymentID: testPayment, MerchantID: "m_1", AmountMinor: 1250,
			Currency: "EUR", Status: payment.StatusDeclined, Attempts: 2, Gateway: "othergw",
			GatewayChargeID: "ch_old", ErrorCode: "insufficient_funds",
			CreatedAt: completedAt.Add(-time.Hour), UpdatedAt: completedAt, CompletedAt: completedAt,
		}
		storedOutcome = stored.Outcome()
		failedRow     = payment.Record{
			IdempotencyKey: testKey, PaymentID: testPayment, MerchantID: "m_1", AmountMinor: 1250,
			Currency: "EUR", Status: payment.StatusFailed, Attempts: 5, Gateway: "othergw",
			ErrorCode: payment.ErrorCodeExhausted, CreatedAt: completedAt.Add(-time.Hour),
			UpdatedAt: completedAt, CompletedAt: completedAt,
		}
		failedOutcome = failedRow.Outcome()
		echoErr       = &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 400, Code: "invalid_request",
			Message: "bad pm_card_visa 4242 4242 4242 4242"}

		rejected     = gwErr(payment.ClassRejected, 400, "invalid_request", 0)
		rejectedBare = gwErr(payment.ClassRejected, 422, "", 0)
		tooFast      = gwErr(payment.ClassRetry, 429, "rate_limited", 5*time.Second)
		inFlightGW   = gwErr(payment.ClassRetry, 409, "", 0)
		down         = trouble()
	)

	tests := []struct {
		name         string
		msg          processing.Message
		claims       []claimStep
		gw           []gwStep
		completeErrs []error
		releaseErr   error

		// want is the whole expected decision but for Delay, Err and
		// DeadLetter.Error, which are checked by delay, errIs and dlError.
		want    processing.Decision
		delay   [2]time.Duration
		errIs   []error
		dlError string

		wantClaims    int
		wantCharges   int
		wantCompletes []payment.Completion
		wantReleases  []payment.Release
	}{
		{
			name:    "invalid body is dead-lettered without a claim",
			msg:     processing.Message{Subject: testSubject, Data: []byte(`{"payment_id":"pay_1"}`), StreamSeq: 7, NumDelivered: 1},
			want:    withDeadLetter(processing.Decision{Action: processing.ActionTerm, Verdict: payment.VerdictInvalid}, payment.ReasonInvalid),
			errIs:   []error{payment.ErrInvalid},
			dlError: "invalid payment request",
		},
		{
			name:    "body that is not JSON is dead-lettered without a claim",
			msg:     processing.Message{Subject: testSubject, Data: []byte("not json"), StreamSeq: 7, NumDelivered: 3},
			want:    withDeadLetter(processing.Decision{Action: processing.ActionTerm, Verdict: payment.VerdictInvalid}, payment.ReasonInvalid),
			errIs:   []error{payment.ErrInvalid},
			dlError: "invalid payment request",
		},
		{
			name:          "new key is charged and recorded",
			msg:           delivery(1),
			claims:        []claimStep{newClaim},
			gw:            []gwStep{succeeded("ch_9")},
			want:          withOutcome(decision(processing.ActionAck, "succeeded"), outcome(payment.StatusSucceeded, "ch_9", "", 1)),
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusSucceeded, "ch_9", "")},
		},
		{
			name:          "takeover records under the new fence",
			msg:           delivery(2),
			claims:        []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 3}}},
			gw:            []gwStep{succeeded("ch_3")},
			want:          withOutcome(decision(processing.ActionAck, "succeeded"), outcome(payment.StatusSucceeded, "ch_3", "", 3)),
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(3, payment.StatusSucceeded, "ch_3", "")},
		},
		{
			name:       "duplicate re-announces the stored outcome without a gateway call",
			msg:        delivery(1),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimDuplicate, Record: stored}}},
			want:       withOutcome(decision(processing.ActionAck, "duplicate"), &storedOutcome),
			wantClaims: 1,
		},
		{
			name:   "duplicate of a row this message ended failed dead-letters and announces it again",
			msg:    delivery(5),
			claims: []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimDuplicate, Record: failedRow}}},
			want: withDeadLetter(withOutcome(decision(processing.ActionTerm, "duplicate"), &failedOutcome),
				payment.ReasonExhausted),
			dlError:    "recorded failed",
			errIs:      []error{processing.ErrExhausted},
			wantClaims: 1,
		},
		{
			name:       "a gateway message echoing the payment method or a card number is masked in the dead letter",
			msg:        delivery(1),
			gw:         []gwStep{{err: echoErr}},
			want:       withDeadLetter(withOutcome(decision(processing.ActionTerm, "gateway_rejected"), outcome(payment.StatusFailed, "", "invalid_request", 1)), payment.ReasonGatewayRejected),
			dlError:    "[payment_method] **** **** **** 4242",
			errIs:      []error{echoErr},
			wantClaims: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusFailed, "", "invalid_request")},
		},
		{
			name:       "in flight for another message is acked without an outcome",
			msg:        delivery(1),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimInFlight}}},
			want:       decision(processing.ActionAck, "in_flight"),
			wantClaims: 1,
		},
		{
			name:       "busy is retried no sooner than the lease ends",
			msg:        delivery(1),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimBusy, RetryAfter: 3 * time.Second}}},
			want:       decision(processing.ActionRetry, "busy"),
			delay:      [2]time.Duration{3 * time.Second, 3*time.Second + 100*ms},
			errIs:      []error{processing.ErrLeaseHeld},
			wantClaims: 1,
		},
		{
			name:       "busy with a short wait backs off",
			msg:        delivery(2),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimBusy, RetryAfter: 10 * ms}}},
			want:       decision(processing.ActionRetry, "busy"),
			delay:      backoff2,
			errIs:      []error{processing.ErrLeaseHeld},
			wantClaims: 1,
		},
		{
			name:       "busy on the last delivery is retried, not dead-lettered",
			msg:        delivery(5),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimBusy, RetryAfter: 3 * time.Second}}},
			want:       decision(processing.ActionRetry, "busy"),
			delay:      [2]time.Duration{3 * time.Second, 3*time.Second + 100*ms},
			errIs:      []error{processing.ErrLeaseHeld},
			wantClaims: 1,
		},
		{
			name:       "conflict is dead-lettered without a gateway call",
			msg:        delivery(1),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimConflict, Record: stored}}},
			want:       withDeadLetter(decision(processing.ActionTerm, "conflict"), payment.ReasonConflict),
			errIs:      []error{processing.ErrConflict},
			dlError:    "different request",
			wantClaims: 1,
		},
		{
			name:       "unknown claim result is retried",
			msg:        delivery(1),
			claims:     []claimStep{{res: payment.ClaimResult{Kind: 99}}},
			want:       decision(processing.ActionRetry, "retry"),
			delay:      backoff1,
			wantClaims: 1,
		},
		{
			name:       "claim error is retried with backoff",
			msg:        delivery(3),
			claims:     []claimStep{{err: errDB}},
			want:       decision(processing.ActionRetry, "retry"),
			delay:      backoff3,
			errIs:      []error{errDB},
			wantClaims: 1,
		},
		{
			name:       "claim error on the last delivery dead-letters exhausted without an outcome",
			msg:        delivery(5),
			claims:     []claimStep{{err: errDB}},
			want:       withDeadLetter(decision(processing.ActionTerm, "exhausted"), payment.ReasonExhausted),
			errIs:      []error{processing.ErrExhausted, errDB},
			dlError:    "retries exhausted after 5 deliveries",
			wantClaims: 1,
		},
		{
			name:          "decline is recorded with its decline code",
			msg:           delivery(1),
			gw:            []gwStep{declined("card_declined")},
			want:          withOutcome(decision(processing.ActionAck, "declined"), outcome(payment.StatusDeclined, "", "card_declined", 1)),
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusDeclined, "", "card_declined")},
		},
		{
			name: "rejection records failed with the gateway code and dead-letters",
			msg:  delivery(1),
			gw:   []gwStep{rejected},
			want: withDeadLetter(withOutcome(decision(processing.ActionTerm, "gateway_rejected"),
				outcome(payment.StatusFailed, "", "invalid_request", 1)), payment.ReasonGatewayRejected),
			errIs:         []error{rejected.err},
			dlError:       "invalid_request",
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusFailed, "", "invalid_request")},
		},
		{
			name: "rejection without a code records the HTTP status",
			msg:  delivery(2),
			gw:   []gwStep{rejectedBare},
			want: withDeadLetter(withOutcome(decision(processing.ActionTerm, "gateway_rejected"),
				outcome(payment.StatusFailed, "", "http_422", 1)), payment.ReasonGatewayRejected),
			errIs:         []error{rejectedBare.err},
			dlError:       "status 422",
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusFailed, "", "http_422")},
		},
		{
			name:         "gateway retry releases the lease and waits for Retry-After",
			msg:          delivery(2),
			gw:           []gwStep{tooFast},
			want:         decision(processing.ActionRetry, "retry"),
			delay:        [2]time.Duration{5 * time.Second, 5*time.Second + 100*ms},
			errIs:        []error{tooFast.err},
			wantClaims:   1,
			wantCharges:  1,
			wantReleases: []payment.Release{release(1)},
		},
		{
			name:         "gateway retry without Retry-After backs off",
			msg:          delivery(3),
			gw:           []gwStep{inFlightGW},
			want:         decision(processing.ActionRetry, "retry"),
			delay:        backoff3,
			errIs:        []error{inFlightGW.err},
			wantClaims:   1,
			wantCharges:  1,
			wantReleases: []payment.Release{release(1)},
		},
		{
			name:         "gateway trouble releases the lease and backs off",
			msg:          delivery(3),
			claims:       []claimStep{{res: payment.ClaimResult{Kind: payment.ClaimTakeover, Attempt: 4}}},
			gw:           []gwStep{down},
			want:         decision(processing.ActionRetry, "retry"),
			delay:        backoff3,
			errIs:        []error{down.err},
			wantClaims:   1,
			wantCharges:  1,
			wantReleases: []payment.Release{ambiguousRelease(4)},
		},
		{
			name:         "release failure still retries",
			msg:          delivery(1),
			gw:           []gwStep{down},
			releaseErr:   errDB,
			want:         decision(processing.ActionRetry, "retry"),
			delay:        backoff1,
			errIs:        []error{down.err},
			wantClaims:   1,
			wantCharges:  1,
			wantReleases: []payment.Release{ambiguousRelease(1)},
		},
		{
			name: "gateway trouble on the last delivery records failed and dead-letters exhausted",
			msg:  delivery(5),
			gw:   []gwStep{down},
			want: withDeadLetter(withOutcome(decision(processing.ActionTerm, "exhausted"),
				outcome(payment.StatusFailed, "", payment.ErrorCodeExhausted, 1)), payment.ReasonExhausted),
			errIs:         []error{processing.ErrExhausted, down.err},
			dlError:       "retries exhausted after 5 deliveries",
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted))},
		},
		{
			name: "gateway retry on the last delivery records failed and dead-letters exhausted",
			msg:  delivery(6), // past MaxDeliver counts as last too
			gw:   []gwStep{tooFast},
			want: withDeadLetter(withOutcome(decision(processing.ActionTerm, "exhausted"),
				outcome(payment.StatusFailed, "", payment.ErrorCodeExhausted, 1)), payment.ReasonExhausted),
			errIs:         []error{processing.ErrExhausted, tooFast.err},
			dlError:       "retries exhausted",
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted)},
		},
		{
			name:          "fenced record is retried without a release",
			msg:           delivery(2),
			gw:            []gwStep{succeeded("ch_9")},
			completeErrs:  []error{payment.ErrFenced},
			want:          decision(processing.ActionRetry, "fenced"),
			delay:         backoff2,
			errIs:         []error{payment.ErrFenced},
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusSucceeded, "ch_9", "")},
		},
		{
			name:          "fenced record on the last delivery is retried: the server allows one more delivery",
			msg:           delivery(5),
			gw:            []gwStep{succeeded("ch_9")},
			completeErrs:  []error{payment.ErrFenced},
			want:          decision(processing.ActionRetry, "fenced"),
			delay:         backoff5,
			errIs:         []error{payment.ErrFenced},
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusSucceeded, "ch_9", "")},
		},
		{
			name:          "fenced exhaustion on the last delivery is retried",
			msg:           delivery(5),
			gw:            []gwStep{down},
			completeErrs:  []error{payment.ErrFenced},
			want:          decision(processing.ActionRetry, "fenced"),
			delay:         backoff5,
			errIs:         []error{payment.ErrFenced},
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted))},
		},
		{
			name:          "record error is retried and keeps the lease",
			msg:           delivery(1),
			gw:            []gwStep{declined("do_not_honor")},
			completeErrs:  []error{errDB},
			want:          decision(processing.ActionRetry, "retry"),
			delay:         backoff1,
			errIs:         []error{errDB},
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusDeclined, "", "do_not_honor")},
		},
		{
			// The lease is kept; the sweeper re-publishes the row once it
			// has expired (no redelivery is left).
			name:          "record error on the last delivery keeps the lease for the sweeper",
			msg:           delivery(5),
			gw:            []gwStep{rejected},
			completeErrs:  []error{errDB},
			want:          decision(processing.ActionRetry, "retry"),
			delay:         backoff5,
			errIs:         []error{errDB},
			wantClaims:    1,
			wantCharges:   1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusFailed, "", "invalid_request")},
		},
		{
			name:         "result that is neither succeeded nor declined is gateway trouble",
			msg:          delivery(1),
			gw:           []gwStep{{res: payment.ChargeResult{ChargeID: "ch_x"}}},
			want:         decision(processing.ActionRetry, "retry"),
			delay:        backoff1,
			wantClaims:   1,
			wantCharges:  1,
			wantReleases: []payment.Release{ambiguousRelease(1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			claims := &fakeClaims{claims: tt.claims, completeErrs: tt.completeErrs, releaseErr: tt.releaseErr}
			b := setup(t, testConfig(), claims, newFakeGateway(tt.gw...))

			got := b.proc.Process(t.Context(), tt.msg)

			requireDelay(t, got.Delay, tt.delay[0], tt.delay[1])
			if len(tt.errIs) == 0 && got.Action != processing.ActionRetry {
				require.NoError(t, got.Err)
			}
			if got.Action != processing.ActionAck || got.Verdict.String() == "fenced" {
				require.Error(t, got.Err, "a retry or dead letter says why")
			}
			for _, want := range tt.errIs {
				require.ErrorIs(t, got.Err, want)
			}
			if got.DeadLetter != nil {
				require.Contains(t, got.DeadLetter.Error, tt.dlError)
				require.NotContains(t, got.DeadLetter.Error, "pm_card_visa", "no payment method in dead letters")
				require.False(t, strings.HasPrefix(got.DeadLetter.Error, string(got.DeadLetter.Reason)+":"),
					"the reason is not repeated in the error: %q", got.DeadLetter.Error)
				dl := *got.DeadLetter
				dl.Error = ""
				got.DeadLetter = &dl
			}
			delay := got.Delay
			got.Delay, got.Err = 0, nil
			require.Equal(t, tt.want, got)

			claimCalls, completes, releases := b.claims.calls()
			for i, r := range releases {
				// A released lease is held until the retry is due: at least
				// half the nak delay, never past it.
				if got.Action == processing.ActionRetry {
					require.LessOrEqual(t, r.Hold, delay, "a lease held past the retry")
					require.GreaterOrEqual(t, r.Hold, delay/2, "a lease given back long before the retry")
				}
				releases[i].Hold = 0
			}
			require.Len(t, claimCalls, tt.wantClaims, "claims")
			for _, c := range claimCalls {
				require.Equal(t, testKey, c.Key)
				require.Equal(t, testOwner, c.Owner)
				require.Equal(t, tt.msg.StreamSeq, c.StreamSeq)
			}
			charges := b.gw.calls()
			require.Len(t, charges, tt.wantCharges, "gateway calls")
			for _, c := range charges {
				require.Equal(t, testKey, c.IdempotencyKey, "every gateway call carries the effective key")
			}
			require.Equal(t, tt.wantCompletes, completes, "Complete calls")
			require.Equal(t, tt.wantReleases, releases, "Release calls")
			require.Zero(t, counterValue(t, b.m.Panics))
		})
	}
}

// TestProcessPassesTheRequest checks what the claim and the gateway call are
// given, and that the effective key defaults to the payment id.
func TestProcessPassesTheRequest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"payment_id":"pay_2","merchant_id":"m_1","customer_id":"c_9","amount_minor":990,` +
		`"currency":"JPY","payment_method":"pm_card_mastercard","description":"tea","metadata":{"a":"b"}}`)
	b := setup(t, testConfig(), nil, nil)

	got := b.proc.Process(t.Context(), processing.Message{Subject: testSubject, Data: body, StreamSeq: 9, NumDelivered: 1})
	require.Equal(t, processing.ActionAck, got.Action)
	require.Equal(t, "pay_2", got.PaymentID)
	require.Equal(t, "pay_2", got.Key)

	req, err := payment.Decode(testSubject, body, payment.Limits{})
	require.NoError(t, err)
	claims, completes, _ := b.claims.calls()
	require.Equal(t, []payment.Claim{{
		Key:         "pay_2",
		Fingerprint: req.Fingerprint(),
		PaymentID:   "pay_2",
		MerchantID:  "m_1",
		CustomerID:  "c_9",
		AmountMinor: 990,
		Currency:    "JPY",
		Subject:     testSubject,
		Body:        body,
		StreamSeq:   9,
		Owner:       testOwner,
		Lease:       time.Minute,
		Gateway:     "fakegw",
	}}, claims)
	require.Equal(t, []payment.Charge{{
		IdempotencyKey: "pay_2",
		PaymentID:      "pay_2",
		MerchantID:     "m_1",
		Currency:       "JPY",
		PaymentMethod:  "pm_card_mastercard",
		Description:    "tea",
		AmountMinor:    990,
	}}, b.gw.calls())
	require.Len(t, completes, 1)
	require.Equal(t, "pay_2", completes[0].Key)
	require.Equal(t, got.Outcome.MsgID(), "result-pay_2-succeeded")
}

func TestProcessShutdownDuringGatewayCall(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.BreakerFailures = 1 // one counted failure would open the breaker
	b := setup(t, cfg, nil, newFakeGateway(gwStep{block: true}, succeeded("ch_2")))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan processing.Decision, 1)
	go func() { done <- b.proc.Process(ctx, delivery(2)) }()
	<-b.gw.started
	cancel()
	got := <-done

	require.Equal(t, processing.ActionRetry, got.Action)
	require.Equal(t, "shutdown", got.Verdict.String())
	require.Equal(t, 100*time.Millisecond, got.Delay, "a shutdown retries after the base delay")
	require.ErrorIs(t, got.Err, processing.ErrShutdown)
	require.ErrorIs(t, got.Err, context.Canceled)
	require.Nil(t, got.Outcome)
	require.Nil(t, got.DeadLetter)
	_, completes, releases := b.claims.calls()
	require.Empty(t, completes)
	require.Equal(t, []payment.Release{ambiguousRelease(1)}, releases, "a call cancelled mid-way may have charged")

	limit, wait := b.proc.Admit()
	require.Equal(t, -1, limit, "the cancelled call is not a breaker failure")
	require.Zero(t, wait)
	got = b.proc.Process(t.Context(), delivery(3))
	require.Equal(t, "succeeded", got.Verdict.String(), "the breaker still lets calls through")
}

func TestProcessShutdownWhileRateLimited(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		n      uint64
		action processing.Action
		label  string
	}{
		{name: "retried", n: 1, action: processing.ActionRetry, label: "shutdown"},
		// A nak on the last delivery would leave the message in the stream
		// for good, with no row for the sweeper: dead-letter it instead.
		{name: "last delivery dead-lettered", n: 5, action: processing.ActionTerm, label: "exhausted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.RateLimit, cfg.RateBurst = 0.001, 1
			b := setup(t, cfg, nil, nil)

			first := b.proc.Process(t.Context(), delivery(1))
			require.Equal(t, "succeeded", first.Verdict.String(), "the burst lets the first call through")

			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan processing.Decision, 1)
			go func() { done <- b.proc.Process(ctx, delivery(tt.n)) }()
			cancel()
			got := <-done

			require.Equal(t, tt.action, got.Action)
			require.Equal(t, tt.label, got.Verdict.String())
			require.ErrorIs(t, got.Err, processing.ErrShutdown)
			require.Equal(t, testPayment, got.PaymentID)
			require.Equal(t, testKey, got.Key)
			require.Nil(t, got.Outcome)
			if tt.action == processing.ActionTerm {
				require.Equal(t, payment.ReasonExhausted, got.DeadLetter.Reason)
			} else {
				require.Nil(t, got.DeadLetter)
				require.Equal(t, 100*time.Millisecond, got.Delay)
			}
			claims, _, _ := b.claims.calls()
			require.Len(t, claims, 1, "no claim while waiting on the limiter")
			require.Len(t, b.gw.calls(), 1)
		})
	}
}

func TestProcessClaimErrorDuringShutdown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		n      uint64
		action processing.Action
		label  string
	}{
		{name: "retried quietly", n: 1, action: processing.ActionRetry, label: "shutdown"},
		{name: "last delivery dead-lettered", n: 5, action: processing.ActionTerm, label: "exhausted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			// The worker is stopped hard while the claim runs.
			claims := &fakeClaims{claims: []claimStep{{hook: cancel, err: context.Canceled}}}
			b := setup(t, testConfig(), claims, nil)

			got := b.proc.Process(ctx, delivery(tt.n))
			require.Equal(t, tt.action, got.Action)
			require.Equal(t, tt.label, got.Verdict.String())
			require.ErrorIs(t, got.Err, processing.ErrShutdown)
			require.ErrorIs(t, got.Err, context.Canceled)
			require.Empty(t, b.gw.calls())
		})
	}
}

func TestProcessPanics(t *testing.T) {
	t.Parallel()
	boom := gwStep{panic: "gateway exploded"}
	tests := []struct {
		name          string
		n             uint64
		claims        *fakeClaims
		gw            []gwStep
		action        processing.Action
		label         string
		outcome       *payment.Outcome
		reason        payment.DeadLetterReason
		panics        float64
		wantCharges   int
		wantCompletes []payment.Completion
		wantReleases  []payment.Release
	}{
		{
			name: "gateway panic releases the lease and retries", n: 2,
			claims: &fakeClaims{}, gw: []gwStep{boom},
			action: processing.ActionRetry, label: "panic", panics: 1, wantCharges: 1,
			wantReleases: []payment.Release{ambiguousRelease(1)},
		},
		{
			// Regression: the lease used to be released on the last
			// delivery too, so a payment that panics every time was
			// re-published by the sweeper for ever.
			name: "gateway panic on the last delivery records failed and dead-letters exhausted", n: 5,
			claims: &fakeClaims{}, gw: []gwStep{boom},
			action: processing.ActionTerm, label: "exhausted", reason: payment.ReasonExhausted, panics: 1, wantCharges: 1,
			outcome:       outcome(payment.StatusFailed, "", payment.ErrorCodeExhausted, 1),
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted))},
		},
		{
			name: "claim panic retries without a lease", n: 1,
			claims: &fakeClaims{claims: []claimStep{{panic: "claim exploded"}}},
			action: processing.ActionRetry, label: "panic", panics: 1,
		},
		{
			// Regression: a retry here left the message in the stream for
			// good, with no row and no dead letter.
			name: "claim panic on the last delivery dead-letters exhausted", n: 5,
			claims: &fakeClaims{claims: []claimStep{{panic: "claim exploded"}}},
			action: processing.ActionTerm, label: "exhausted", reason: payment.ReasonExhausted, panics: 1,
		},
		{
			name: "panic while recording releases the lease and retries", n: 1,
			claims: &fakeClaims{completePanic: "complete exploded"},
			action: processing.ActionRetry, label: "panic", panics: 1, wantCharges: 1,
			wantCompletes: []payment.Completion{completion(1, payment.StatusSucceeded, "ch_1", "")},
			wantReleases:  []payment.Release{ambiguousRelease(1)},
		},
		{
			name: "panic again while cleaning up is recovered too", n: 5,
			claims: &fakeClaims{completePanic: "complete exploded"}, gw: []gwStep{boom},
			action: processing.ActionRetry, label: "panic", panics: 2, wantCharges: 1,
			wantCompletes: []payment.Completion{lookedUp(completion(1, payment.StatusFailed, "", payment.ErrorCodeExhausted))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, testConfig(), tt.claims, newFakeGateway(tt.gw...))

			var got processing.Decision
			require.NotPanics(t, func() { got = b.proc.Process(t.Context(), delivery(tt.n)) })

			require.Equal(t, tt.action, got.Action)
			require.Equal(t, tt.label, got.Verdict.String())
			require.ErrorContains(t, got.Err, "exploded")
			require.Equal(t, testPayment, got.PaymentID)
			require.Equal(t, testKey, got.Key)
			require.Equal(t, tt.outcome, got.Outcome)
			if tt.reason != "" {
				require.Equal(t, tt.reason, got.DeadLetter.Reason)
				require.Zero(t, got.Delay)
			} else {
				require.Nil(t, got.DeadLetter)
				requireDelay(t, got.Delay, 50*time.Millisecond, 1600*time.Millisecond)
			}
			require.InDelta(t, tt.panics, counterValue(t, b.m.Panics), 0)
			require.Len(t, b.gw.calls(), tt.wantCharges)
			_, completes, releases := b.claims.calls()
			require.Equal(t, tt.wantCompletes, completes)
			require.Equal(t, tt.wantReleases, releases)
		})
	}
}

func TestProcessPanicInDecodeIsNotPossibleForBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, testConfig(), nil, nil)
	for _, data := range [][]byte{nil, {}, []byte("{"), []byte(`{"a":`), []byte(`[1,2]`), []byte(`"x"`)} {
		got := b.proc.Process(t.Context(), processing.Message{Subject: testSubject, Data: data, NumDelivered: 1})
		require.Equal(t, processing.ActionTerm, got.Action, "%q", data)
		require.Equal(t, "invalid", got.Verdict.String(), "%q", data)
	}
	require.Zero(t, counterValue(t, b.m.Panics))
}
