package processing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/risk"
	"github.com/paystream/paystream/telemetry"
)

// Claims is the idempotency store as processing needs it. Each call is one
// short transaction; implementations may batch calls from many goroutines.
//
// Every call must end within its bound, whatever the database does:
// Claim within half the claim's lease (at least 1 s), Complete within
// 10 s, Release within 5 s, or at ctx's deadline when that is earlier
// (store.Batcher and store.Store do). The Processor adds no timeout of its
// own on the hot path.
type Claims interface {
	// Claim claims the effective key of c (docs/contract.md §6 step 3).
	Claim(ctx context.Context, c payment.Claim) (payment.ClaimResult, error)
	// Complete records a final outcome, fenced by the lease; payment.ErrFenced
	// when the lease is no longer the caller's.
	Complete(ctx context.Context, c payment.Completion) (payment.Record, error)
	// Release gives a held lease back, fenced like Complete.
	Release(ctx context.Context, r payment.Release) error
}

// LeaseExtender is an optional extra of Claims: ExtendLease pushes a held
// lease's end to lease from now, fenced like Complete. When Claims has it,
// the lease is extended while a gateway call runs (docs/contract.md §11.7).
type LeaseExtender interface {
	ExtendLease(ctx context.Context, key string, attempt int, owner string, lease time.Duration) error
}

// Gateway charges payments. Implementations honour the idempotency key: the
// same key with the same charge returns the first result and charges once.
type Gateway interface {
	// Name is the gateway's name, recorded in each row and outcome.
	Name() string
	// Charge charges c. It returns a result whose Status is succeeded or
	// declined, or an error: a *payment.GatewayError classified as in
	// docs/contract.md §5, or the context's error when ctx ends first.
	Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error)
	// Lookup asks whether the gateway charged under key (docs/contract.md
	// §5): Found with the charge, not Found when it made no charge and has
	// none in flight, or an error when it cannot tell now.
	Lookup(ctx context.Context, key string) (payment.LookupResult, error)
}

// Config configures a Processor. It has no defaults: the worker fills it
// from the settings of the config package, whose table holds them (each
// field names its setting), and New panics when a field is missing or out of
// range (see Validate).
type Config struct {
	// Owner identifies this worker process in leases (PAYSTREAM_WORKER_ID).
	// Required.
	Owner string
	// Lease is how long a claim lasts (PAYSTREAM_LEASE); it must exceed the
	// gateway timeout. Must be > 0.
	Lease time.Duration
	// MaxDeliver is the number of deliveries a message gets
	// (PAYSTREAM_MAX_DELIVER); a retryable failure on the last one records
	// failed and dead-letters exhausted. At least 1.
	MaxDeliver int
	// RetryBackoff is the base of the exponential retry backoff
	// (PAYSTREAM_RETRY_BACKOFF). Must be > 0.
	RetryBackoff time.Duration
	// RetryBackoffMax caps the retry backoff (PAYSTREAM_RETRY_BACKOFF_MAX);
	// at least RetryBackoff.
	RetryBackoffMax time.Duration
	// RateLimit is gateway calls per second for this process
	// (PAYSTREAM_RATE_LIMIT), ≥ 0; 0 is unlimited.
	RateLimit float64
	// RateBurst is the rate limiter's burst (PAYSTREAM_RATE_BURST). At
	// least 1.
	RateBurst int
	// BreakerFailures is the number of consecutive gateway failures that open
	// the breaker (PAYSTREAM_BREAKER_FAILURES). At least 1.
	BreakerFailures uint32
	// BreakerOpenTimeout is how long the breaker stays open
	// (PAYSTREAM_BREAKER_OPEN_TIMEOUT). Must be > 0.
	BreakerOpenTimeout time.Duration
	// Limits bounds request fields (PAYSTREAM_MAX_AMOUNT_MINOR); its zero
	// value means the contract's (payment.Limits).
	Limits payment.Limits
	// Tracing makes the spans of processing (processing/trace.go); nil is
	// tracing off.
	Tracing *telemetry.Tracing
	// GatewayConcurrency and AdaptiveConcurrency are the guard's
	// concurrency limit (GuardConfig.Concurrency and Adaptive).
	GatewayConcurrency  int
	AdaptiveConcurrency bool
}

// GuardConfig returns the guard configuration of gateway named name that
// c's settings describe.
func (c Config) GuardConfig(name string) GuardConfig {
	return GuardConfig{Gateway: name, RateLimit: c.RateLimit, RateBurst: c.RateBurst,
		BreakerFailures: c.BreakerFailures, BreakerOpenTimeout: c.BreakerOpenTimeout,
		Concurrency: c.GatewayConcurrency, Adaptive: c.AdaptiveConcurrency}
}

// Validate returns nil, or one error listing every missing or out-of-range
// field of c, joined with errors.Join. New panics with it: a Config the
// worker filled from a validated config.Config is always valid, so an
// invalid one is a wiring bug.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Owner != "", "owner: required")
	check(c.Lease > 0, "lease %v: must be greater than 0", c.Lease)
	check(c.MaxDeliver >= 1, "max deliver %d: must be at least 1", c.MaxDeliver)
	check(c.RetryBackoff > 0, "retry backoff %v: must be greater than 0", c.RetryBackoff)
	check(c.RetryBackoffMax >= c.RetryBackoff, "retry backoff max %v: must be at least the retry backoff, %v", c.RetryBackoffMax, c.RetryBackoff)
	check(c.RateLimit >= 0, "rate limit %v: must not be negative", c.RateLimit)
	check(c.RateBurst >= 1, "rate burst %d: must be at least 1", c.RateBurst)
	check(c.BreakerFailures >= 1, "breaker failures %d: must be at least 1", c.BreakerFailures)
	check(c.BreakerOpenTimeout > 0, "breaker open timeout %v: must be greater than 0", c.BreakerOpenTimeout)
	check(c.GatewayConcurrency >= 0, "gateway concurrency %d: must not be negative", c.GatewayConcurrency)
	check(!c.AdaptiveConcurrency || c.GatewayConcurrency >= 1,
		"adaptive concurrency needs a gateway concurrency of at least 1, got %d", c.GatewayConcurrency)
	return errors.Join(errs...)
}

