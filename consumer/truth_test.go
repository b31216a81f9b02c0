package consumer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// outageGateway wraps the fake gateway with the faults of an ambiguous
// outage: while down, every charge and lookup answers 503 without reaching
// the fake — except, when charge is set, the first charge of each key,
// which reaches the fake (the money moves) and then answers 503 too (the
// answer is lost). It records every charge and the time it reached it.
type outageGateway struct {
	*gateway.Fake
	mu      sync.Mutex
	down    bool
	charge  bool // the first call of a key charges before its answer is lost
	charged map[string]bool
	loseN   int              // lose the answers of this many first calls, then pass through
	calls   []payment.Charge // every charge asked for
	at      []time.Time      // when each charge was asked for
}

func newOutageGateway() *outageGateway {
	return &outageGateway{Fake: gateway.NewFake(gateway.FakeConfig{Seed: 7}), charged: map[string]bool{}}
}

var errOutage = &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: http.StatusServiceUnavailable, Message: "outage"}

func (g *outageGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.mu.Lock()
	g.calls = append(g.calls, c)
	g.at = append(g.at, time.Now())
	down, first := g.down, !g.charged[c.IdempotencyKey]
	lose := g.loseN > 0 && first
	if lose {
		g.loseN--
	}
	g.charged[c.IdempotencyKey] = true
	g.mu.Unlock()
	switch {
	case lose:
		if _, err := g.Fake.Charge(ctx, c); err != nil {
			return payment.ChargeResult{}, err
		}
		return payment.ChargeResult{}, errOutage
	case down && first && g.charge:
		if _, err := g.Fake.Charge(ctx, c); err != nil {
			return payment.ChargeResult{}, err
		}
		return payment.ChargeResult{}, errOutage
	case down:
		return payment.ChargeResult{}, errOutage
	}
	return g.Fake.Charge(ctx, c)
}

func (g *outageGateway) Lookup(ctx context.Context, key string) (payment.LookupResult, error) {
	g.mu.Lock()
	down := g.down
	g.mu.Unlock()
	if down {
		return payment.LookupResult{}, errOutage
	}
	return g.Fake.Lookup(ctx, key)
}

func (g *outageGateway) setDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
}

func (g *outageGateway) charges() ([]payment.Charge, []time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]payment.Charge(nil), g.calls...), append([]time.Time(nil), g.at...)
}

// rescuer is a sweeper and a reconciler on a stack, as a worker runs them.
type rescuer struct {
	sweeper *processing.Sweeper
	recon   *processing.Reconciler
	m       *telemetry.Metrics
}

// newRescuer builds the sweeper and reconciler of a worker on s, with the
// given sweep grace and request limits; they publish through a consumer of
// their own.
func (s *stack) newRescuer(grace time.Duration, limits payment.Limits) *rescuer {
	s.t.Helper()
	m := telemetry.New(prometheus.NewRegistry())
	st := store.New(s.pool)
	pcfg := s.pcfg
	pcfg.Owner = "rescuer"
	cons := consumer.New(s.js, s.ccfg, processing.New(pcfg, st, s.gw, zerolog.Nop(), m), zerolog.Nop(), m)
	sw := processing.NewSweeper(processing.SweeperConfig{Interval: 50 * time.Millisecond, Grace: grace,
		Limits: limits, LookupTimeout: 5 * time.Second}, processing.SweeperDeps{
		FindFunc: st.SweepStuck, RepublishFunc: cons.Republish, SettleFunc: st.Settle,
		DeadLetterFunc: cons.PublishDeadLetter, AnnounceFunc: cons.PublishOutcome, LookupFunc: s.gw.Lookup,
	}, zerolog.Nop(), m)
	recon := processing.NewReconciler(processing.ReconcilerConfig{Interval: 50 * time.Millisecond, Limit: 100,
		BackoffBase: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, LookupTimeout: 5 * time.Second},
		st, s.gw, cons.PublishOutcome, zerolog.Nop(), m)
	return &rescuer{sweeper: sw, recon: recon, m: m}
}