// Message is one delivery of a payment request.
type Message struct {
	Subject string
	Data    []byte
	// StreamSeq is the message's sequence in the requests stream.
	StreamSeq uint64
	// NumDelivered counts this delivery (1 for the first).
	NumDelivered uint64
}

// Action is what the consumer does with a delivery.
type Action uint8

// The actions on a delivery.
const (
	// ActionAck: publish Decision.Outcome (if any), then Ack.
	ActionAck Action = iota + 1
	// ActionRetry: NakWithDelay(Decision.Delay).
	ActionRetry
	// ActionTerm: publish Decision.DeadLetter and Decision.Outcome (if
	// any), then Term.
	ActionTerm
)

// DeadLetter says why a message is dead-lettered.
type DeadLetter struct {
	Reason payment.DeadLetterReason
	// Error is a human-readable reason; it never contains payment method
	// data or card numbers.
	Error string
}

// Decision is the single result of processing one delivery.
type Decision struct {
	Action Action
	// Delay is the NakWithDelay delay of ActionRetry.
	Delay time.Duration
	// Outcome is the outcome event to publish before acking or terminating.
	Outcome *payment.Outcome
	// DeadLetter is set with ActionTerm.
	DeadLetter *DeadLetter
	// Verdict is what became of the delivery, for logs and metrics.
	Verdict payment.Verdict
	// Err is the cause of a retry or dead letter, for logging.
	Err error
	// PaymentID and Key identify the payment when the request decoded.
	PaymentID string
	Key       string
}

// Processor runs the payment flow of docs/contract.md §6 on one delivery at a time
// per goroutine; it is safe for concurrent use.
type Processor struct {
	cfg    Config
	claims Claims
	gw     Gateway
	// guard is the gateway's rate limiter, breaker, concurrency limit and
	// fleet view.
	guard *Guard
	// gws are the gateways of the routing table (the first is gw, with
	// guard), byName the same by name.
	gws    []*routed
	byName map[string]*routed
	log    zerolog.Logger
	m      *telemetry.Metrics
	tr     *telemetry.Tracing
	// risk, when set, is asked before a charge (WithRisk, risk.go).
	risk *risk.FanOut

	// inFlight counts the Process calls running, so that a half-open
	// breaker admits one message at a time.
	inFlight atomic.Int64
	// misconfigured holds the last gateway answer that said our own
	// configuration is wrong (401, 403), until a call succeeds again.
	misconfigured atomic.Pointer[payment.GatewayError]
}

// Ready reports whether the gateway accepts this worker's calls: an error
// while its last answers said our credentials are wrong (docs/contract.md
// §5: 401, 403), until a charge or lookup gets through again.
func (p *Processor) Ready() error {
	if ge := p.misconfigured.Load(); ge != nil {
		return fmt.Errorf("gateway refuses our credentials: %w", ge)
	}
	return nil
}

// BreakerState returns the worst state of the gateways' breakers: open
// when any is open, else half_open when any is, else closed — the
// heartbeat's breaker, like the unlabelled paystream_breaker_state. Each
// gateway's own is in Guards (and the heartbeat's gateways).
func (p *Processor) BreakerState() string {
	worst := "closed"
	for _, r := range p.gws {
		switch r.guard.BreakerState() {
		case "open":
			return "open"
		case "half_open":
			worst = "half_open"
		}
	}
	return worst
}

// BreakersOpen returns how many of the gateways' breakers are open, and
// how many gateways there are: the worker cannot charge when they are
// equal (with several gateways a payment fails over past an open one).
func (p *Processor) BreakersOpen() (open, gateways int) {
	for _, r := range p.gws {
		if r.guard.BreakerState() == "open" {
			open++
		}
	}
	return open, len(p.gws)
}

// Guard returns the guard of the processor's (first) gateway, for the
// fleet's wiring (budget share, breaker quorum, probe lease) and status.
func (p *Processor) Guard() *Guard { return p.guard }

// Guards returns the guard of every gateway of the routing table, in its
// order.
func (p *Processor) Guards() []*Guard {
	out := make([]*Guard, len(p.gws))
	for i, r := range p.gws {
		out[i] = r.guard
	}
	return out
}

// InFlight returns the number of Process calls running.
func (p *Processor) InFlight() int { return int(p.inFlight.Load()) }

// observe keeps Ready in step with a gateway answer.
func (p *Processor) observe(err error) {
	ge, ok := errors.AsType[*payment.GatewayError](err)
	switch {
	case ok && ge.Class.Misconfigured():
		if p.misconfigured.Swap(ge) == nil {
			p.log.Error().Err(ge).Msg("the gateway refuses our credentials: not ready until it accepts them")
		}
	case err == nil || ok:
		// Any other answer from the gateway means it took our credentials.
		if p.misconfigured.Swap(nil) != nil {
			p.log.Info().Msg("the gateway accepts our credentials again")
		}
	}
}

// halfOpenPoll is how long the pull loop waits before asking Admit again
// while a half-open breaker's probe runs.
const halfOpenPoll = 20 * time.Millisecond

// New returns a Processor. It panics on a missing dependency or an invalid
// Config (wiring bugs).
func New(cfg Config, claims Claims, gw Gateway, logger zerolog.Logger, m *telemetry.Metrics) *Processor {
	if gw == nil {
		panic("processing.New: claims, gateway and metrics are required")
	}
	return NewRouted(cfg, claims, []Route{{Gateway: gw, Weight: 1}}, logger, m)
}

// NewRouted returns a Processor that routes payments over several gateways
// (docs/contract.md §5, "Several gateways"), each behind a guard of its own
// configured from cfg. It panics on a missing dependency, an invalid Config,
// no route, or two routes of one name (wiring bugs).
func NewRouted(cfg Config, claims Claims, routes []Route, logger zerolog.Logger, m *telemetry.Metrics) *Processor {
	if claims == nil || len(routes) == 0 || m == nil {
		panic("processing.New: claims, gateway and metrics are required")
	}
	if err := cfg.Validate(); err != nil {
		panic("processing.New: invalid Config: " + err.Error())
	}
	p := &Processor{cfg: cfg, claims: claims, log: logger.With().Str("component", "processing").Logger(), m: m, tr: cfg.Tracing,
		byName: map[string]*routed{}}
	for _, rt := range routes {
		if rt.Gateway == nil || rt.Weight < 0 {
			panic("processing.NewRouted: a route needs a gateway and a weight ≥ 0")
		}
		name := rt.Gateway.Name()
		if _, dup := p.byName[name]; dup {
			panic("processing.NewRouted: two gateways named " + name)
		}
		r := &routed{Route: rt, name: name, guard: NewGuard(cfg.GuardConfig(name), logger, m)}
		p.gws = append(p.gws, r)
		p.byName[name] = r
	}
	p.gw, p.guard = p.gws[0].Gateway, p.gws[0].guard
	return p
}

// Admit tells the consumer how many new messages it may pull now: -1 for no
// limit; 0 while the breaker is open, with how long until it half-opens; 1
// while it is half-open and nothing is in flight (the probe), and 0 with a
// short wait while the probe or any other message is still in flight.
// Pulling nothing while open, and one message at a time while half-open,
// keeps the backlog from burning its deliveries (docs/contract.md §6.6): a second
// message pulled during the probe would fail with ErrTooManyRequests and be
// nak'ed, costing it a delivery.
func (p *Processor) Admit() (limit int, wait time.Duration) {
	if len(p.gws) == 1 {
		return p.guard.Admit(int(p.inFlight.Load()))
	}
	// Several gateways: pull while any of them takes calls; a payment
	// whose gateway is probing or open fails over (failover, route.go).
	if stop, wait, _ := allBlocked(p.gws); stop {
		return 0, wait
	}
	return p.admitSum()
}

// Process runs one delivery through the flow and returns what to do with it.
// It never panics: a panic is recovered, logged with its stack and handled
// like any retryable failure (label "panic" when retried). ctx is the
// worker's hard-stop context: while it lives, in-flight work runs to the end.
//
// A retry on a message's last allowed delivery would leave it in the stream
// for good (JetStream does not redeliver it), so the decision there is a dead
// letter (exhausted) unless a row in processing is left for the sweeper to
// rescue (a released or unrecorded lease) or, for ClaimBusy, the holder of
// the live lease (this message's earlier delivery) carries the payment on.
func (p *Processor) Process(ctx context.Context, msg Message) (d Decision) {
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	var (
		req    *payment.Request
		held   *lease // the lease while it is ours to record or release
		waited time.Duration
	)
	// The held time feeds Little's bound of the gateway the message went
	// to (the first gateway's until it is routed).
	usedGuard := p.guard
	defer func(start time.Time) { usedGuard.Held(time.Since(start) - waited) }(time.Now())
	defer func() {
		if r := recover(); r != nil {
			d = p.recovered(ctx, msg, req, held, r)
		}
	}()

	req, err := payment.Decode(msg.Subject, msg.Data, p.cfg.Limits)
	if err != nil {
		return p.decide(msg, nil, 0, &PermanentError{Reason: payment.ReasonInvalid, Err: err})
	}
	key := req.EffectiveKey()
	annotate(ctx, req)
	ranked := p.rank(req)
	first := preferred(ranked)
	usedGuard = first.guard

	wctx, wspan := p.tr.Start(ctx, spanRateLimit)
	waited, err = first.guard.Wait(wctx)
	if err != nil {
		endSpan(wspan, err)
		return p.decide(msg, req, 0, p.stopped(ctx, fmt.Errorf("rate limiter: %w", err)))
	}
	wspan.End()

	if stop, wait, err := allBlocked(ranked); stop && !p.lastDelivery(msg) {
		// Claiming now would only cost an attempt: the call cannot be made.
		// (On the last delivery the claim goes ahead, so that the row is
		// recorded failed rather than left to the sweeper.)
		return p.decide(msg, req, 0, &RetryableError{After: wait, Err: err})
	}

	// A claim is one short transaction, which Claims bounds (by half the
	// lease, at least 1 s), so that an unreachable database fails the
	// delivery (to be retried) instead of holding it.
	cctx, cspan := p.tr.Start(ctx, spanClaim)
	claim, err := p.claims.Claim(cctx, payment.Claim{
		Key:         key,
		Fingerprint: req.Fingerprint(),
		PaymentID:   req.PaymentID,
		MerchantID:  req.MerchantID,
		CustomerID:  req.CustomerID,
		AmountMinor: req.AmountMinor,
		Currency:    req.Currency,
		Subject:     msg.Subject,
		Body:        msg.Data,
		StreamSeq:   msg.StreamSeq,
		Owner:       p.cfg.Owner,
		Lease:       p.cfg.Lease,
		Gateway:     first.name,
	})
	endClaim(cspan, claim, err)
	if err != nil {
		return p.decide(msg, req, 0, p.stopped(ctx, fmt.Errorf("claim %s: %w", key, err)))
	}
	switch claim.Kind {
	case payment.ClaimConflict:
		return p.decide(msg, req, 0, &PermanentError{Reason: payment.ReasonConflict,
			Err: fmt.Errorf("%w: key %q is stored for payment %s with a different fingerprint",
				ErrConflict, key, claim.Record.PaymentID)})
	case payment.ClaimDuplicate:
		o := claim.Record.Outcome()
		d := Decision{Action: ActionAck, Outcome: &o, Verdict: payment.VerdictDuplicate, PaymentID: req.PaymentID, Key: key}
		if claim.Record.Status == payment.StatusFailed && claim.Record.ErrorCode != payment.ErrorCodeRiskDenied {
			// This message already ended the row failed (its term was lost,
			// or a publish failed): dead-letter and announce it again; the
			// message ids make both idempotent.
			reason, cause := payment.ReasonGatewayRejected, errors.New("gateway rejected the payment")
			switch claim.Record.ErrorCode {
			case payment.ErrorCodeExhausted:
				reason, cause = payment.ReasonExhausted, ErrExhausted
			case payment.ErrorCodeInvalid:
				reason, cause = payment.ReasonInvalid, payment.ErrInvalid
			}
			d.Action = ActionTerm
			d.Err = &PermanentError{Reason: reason, Err: fmt.Errorf("%w: payment recorded failed (%s) after %d attempts",
				cause, claim.Record.ErrorCode, claim.Record.Attempts)}
			d.DeadLetter = &DeadLetter{Reason: reason, Error: safeText(req, d.Err.(*PermanentError).Err.Error())}
		}
		return d
	case payment.ClaimInFlight:
		return Decision{Action: ActionAck, Verdict: payment.VerdictInFlight, PaymentID: req.PaymentID, Key: key}
	case payment.ClaimBusy:
		d := p.decide(msg, req, 0, &RetryableError{After: claim.RetryAfter, Err: ErrLeaseHeld})
		d.Verdict = payment.VerdictBusy
		return d
	case payment.ClaimNew, payment.ClaimTakeover:
	default:
		return p.decide(msg, req, 0, fmt.Errorf("claim %s: unknown result %d", key, claim.Kind))
	}

	held = &lease{key: key, attempt: claim.Attempt, ambiguous: claim.Record.Ambiguous, gw: first, ranked: ranked}
	if d, ok := p.onStoredGateway(ctx, msg, req, claim, held); !ok {
		held = nil
		return d
	}
	d = p.charged(ctx, msg, req, claim, held)
	held = nil
	return d
}