// run runs the sweeper and the reconciler until the test ends.
func (r *rescuer) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.sweeper.Run(ctx) })
	wg.Go(func() { _ = r.recon.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// row reads the status, charge id and error code of key.
func (s *stack) row(key string) (status payment.Status, chargeID, code string) {
	s.t.Helper()
	var st string
	var ch, ec *string
	require.NoError(s.t, s.pool.QueryRow(context.Background(),
		`SELECT status, gateway_charge_id, error_code FROM payments WHERE idempotency_key = $1`, key).Scan(&st, &ch, &ec))
	if ch != nil {
		chargeID = *ch
	}
	if ec != nil {
		code = *ec
	}
	return payment.Status(st), chargeID, code
}

func (s *stack) outcomes() []payment.Outcome {
	s.t.Helper()
	var out []payment.Outcome
	for _, m := range s.streamMsgs("PAYMENT_RESULTS") {
		var o payment.Outcome
		require.NoError(s.t, json.Unmarshal(m.Data, &o))
		out = append(out, o)
	}
	return out
}

// TestAmbiguousOutageEndsUnknownThenSettled: a charge whose answer is lost,
// then a gateway down past MaxDeliver — lookups included — leaves the row
// unknown (dead-lettered exhausted, not announced); once the gateway is
// back, the reconciler settles it with the truth, announced once
// (docs/contract.md §6.8).
func TestAmbiguousOutageEndsUnknownThenSettled(t *testing.T) {
	t.Parallel()
	for _, charged := range []bool{true, false} {
		name := map[bool]string{true: "charged: succeeded with the gateway's charge id", false: "not charged: failed"}[charged]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			gw := newOutageGateway()
			gw.down, gw.charge = true, charged
			s := newStack(t, stackOptions{gw: gw, maxDeliver: 3, failures: 1000})
			req := request(1, 1000)
			key := req.PaymentID
			s.publishRequest(req, "")
			s.startWorker("w1")
			s.waitFor("unknown", 30*time.Second, func() bool { return s.counts()[payment.StatusUnknown] == 1 })
			s.waitFor("dead letter", 10*time.Second, func() bool { return s.streamCount("PAYMENTS_DLQ") == 1 })
			dl := s.streamMsgs("PAYMENTS_DLQ")[0]
			require.Equal(t, "payments.dlq.exhausted", dl.Subject)
			require.Zero(t, s.streamCount("PAYMENT_RESULTS"), "an unknown row is not announced")
			if charged {
				require.Equal(t, 1, gw.ChargesFor(key), "the money moved")
			}

			// A redelivery or replay of it now is in flight: the reconciler
			// owns the row.
			s.publishRequest(req, "replay-while-unknown")
			s.waitSettled(20 * time.Second)
			require.Equal(t, map[payment.Status]int{payment.StatusUnknown: 1}, s.counts())

			gw.setDown(false)
			r := s.newRescuer(time.Minute, payment.Limits{})
			r.run(t)
			s.waitFor("settled", 30*time.Second, func() bool { return s.counts()[payment.StatusUnknown] == 0 })
			status, chargeID, code := s.row(key)
			// The row is settled before its outcome event is out.
			s.waitFor("announced", 30*time.Second, func() bool { return len(s.outcomes()) >= 1 })
			outs := s.outcomes()
			require.Len(t, outs, 1, "announced once")
			if charged {
				found, err := gw.Fake.Lookup(context.Background(), key)
				require.NoError(t, err)
				require.True(t, found.Found)
				require.Equal(t, payment.StatusSucceeded, status)
				require.Equal(t, found.ChargeID, chargeID)
				require.Equal(t, found.ChargeID, outs[0].GatewayChargeID)
				require.Equal(t, 1, gw.ChargesFor(key), "charged once")
			} else {
				require.Equal(t, payment.StatusFailed, status)
				require.Equal(t, payment.ErrorCodeExhausted, code)
				require.Zero(t, gw.ChargesFor(key), "failed means no money moved")
			}
			require.Equal(t, status, outs[0].Status)
			require.Equal(t, "payments.results."+string(status), s.streamMsgs("PAYMENT_RESULTS")[0].Subject)
		})
	}
}

// TestDuplicateWithAnotherDescriptionChargesTheFirstBody: a duplicate that
// differs only in description (so not a conflict) takes a row over while the
// first message waits for its retry after a lost answer; it charges the body
// of the first claim, so the gateway replays the first charge instead of
// refusing a reused key with another body (docs/contract.md §5).
func TestDuplicateWithAnotherDescriptionChargesTheFirstBody(t *testing.T) {
	t.Parallel()
	gw := newOutageGateway()
	gw.loseN = 1 // the first call charges, and its answer is lost
	s := newStack(t, stackOptions{gw: gw, failures: 1000, backoff: 4 * time.Second, backoffMax: 4 * time.Second})
	first := request(1, 1000)
	first.Description = "the first description"
	s.publishRequest(first, "")
	s.startWorker("w1")
	// The first delivery's answer is lost: the lease is released, held until
	// the retry is due (at least half of the 2–4 s delay).
	s.waitFor("lease given back", 20*time.Second, func() bool {
		var expired bool
		err := s.pool.QueryRow(context.Background(), `SELECT lease_owner IS NULL AND lease_until < clock_timestamp()
			FROM payments WHERE idempotency_key = $1`, first.PaymentID).Scan(&expired)
		return err == nil && expired
	})
	second := *first
	second.Description = "another description"
	s.publishRequest(&second, "the-duplicate")
	s.waitFor("succeeded", 20*time.Second, func() bool { return s.counts()[payment.StatusSucceeded] == 1 })
	s.waitSettled(20 * time.Second)

	calls, _ := gw.charges()
	require.GreaterOrEqual(t, len(calls), 2)
	for _, c := range calls {
		require.Equal(t, "the first description", c.Description, "every attempt charges the first body")
	}
	require.Equal(t, 1, gw.ChargesFor(first.PaymentID))
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"))
}