// lease is a claim this delivery holds: what Complete and Release present,
// and whether the row was ambiguous (some earlier attempt may have charged)
// when claimed.
type lease struct {
	key       string
	attempt   int
	ambiguous bool
	// calls are the gateway calls made under the lease, recorded with its
	// completion or release (payment_attempts). Only the goroutine running
	// Process touches them.
	calls []payment.Attempt
	// gw is the gateway the row is on (stored at the claim, moved only by
	// failover); routedTo the gateways this lease left; ranked the
	// payment's gateways in preference order.
	gw       *routed
	routedTo []string
	ranked   []*routed
	// keeper extends the lease while a call runs (keepLease).
	keeper leaseKeeper
	// req is the request every charge of the lease sends (the key's first
	// claim's, docs/contract.md §5).
	req *payment.Request
}

// charged runs the gateway part of a held claim: the charge body is the one
// stored by the key's first claim (docs/contract.md §5), a replay of a
// failed row that may have charged looks the charge up first (§6.8), and the
// answer is recorded.
func (p *Processor) charged(ctx context.Context, msg Message, req *payment.Request, claim payment.ClaimResult, l *lease) Decision {
	creq := req
	if claim.Kind == payment.ClaimTakeover && claim.Request != nil {
		stored, err := payment.Decode(msg.Subject, claim.Request, p.cfg.Limits)
		if err != nil {
			// The stored request no longer validates (a lowered limit):
			// settle it failed rather than retry it for ever (§6.9) —
			// after a lookup, when an earlier attempt may have charged.
			return p.fail(ctx, msg, req, l, l.ambiguous,
				payment.Completion{Status: payment.StatusFailed, ErrorCode: payment.ErrorCodeInvalid},
				&PermanentError{Reason: payment.ReasonInvalid, Err: fmt.Errorf("stored request: %w", err)})
		}
		if stored.Fingerprint() == req.Fingerprint() {
			creq = stored
		}
	}
	if claim.Kind == payment.ClaimTakeover && claim.From == payment.StatusFailed && l.ambiguous {
		// A replay of a row recorded failed after an attempt that may have
		// charged: the gateway may have forgotten the key by now, so ask
		// before charging again.
		found, err := p.lookup(ctx, l)
		switch {
		case err != nil:
			return p.unresolved(ctx, msg, req, l, fmt.Errorf("look up %s before a replay: %w", l.key, err))
		case found.Found:
			return p.complete(ctx, msg, req, l, payment.Completion{Status: payment.StatusSucceeded,
				GatewayChargeID: found.ChargeID, Ambiguous: true}, nil)
		}
	}
	if p.risk != nil {
		if d, done := p.riskCheck(ctx, msg, req, creq, claim, l); done {
			return d
		}
	}
	l.req = creq
	res, err := p.charge(ctx, creq, l)
	return p.record(ctx, msg, req, l, res, err)
}

// stopped marks err as a shutdown when ctx, the worker's hard-stop context,
// has ended: the failure then says nothing about the payment.
func (p *Processor) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ErrShutdown) {
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	return err
}

// recovered turns a panic recovered by Process into a decision: a panic is a
// retryable failure. A held lease is released, or, on the last
// allowed delivery, recorded failed and dead-lettered exhausted like any
// other retryable failure there; otherwise a payment that panics every time
// would be released, re-published by the sweeper and retried for ever.
// Without a lease, decide dead-letters the last delivery instead of losing it.
func (p *Processor) recovered(ctx context.Context, msg Message, req *payment.Request, held *lease, r any) (d Decision) {
	p.m.Panics.Inc()
	ev := p.log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).
		Uint64("stream_seq", msg.StreamSeq).Uint64("deliveries", msg.NumDelivered)
	if req != nil {
		ev = ev.Str("payment_id", req.PaymentID).Str("idempotency_key", req.EffectiveKey())
	}
	ev.Msg("panic while processing a payment")
	err := fmt.Errorf("panic: %v", r)

	defer func() {
		if r2 := recover(); r2 != nil {
			// Cleaning up panicked as well: retry, and let the lease (if
			// any) expire on its own.
			p.m.Panics.Inc()
			p.log.Error().Interface("panic", r2).Bytes("stack", debug.Stack()).
				Uint64("stream_seq", msg.StreamSeq).Msg("panic while cleaning up after a panic")
			d = Decision{Action: ActionRetry, Delay: p.backoff(msg.NumDelivered), Verdict: payment.VerdictPanic, Err: err}
			if req != nil {
				d.PaymentID, d.Key = req.PaymentID, req.EffectiveKey()
			}
		}
	}()

	attempt := 0
	if held != nil {
		attempt = held.attempt
		// The panic may have struck during the gateway call: ambiguous.
		if p.lastDelivery(msg) {
			return p.fail(ctx, msg, req, held, true,
				payment.Completion{Status: payment.StatusFailed, ErrorCode: payment.ErrorCodeExhausted},
				&PermanentError{Reason: payment.ReasonExhausted,
					Err: fmt.Errorf("%w after %d deliveries: %w", ErrExhausted, msg.NumDelivered, err)})
		}
		p.release(ctx, payment.Release{Key: held.key, Attempt: held.attempt, Owner: p.cfg.Owner, Attempts: held.calls, Ambiguous: true})
	}
	d = p.decide(msg, req, attempt, err)
	if d.Action == ActionRetry {
		d.Verdict = payment.VerdictPanic
	}
	return d
}

// charge calls the gateway through the breaker, extending the lease l in
// the store while the call runs.
func (p *Processor) charge(ctx context.Context, req *payment.Request, l *lease) (payment.ChargeResult, error) {
	defer p.keepLease(ctx, l).stop()
	for {
		res, err := p.chargeOn(ctx, req, l)
		if !notSent(err) || ctx.Err() != nil {
			return res, err
		}
		// The gateway surely did not charge: try the next one, if any
		// takes calls, once the row says so (docs/contract.md §5).
		to := next(l.ranked, l)
		if !p.failover(ctx, l, to, err) {
			return res, err
		}
		if _, werr := to.guard.Wait(ctx); werr != nil {
			return res, p.stopped(ctx, fmt.Errorf("rate limiter: %w", werr))
		}
	}
}

// chargeOn makes one charge call on l's gateway, through its guard.
func (p *Processor) chargeOn(ctx context.Context, req *payment.Request, l *lease) (payment.ChargeResult, error) {
	g := l.gw
	release, err := p.slot(ctx, g)
	if err != nil {
		return payment.ChargeResult{}, err
	}
	defer release()
	start := time.Now()
	bctx, bspan := p.startBreaker(ctx, g)
	res, err := g.guard.Execute(func() (payment.ChargeResult, error) {
		gctx, gspan := p.startCall(bctx, spanCharge, l)
		res, err := g.Gateway.Charge(gctx, payment.Charge{
			IdempotencyKey: l.key,
			PaymentID:      req.PaymentID,
			MerchantID:     req.MerchantID,
			Currency:       req.Currency,
			PaymentMethod:  req.PaymentMethod,
			Description:    req.Description,
			AmountMinor:    req.AmountMinor,
		})
		if err == nil && res.Status != payment.StatusSucceeded && res.Status != payment.StatusDeclined {
			// Against the Gateway contract. Recording it would fail on
			// every retry (the store takes final statuses only); treat it
			// as a malformed answer, which the breaker counts.
			res, err = payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassTrouble, Code: payment.CodeMalformedResponse,
				Message: "result is neither succeeded nor declined"}
		}
		endCall(gspan, res, err)
		call := payment.ChargeAttempt(start, time.Since(start), res, err)
		call.Gateway = g.name
		l.calls = append(l.calls, call)
		if mayHaveCharged(err) {
			l.ambiguous = true
		}
		return res, err
	})
	endBreaker(bspan, err)
	if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
		p.observe(err)
	}
	telemetry.ObserveWithTrace(bctx, p.m.GatewayDuration, time.Since(start).Seconds())
	p.m.GatewayCalls.WithLabelValues(callLabel(res, err)).Inc()
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		_, wait := g.guard.blocked()
		if wait <= 0 {
			wait = halfOpenPoll
		}
		return res, &RetryableError{After: wait, Err: fmt.Errorf("gateway breaker: %w", err)}
	}
	if ge, ok := errors.AsType[*payment.GatewayError](err); ok && !ge.Class.Final() && ge.RetryAfter > 0 {
		// The gateway's Retry-After becomes the one earliest-retry time
		// that decide reads.
		return res, &RetryableError{After: ge.RetryAfter, Err: err}
	}
	return res, err
}