// TestRetryAfterHoldsTheLease: a 429 with Retry-After holds the row until
// then; the sweeper, with a grace far shorter, does not re-publish the
// payment, and no gateway call comes early (docs/contract.md §6.5).
func TestRetryAfterHoldsTheLease(t *testing.T) {
	t.Parallel()
	const retryAfter = 5 * time.Second
	gw := &retryAfterGateway{outageGateway: newOutageGateway(), after: retryAfter}
	s := newStack(t, stackOptions{gw: gw, failures: 1000})
	s.newRescuer(time.Second, payment.Limits{}).run(t)
	s.publishRequest(request(1, 1000), "")
	s.startWorker("w1")
	s.waitFor("succeeded", 30*time.Second, func() bool { return s.counts()[payment.StatusSucceeded] == 1 })
	s.waitSettled(20 * time.Second)
	calls, at := gw.charges()
	require.Len(t, calls, 2, "one 429, one success: no early call from a sweep")
	require.GreaterOrEqual(t, at[1].Sub(at[0]), retryAfter, "called again before Retry-After")
	require.Equal(t, 1, s.streamCount("PAYMENTS"), "nothing re-published")
}

// retryAfterGateway answers the first charge 429 with Retry-After.
type retryAfterGateway struct {
	*outageGateway
	after time.Duration
}

func (g *retryAfterGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.mu.Lock()
	first := len(g.calls) == 0
	g.calls = append(g.calls, c)
	g.at = append(g.at, time.Now())
	g.mu.Unlock()
	if first {
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRetry, StatusCode: http.StatusTooManyRequests,
			Message: "slow down", RetryAfter: g.after}
	}
	return g.Fake.Charge(ctx, c)
}

// TestStoredRequestBelowALoweredLimitIsSettledOnce: a payment stuck in
// processing whose stored request a lowered limit now refuses is settled
// failed (error_code invalid) and dead-lettered once, not re-published every
// sweep (docs/contract.md §6.9).
func TestStoredRequestBelowALoweredLimitIsSettledOnce(t *testing.T) {
	t.Parallel()
	gw := newOutageGateway()
	s := newStack(t, stackOptions{gw: gw})
	req := request(1, 5000)
	body, err := json.Marshal(req)
	require.NoError(t, err)
	// A holder claimed it and died: the row is processing, its lease long
	// gone.
	st := store.New(s.pool)
	claim, err := st.Claim(context.Background(), payment.Claim{Key: req.PaymentID, Fingerprint: req.Fingerprint(),
		PaymentID: req.PaymentID, MerchantID: req.MerchantID, AmountMinor: req.AmountMinor, Currency: req.Currency,
		Subject: "payments.requests." + req.MerchantID, Body: body, StreamSeq: 1, Owner: "dead", Lease: time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, payment.ClaimNew, claim.Kind)

	r := s.newRescuer(10*time.Millisecond, payment.Limits{MaxAmountMinor: 1000})
	s.waitFor("settled by a sweep", 20*time.Second, func() bool {
		_, _ = r.sweeper.SweepOnce(context.Background())
		return s.counts()[payment.StatusProcessing] == 0
	})
	for range 2 { // later sweeps find nothing to do
		_, err := r.sweeper.SweepOnce(context.Background())
		require.NoError(t, err)
	}
	status, _, code := s.row(req.PaymentID)
	require.Equal(t, payment.StatusFailed, status)
	require.Equal(t, payment.ErrorCodeInvalid, code)
	dls := s.streamMsgs("PAYMENTS_DLQ")
	require.Len(t, dls, 1, "dead-lettered once")
	require.Equal(t, "payments.dlq.invalid", dls[0].Subject)
	require.Equal(t, "payments.requests.m001", dls[0].Header.Get(consumer.HeaderOriginalSubject))
	outs := s.outcomes()
	require.Len(t, outs, 1)
	require.Equal(t, payment.StatusFailed, outs[0].Status)
	require.Zero(t, s.streamCount("PAYMENTS"), "never re-published")
	require.Empty(t, func() []payment.Charge { c, _ := gw.charges(); return c }())
}

// TestNotReadyWhileOutcomesCannotBePublished: a worker that records outcomes
// but cannot announce them holds its messages; it says so on /readyz instead
// of looking healthy, and is ready again once publishing works.
func TestNotReadyWhileOutcomesCannotBePublished(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{ackWait: 4 * time.Second})
	w := s.startWorker("w1")
	s.publishRequest(request(1, 1000), "")
	s.waitFor("succeeded", 20*time.Second, func() bool { return s.counts()[payment.StatusSucceeded] == 1 })
	s.waitFor("ready", 20*time.Second, func() bool { return w.cons.Ready() == nil })

	// Without the results stream, no outcome event can be stored.
	results := s.ccfg.ResultsStream
	info, err := s.js.Stream(context.Background(), results)
	require.NoError(t, err)
	cfg := info.CachedInfo().Config
	require.NoError(t, s.js.DeleteStream(context.Background(), results))
	for i := 2; i <= 4; i++ {
		s.publishRequest(request(i, 1000), "")
	}
	s.waitFor("not ready", 30*time.Second, func() bool {
		err := w.cons.Ready()
		return err != nil && strings.Contains(err.Error(), "publishing outcomes")
	})
	require.Zero(t, s.streamCount("PAYMENTS_DLQ"), "nothing dropped or dead-lettered meanwhile")

	_, err = s.js.CreateStream(context.Background(), cfg)
	require.NoError(t, err)
	s.waitFor("announced", 30*time.Second, func() bool { return s.streamCount(results) == 3 })
	s.waitFor("ready again", 20*time.Second, func() bool { return w.cons.Ready() == nil })
	s.waitSettled(20 * time.Second)
}