// callLabel names a gateway call's result for metrics: succeeded, declined,
// the failure class of a *payment.GatewayError, breaker_open, canceled, or
// trouble for any other error (a deadline, say).
func callLabel(res payment.ChargeResult, err error) string {
	switch {
	case err == nil && res.Status == payment.StatusDeclined:
		return "declined"
	case err == nil:
		return "succeeded"
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return "breaker_open"
	}
	if ge, ok := errors.AsType[*payment.GatewayError](err); ok {
		return ge.Class.String()
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	return payment.ClassTrouble.String()
}

// record turns the gateway's answer into a fenced write and a decision.
func (p *Processor) record(ctx context.Context, msg Message, req *payment.Request, l *lease, res payment.ChargeResult, err error) Decision {
	maybe := mayHaveCharged(err)
	gwErr, isGatewayErr := errors.AsType[*payment.GatewayError](err)
	switch {
	case err == nil:
		return p.complete(ctx, msg, req, l, payment.Completion{
			Status: res.Status, GatewayChargeID: res.ChargeID, ErrorCode: res.DeclineCode,
		}, nil)
	case isGatewayErr && gwErr.Class.Final():
		code := gwErr.Code
		if code == "" {
			code = fmt.Sprintf("http_%d", gwErr.StatusCode)
		}
		return p.fail(ctx, msg, req, l, l.ambiguous, payment.Completion{Status: payment.StatusFailed, ErrorCode: code},
			&PermanentError{Reason: payment.ReasonGatewayRejected, Err: err})
	case ctx.Err() != nil:
		// Hard stop: give the lease back so the redelivery needs no wait.
		// On the last delivery the released row is rescued by the sweeper.
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls, Ambiguous: maybe})
		return p.decide(msg, req, l.attempt, fmt.Errorf("%w: %w", ErrShutdown, err))
	case p.lastDelivery(msg) && p.misconfigured.Load() != nil:
		// The gateway's latest answer refused our credentials
		// (docs/contract.md §5: 401, 403; observe clears the mark on any
		// other answer): this call was refused, or the breaker those
		// refusals opened kept it from being made. The payment is not at
		// fault: it must not end failed and dead-lettered exhausted as if it
		// were. Give the lease back, held like a retry. The consumer's
		// safety-net delivery (MaxDeliver+1) finds the lease held and is
		// nak'ed without a dead letter, or takes it over and comes here
		// again (or charges, if the credentials work by then); then, while
		// the row stays in processing, the sweeper re-publishes the
		// row once lease and grace have passed, with fresh deliveries, until
		// the credentials are fixed (the operator sees /readyz).
		d := p.decide(msg, req, l.attempt, err)
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls,
			Hold: holdFor(err, d.Delay), Ambiguous: maybe})
		return d
	case p.lastDelivery(msg):
		return p.fail(ctx, msg, req, l, l.ambiguous || maybe,
			payment.Completion{Status: payment.StatusFailed, ErrorCode: payment.ErrorCodeExhausted},
			&PermanentError{Reason: payment.ReasonExhausted, Err: fmt.Errorf("%w after %d deliveries: %w", ErrExhausted, msg.NumDelivered, err)})
	default:
		d := p.decide(msg, req, l.attempt, err)
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls,
			Hold: holdFor(err, d.Delay), Ambiguous: maybe})
		return d
	}
}

// holdFor is how long a released lease stays held: until the earliest time
// a retry may call (a Retry-After, the end of a lease), and at least half the
// nak delay, which the redelivery never comes before. The sweeper and other
// deliveries thus never call before the retry is due (docs/contract.md
// §6.5), and the redelivery itself does not find its own lease still held.
func holdFor(err error, delay time.Duration) time.Duration {
	hold := delay / 2
	if retry, ok := errors.AsType[*RetryableError](err); ok {
		hold = max(hold, min(retry.After, delay))
	}
	return hold
}

// mayHaveCharged reports whether a failed call may have charged although no
// result came back: a timeout, a 5xx, a cancellation mid-call, anything
// unclassified. A call refused by the breaker was never made, and a
// classified answer that says "not charged" (409, 429, 4xx) moved no money.
func mayHaveCharged(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return false
	}
	if ge, ok := errors.AsType[*payment.GatewayError](err); ok {
		return ge.Class.Ambiguous() && !ge.NotSent
	}
	return true
}

// fail records a payment failed — after a lookup when an attempt may have
// charged (ambiguous), so that a recorded failed always means no money moved
// (docs/contract.md §6.8): a charge found is recorded succeeded with its
// charge id; no charge, failed as c says. When the lookup cannot be
// answered, see unresolved.
func (p *Processor) fail(ctx context.Context, msg Message, req *payment.Request, l *lease, ambiguous bool, c payment.Completion, cause *PermanentError) Decision {
	if !ambiguous {
		return p.complete(ctx, msg, req, l, c, cause)
	}
	found, err := p.lookup(ctx, l)
	switch {
	case err != nil:
		return p.unresolved(ctx, msg, req, l, fmt.Errorf("look up %s before recording failed (%s): %w", l.key, cause.Err, err))
	case found.Found:
		return p.complete(ctx, msg, req, l, payment.Completion{Status: payment.StatusSucceeded,
			GatewayChargeID: found.ChargeID, Ambiguous: true}, nil)
	}
	if to := next(l.ranked, l); to != nil && cause.Reason == payment.ReasonExhausted && l.req != nil {
		// The gateway answered 404: it made no charge under the key and
		// has none in flight. Rather than end the payment failed, fail
		// over to the next gateway and charge there (docs/contract.md §5).
		l.ambiguous = false
		if p.failover(ctx, l, to, errors.New("lookup: no charge under the key")) {
			if _, err := to.guard.Wait(ctx); err != nil {
				return p.unresolved(ctx, msg, req, l, p.stopped(ctx, fmt.Errorf("rate limiter: %w", err)))
			}
			res, err := p.charge(ctx, l.req, l)
			return p.record(ctx, msg, req, l, res, err)
		}
		l.ambiguous = true
	}
	c.Ambiguous = true
	return p.complete(ctx, msg, req, l, c, cause)
}

// onStoredGateway points l at the gateway stored on the claimed row: a
// new row holds the one chosen for the claim, a take-over keeps the one the
// payment was sent to (docs/contract.md §5). A row on a gateway this worker
// does not route to (its configuration changed) fails over when that
// gateway cannot have charged, and is otherwise released and retried: only
// that gateway can say what became of the payment. It reports false, with
// the decision, when the payment cannot go on here.
func (p *Processor) onStoredGateway(ctx context.Context, msg Message, req *payment.Request, claim payment.ClaimResult, l *lease) (Decision, bool) {
	name := claim.Record.Gateway
	if name == "" || name == l.gw.name || len(p.gws) == 1 {
		// A fleet of one gateway: rows recorded under another name
		// (PAYSTREAM_GATEWAY_NAME changed) are this gateway's, as before.
		return Decision{}, true
	}
	if g, ok := p.gateway(name); ok {
		l.gw = g
		return Decision{}, true
	}
	err := fmt.Errorf("payment %s is on gateway %q, which this worker does not route to", l.key, name)
	l.gw = &routed{name: name}
	if p.failover(ctx, l, preferred(l.ranked), err) {
		return Decision{}, true
	}
	d := p.decide(msg, req, l.attempt, err)
	p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Hold: holdFor(err, d.Delay),
		Ambiguous: l.ambiguous})
	return d, false
}

// unresolved handles a lookup that could not be answered: a retry while
// deliveries remain; on the last one the row becomes unknown, the message is
// dead-lettered exhausted, and the reconciler settles the row later
// (docs/contract.md §6.8).
func (p *Processor) unresolved(ctx context.Context, msg Message, req *payment.Request, l *lease, err error) Decision {
	if ctx.Err() != nil {
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls, Ambiguous: true})
		return p.decide(msg, req, l.attempt, fmt.Errorf("%w: %w", ErrShutdown, err))
	}
	if !p.lastDelivery(msg) {
		d := p.decide(msg, req, l.attempt, err)
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls,
			Hold: holdFor(err, d.Delay), Ambiguous: true})
		return d
	}
	return p.complete(ctx, msg, req, l, payment.Completion{Status: payment.StatusUnknown, Ambiguous: true},
		&PermanentError{Reason: payment.ReasonExhausted, Err: fmt.Errorf("%w after %d deliveries, outcome unknown: %w",
			ErrExhausted, msg.NumDelivered, err)})
}

// lookup asks the gateway, through the breaker, whether it charged under key.
// The call, when the breaker let it through, is added to l's calls.
func (p *Processor) lookup(ctx context.Context, l *lease) (payment.LookupResult, error) {
	var found payment.LookupResult
	g := l.gw
	release, err := p.slot(ctx, g)
	if err != nil {
		return found, err
	}
	defer release()
	bctx, bspan := p.startBreaker(ctx, g)
	_, err = g.guard.Execute(func() (payment.ChargeResult, error) {
		var err error
		start := time.Now()
		gctx, gspan := p.startCall(bctx, spanLookup, l)
		found, err = g.Gateway.Lookup(gctx, l.key)
		endLookup(gspan, found, err)
		call := payment.LookupAttempt(start, time.Since(start), found, err)
		call.Gateway = g.name
		l.calls = append(l.calls, call)
		p.observe(err)
		return payment.ChargeResult{}, err
	})
	endBreaker(bspan, err)
	switch {
	case err != nil:
		p.m.Lookups.WithLabelValues("error").Inc()
	case found.Found:
		p.m.Lookups.WithLabelValues("found").Inc()
	default:
		p.m.Lookups.WithLabelValues("not_found").Inc()
	}
	return found, err
}

// keepLease extends l in the store every third of the lease while a call
// runs, when Claims can (LeaseExtender); the returned keeper's stop ends
// that and waits for an extension under way. A fenced extension means the
// lease is lost: the call goes on (its writes will be fenced), and it is
// logged. The keeper lives in l, so that keeping a lease costs a timer and
// its callback, not a set of closures and captured variables, per call.
func (p *Processor) keepLease(ctx context.Context, l *lease) *leaseKeeper {
	k := &l.keeper
	ext, ok := p.claims.(LeaseExtender)
	if !ok {
		return k
	}
	k.p, k.ext, k.ctx, k.l, k.every = p, ext, ctx, l, p.cfg.Lease/3
	k.mu.Lock()
	k.stopped = false // a lease may be kept again, for a later call
	k.running.Add(1)
	k.t = time.AfterFunc(k.every, k.extend)
	k.mu.Unlock()
	return k
}

// leaseKeeper extends a lease while a call runs (keepLease).
type leaseKeeper struct {
	p     *Processor
	ext   LeaseExtender
	ctx   context.Context
	l     *lease
	every time.Duration

	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup // the extension due or under way
	t       *time.Timer    // nil: nothing to keep (no LeaseExtender)
}

// extend runs on the timer: one extension, then the next one is due.
func (k *leaseKeeper) extend() {
	defer k.running.Done()
	ectx, cancel := context.WithTimeout(context.WithoutCancel(k.ctx), k.every)
	err := k.ext.ExtendLease(ectx, k.l.key, k.l.attempt, k.p.cfg.Owner, k.p.cfg.Lease)
	cancel()
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case errors.Is(err, payment.ErrFenced):
		k.p.log.Warn().Str("idempotency_key", k.l.key).Int("attempt", k.l.attempt).
			Msg("lease lost during the gateway call; its outcome will be fenced")
		return
	case err != nil:
		k.p.log.Warn().Err(err).Str("idempotency_key", k.l.key).Msg("extend lease")
	}
	if !k.stopped {
		k.running.Add(1)
		k.t.Reset(k.every)
	}
}

// stop ends the extensions and waits for one under way.
func (k *leaseKeeper) stop() {
	k.mu.Lock()
	k.stopped = true
	if k.t != nil && k.t.Stop() {
		k.running.Done() // the pending extension will not run
	}
	k.mu.Unlock()
	k.running.Wait()
}