// TestNoAckBeforeTheOutcomeIsStored: the results stream refuses the outcome
// event of a charged payment (its message limit is reached, discard new: the
// server answers the publish with an error, as a full store does). The
// request is recorded but never acked: it is nak'ed and redelivered, and
// the consumer's ack floor stays below it, until the stream takes the
// outcome; then the redelivery publishes it and acks.
func TestNoAckBeforeTheOutcomeIsStored(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{ackWait: 2 * time.Second, backoff: 50 * time.Millisecond, backoffMax: 200 * time.Millisecond})
	ctx := context.Background()
	results := s.ccfg.ResultsStream
	st, err := s.js.Stream(ctx, results)
	require.NoError(t, err)
	open := st.CachedInfo().Config
	full := open
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	_, err = s.js.UpdateStream(ctx, full)
	require.NoError(t, err)

	w := s.startWorker("w1")
	s.publishRequest(request(1, 1000), "")
	s.waitFor("first outcome stored and acked", 20*time.Second, func() bool {
		return s.streamCount(results) == 1 && s.ackFloor() == 1
	})
	s.publishRequest(request(2, 1000), "") // stream sequence 2
	s.waitFor("second request redelivered", 30*time.Second, func() bool {
		return s.counts()[payment.StatusSucceeded] == 2 && s.redelivered() >= 1
	})
	require.Equal(t, uint64(1), s.ackFloor(), "the request whose outcome was refused is not acked")
	require.Equal(t, 1, s.streamCount(results))
	s.waitFor("not ready", 30*time.Second, func() bool {
		err := w.cons.Ready()
		return err != nil && strings.Contains(err.Error(), "publishing outcomes")
	})
	require.Equal(t, uint64(1), s.ackFloor(), "still not acked")

	_, err = s.js.UpdateStream(ctx, open)
	require.NoError(t, err)
	s.waitFor("outcome stored, then acked", 30*time.Second, func() bool {
		return s.streamCount(results) == 2 && s.ackFloor() == 2
	})
	s.waitSettled(20 * time.Second)
	s.waitFor("ready again", 20*time.Second, func() bool { return w.cons.Ready() == nil })
}

// ackFloor returns the stream sequence below which the consumer has every
// message acked.
func (s *stack) ackFloor() uint64 {
	s.t.Helper()
	c, err := s.js.Consumer(context.Background(), s.ccfg.Stream, s.ccfg.Consumer)
	require.NoError(s.t, err)
	info, err := c.Info(context.Background())
	require.NoError(s.t, err)
	return info.AckFloor.Stream
}

// redelivered returns how many messages the consumer has delivered more
// than once and not yet seen acked.
func (s *stack) redelivered() int {
	s.t.Helper()
	c, err := s.js.Consumer(context.Background(), s.ccfg.Stream, s.ccfg.Consumer)
	require.NoError(s.t, err)
	info, err := c.Info(context.Background())
	require.NoError(s.t, err)
	return info.NumRedelivered
}