// complete records a final row and returns the decision announcing it. cause,
// when set, is the permanent error that dead-letters the message as well.
func (p *Processor) complete(ctx context.Context, msg Message, req *payment.Request, l *lease, c payment.Completion, cause *PermanentError) Decision {
	key, attempt := req.EffectiveKey(), l.attempt
	c.Key, c.Attempt, c.Owner, c.Gateway, c.Attempts = key, attempt, p.cfg.Owner, l.gw.name, l.calls
	// Record even if the worker is being stopped hard: the gateway answered,
	// and losing the answer costs a second (idempotent) call. Claims bounds
	// the write (store.CompleteTimeout).
	wctx, rspan := p.tr.Start(context.WithoutCancel(ctx), spanRecord)
	rec, err := p.claims.Complete(wctx, c)
	endRecord(rspan, rec, err)
	if errors.Is(err, payment.ErrFenced) {
		// Another delivery took the key over, or the row is already final
		// (a committed write whose answer was lost). The redelivery's claim
		// tells which; even after the last delivery the consumer gets one
		// more (consumer.Config.ConsumerConfig), for this.
		d := p.decide(msg, req, attempt, &RetryableError{Err: fmt.Errorf("record %s: %w", key, err)})
		d.Verdict = payment.VerdictFenced
		return d
	}
	if err != nil {
		// The lease stays until it expires; the redelivery (or, after the
		// last delivery, the sweeper) then takes over and the gateway
		// replays its answer for the same key.
		return p.decide(msg, req, attempt, fmt.Errorf("record %s: %w", key, err))
	}
	d := Decision{Action: ActionAck, Verdict: payment.StatusVerdict(rec.Status), PaymentID: req.PaymentID, Key: key}
	if rec.Status.Final() {
		// An unknown row is not announced until the reconciler settles it.
		o := rec.Outcome()
		d.Outcome = &o
	}
	if cause != nil {
		d.Action = ActionTerm
		d.DeadLetter = &DeadLetter{Reason: cause.Reason, Error: safeText(req, cause.Err.Error())}
		d.Verdict = cause.Reason.Verdict()
		d.Err = cause
	}
	return d
}

// release gives a lease back, even when ctx has ended; failure only delays
// the next take-over until the lease expires, so it is logged, not returned.
func (p *Processor) release(ctx context.Context, r payment.Release) {
	// Claims bounds the release (5 s).
	ctx, span := p.tr.Start(context.WithoutCancel(ctx), spanRelease)
	err := p.claims.Release(ctx, r)
	endSpan(span, err)
	if err != nil && !errors.Is(err, payment.ErrFenced) {
		p.log.Warn().Err(err).Str("idempotency_key", r.Key).Msg("release lease")
	}
}

func (p *Processor) lastDelivery(msg Message) bool {
	return msg.NumDelivered >= uint64(p.cfg.MaxDeliver)
}

// decide classifies err once into a decision: permanent errors
// dead-letter, everything else is retried with backoff, never before the
// error's own earliest retry time; a shutdown is retried after the base delay
// without counting as a failure. On the last allowed delivery a retryable
// failure, shutdown included, with no lease of ours (attempt 0) dead-letters
// exhausted, since a nak there would leave the message in the stream with no
// row for the sweeper to find; a held lease is recorded by record instead.
func (p *Processor) decide(msg Message, req *payment.Request, attempt int, err error) Decision {
	d := Decision{Err: err}
	if req != nil {
		d.PaymentID, d.Key = req.PaymentID, req.EffectiveKey()
	}
	var perm *PermanentError
	if errors.As(err, &perm) {
		d.Action = ActionTerm
		d.DeadLetter = &DeadLetter{Reason: perm.Reason, Error: safeText(req, perm.Err.Error())}
		d.Verdict = perm.Reason.Verdict()
		return d
	}
	d.Action = ActionRetry
	if errors.Is(err, ErrShutdown) {
		d.Verdict = payment.VerdictShutdown
		d.Delay = p.cfg.RetryBackoff
	} else {
		d.Verdict = payment.VerdictRetry
		d.Delay = p.backoff(msg.NumDelivered)
		if retry, ok := errors.AsType[*RetryableError](err); ok && retry.After > d.Delay {
			d.Delay = retry.After + jitter(p.cfg.RetryBackoff)
		}
	}
	if p.lastDelivery(msg) && attempt == 0 && !errors.Is(err, ErrLeaseHeld) {
		// No lease of ours to record against, and no delivery left: dead
		// letter rather than leave the message silently in the stream.
		cause := fmt.Errorf("%w after %d deliveries: %w", ErrExhausted, msg.NumDelivered, err)
		d.Action, d.Delay = ActionTerm, 0
		d.Verdict = payment.VerdictExhausted
		d.DeadLetter = &DeadLetter{Reason: payment.ReasonExhausted, Error: safeText(req, cause.Error())}
		d.Err = &PermanentError{Reason: payment.ReasonExhausted, Err: cause}
	}
	return d
}

// backoff is the retry delay after the n-th delivery: base·2^(n-1) capped at
// the maximum, with equal jitter (half fixed, half random).
func (p *Processor) backoff(n uint64) time.Duration {
	return Backoff(p.cfg.RetryBackoff, p.cfg.RetryBackoffMax, n)
}

// Backoff returns d = base·2^(n-1), capped at max, with equal jitter: a value
// in [d/2, d]. n below 1 counts as 1; a base that is not positive counts as
// max, and a max that is not positive gives 0. It never overflows.
func Backoff(base, max time.Duration, n uint64) time.Duration {
	if max <= 0 {
		return 0
	}
	if n < 1 {
		n = 1
	}
	d := max
	// Compare before shifting: base<<shift may wrap around to a small
	// positive value.
	if shift := n - 1; base > 0 && shift < 63 && base <= max>>shift {
		d = base << shift
	}
	half := d / 2
	return half + jitter(d-half)
}

// jitter returns a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// safeText returns s fit for a dead-letter header: the request's payment
// method and every raw card number are masked, whatever echoed them (a
// gateway's error message, say).
func safeText(req *payment.Request, s string) string {
	if req != nil && len(req.PaymentMethod) >= 4 {
		s = strings.ReplaceAll(s, req.PaymentMethod, "[payment_method]")
	}
	if masked, changed := payment.MaskCardNumbers([]byte(s)); changed {
		s = string(masked)
	}
	return s
}
