package processing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/telemetry"
)

// GuardConfig configures the Guard of one gateway. Like Config it has no
// defaults: the worker fills it from the settings (each field names its
// setting), and NewGuard panics when a field is out of range.
type GuardConfig struct {
	// Gateway is the gateway's name (Gateway.Name): the label of the
	// guard's metrics and the key of its fleet records. Required.
	Gateway string
	// RateLimit caps this process's calls per second to the gateway
	// (PAYSTREAM_RATE_LIMIT), ≥ 0; 0 is no cap. A fleet share (SetShare)
	// lowers the limit further, never raises it above this cap.
	RateLimit float64
	// RateBurst is the rate limiter's burst (PAYSTREAM_RATE_BURST), at
	// least 1. Under a fleet share the burst is at most one second of the
	// share, so that the fleet's bursts add up to no more than its budget.
	RateBurst int
	// BreakerFailures is the number of consecutive failures that open this
	// process's breaker (PAYSTREAM_BREAKER_FAILURES). At least 1.
	BreakerFailures uint32
	// BreakerOpenTimeout is how long the breaker stays open
	// (PAYSTREAM_BREAKER_OPEN_TIMEOUT). Must be > 0.
	BreakerOpenTimeout time.Duration
	// Concurrency bounds the messages in flight for this gateway
	// (PAYSTREAM_GATEWAY_CONCURRENCY), ≥ 0; 0 means no bound of the guard's
	// own (the consumer's slots, PAYSTREAM_CONCURRENCY, still bound them).
	// With Adaptive it is the adaptive limit's ceiling.
	Concurrency int
	// Adaptive lets the limit move between 1 and Concurrency by AIMD
	// (PAYSTREAM_GATEWAY_CONCURRENCY_MODE=aimd): it grows while latency
	// holds and shrinks on 429s, timeouts and rising latency. False keeps
	// it fixed at Concurrency. Adaptive needs Concurrency ≥ 1.
	Adaptive bool
}

// Validate returns nil, or one error listing every problem of c.
func (c GuardConfig) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Gateway != "", "gateway: required")
	check(c.RateLimit >= 0, "rate limit %v: must not be negative", c.RateLimit)
	check(c.RateBurst >= 1, "rate burst %d: must be at least 1", c.RateBurst)
	check(c.BreakerFailures >= 1, "breaker failures %d: must be at least 1", c.BreakerFailures)
	check(c.BreakerOpenTimeout > 0, "breaker open timeout %v: must be greater than 0", c.BreakerOpenTimeout)
	check(c.Concurrency >= 0, "gateway concurrency %d: must not be negative", c.Concurrency)
	check(!c.Adaptive || c.Concurrency >= 1, "adaptive concurrency needs a gateway concurrency of at least 1, got %d", c.Concurrency)
	return errors.Join(errs...)
}

// ErrFleetOpen is the error of a call refused because the gateway is down for
// the fleet (SetFleet) and another worker holds the probe lease. It wraps
// gobreaker.ErrOpenState: a refused call was never made, and is retried.
var ErrFleetOpen = fmt.Errorf("gateway down for the fleet, another worker probes: %w", gobreaker.ErrOpenState)

// fleetPoll is how long the pull loop waits before asking Admit again while
// the gateway is down for the fleet and another worker probes.
const fleetPoll = 100 * time.Millisecond

// Guard protects one gateway: a rate limiter (the process's cap, lowered
// to its fleet share), a circuit breaker, a concurrency limit (fixed or
// AIMD, bounded by Little's law against the rate) and the fleet's view of
// the gateway. Its hot path reads atomics and takes one short lock per
// call; the fleet (package fleet, through the worker's wiring) reads Stats
// and pushes SetShare and SetFleet from its own goroutine. A Guard is safe
// for concurrent use.
type Guard struct {
	cfg     GuardConfig
	limiter *rate.Limiter
	breaker *gobreaker.CircuitBreaker[payment.ChargeResult]
	log     zerolog.Logger
	m       *telemetry.Metrics
	gm      telemetry.GuardGauges

	// openUntil is the UnixNano time at which an open breaker half-opens;
	// openedAt when it last opened (0 while it never did).
	openUntil atomic.Int64
	openedAt  atomic.Int64

	// Fleet state pushed by SetShare and SetFleet.
	share     atomic.Uint64 // math.Float64bits of the share
	fallback  atomic.Bool
	fleetDown atomic.Bool
	// proberUntil is the UnixNano end of this process's turn as the
	// fleet's prober (0: not the prober).
	proberUntil atomic.Int64

	// Counters the fleet reads (Stats): cumulative, never reset.
	asked     atomic.Int64 // Wait calls
	waiting   atomic.Int64 // Wait calls waiting now
	throttled atomic.Int64 // Wait calls that waited
	calls     atomic.Int64 // calls made
	failures  atomic.Int64 // calls that counted as breaker failures
	// lastOK is the UnixNano start of the latest successful call.
	lastOK atomic.Int64

	callsInFlight atomic.Int64
	// limit is the concurrency limit Admit reads: -1 none.
	limit atomic.Int64
	// slots are the calls counted in by acquire (several gateways);
	// slotFreed is closed, and replaced, when one is given back or the
	// limit changes (slots.go).
	slots     atomic.Int64
	slotFreed atomic.Pointer[chan struct{}]

	mu   sync.Mutex // guards conc and hold
	conc aimd
	hold time.Duration // smoothed time a message is held (Held)

	changed chan struct{}
	// shareChanged is closed, and replaced, when SetShare changes the
	// limit: the wait at the head of pace computes its wait again.
	shareChanged atomic.Pointer[chan struct{}]
	// pace queues the waits for the limiter (capacity 1: the head holds
	// it), in order.
	pace chan struct{}
}

// NewGuard returns the guard of cfg.Gateway. It panics on an invalid cfg or
// a nil m (wiring bugs).
func NewGuard(cfg GuardConfig, logger zerolog.Logger, m *telemetry.Metrics) *Guard {
	if m == nil {
		panic("processing.NewGuard: metrics are required")
	}
	if err := cfg.Validate(); err != nil {
		panic("processing.NewGuard: invalid GuardConfig: " + err.Error())
	}
	g := &Guard{cfg: cfg, m: m, gm: m.Guard(cfg.Gateway), changed: make(chan struct{}, 1), pace: make(chan struct{}, 1),
		log: logger.With().Str("component", "guard").Str("gateway", cfg.Gateway).Logger()}
	g.limiter = rate.NewLimiter(g.cap(), cfg.RateBurst)
	ch := make(chan struct{})
	g.shareChanged.Store(&ch)
	freed := make(chan struct{})
	g.slotFreed.Store(&freed)
	g.breaker = gobreaker.NewCircuitBreaker[payment.ChargeResult](gobreaker.Settings{
		Name:        cfg.Gateway,
		MaxRequests: 1,
		Timeout:     cfg.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.BreakerFailures
		},
		OnStateChange: g.onBreakerState,
		IsSuccessful: func(err error) bool {
			return !payment.IsBreakerFailure(err)
		},
		IsExcluded: func(err error) bool {
			// The caller's own cancellation says nothing of the gateway.
			return errors.Is(err, context.Canceled)
		},
	})
	g.conc = newAIMD(cfg)
	g.limit.Store(-1)
	if cfg.Concurrency > 0 {
		g.limit.Store(int64(g.conc.current()))
	}
	g.gm.ConcurrencyLimit.Set(float64(g.limit.Load()))
	m.SetBreakerState(cfg.Gateway, 0)
	return g
}

// Name returns the gateway's name.
func (g *Guard) Name() string { return g.cfg.Gateway }

// cap is the process's own rate cap as a limit.
func (g *Guard) cap() rate.Limit {
	if g.cfg.RateLimit > 0 {
		return rate.Limit(g.cfg.RateLimit)
	}
	return rate.Inf
}

func (g *Guard) onBreakerState(_ string, from, to gobreaker.State) {
	switch to {
	case gobreaker.StateOpen:
		now := time.Now()
		g.openedAt.Store(now.UnixNano())
		g.openUntil.Store(now.Add(g.cfg.BreakerOpenTimeout).UnixNano())
		g.m.SetBreakerState(g.cfg.Gateway, 2)
		g.log.Error().Str("from", from.String()).Dur("open_for", g.cfg.BreakerOpenTimeout).
			Msg("gateway circuit breaker opened: pausing pulls")
	case gobreaker.StateHalfOpen:
		g.m.SetBreakerState(g.cfg.Gateway, 1)
		g.log.Warn().Str("from", from.String()).Msg("gateway circuit breaker half-open: probing")
	case gobreaker.StateClosed:
		g.m.SetBreakerState(g.cfg.Gateway, 0)
		g.log.Info().Str("from", from.String()).Msg("gateway circuit breaker closed")
	}
	g.notify()
}

// notify wakes the fleet's loop (Changed) without blocking.
func (g *Guard) notify() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// Changed returns a channel that receives when the breaker changes state
// or the gateway looks down from here, so that the fleet publishes at once
// rather than at its next tick.
func (g *Guard) Changed() <-chan struct{} { return g.changed }

// BreakerState returns this process's breaker state: closed, half_open or
// open.
func (g *Guard) BreakerState() string {
	switch g.breaker.State() {
	case gobreaker.StateOpen:
		return "open"
	case gobreaker.StateHalfOpen:
		return "half_open"
	default:
		return "closed"
	}
}

// blocked reports whether a call would be refused now without being made —
// the breaker is open, or the gateway is down for the fleet and another
// worker probes — and how long until that may change.
func (g *Guard) blocked() (bool, time.Duration) {
	if g.fleetDown.Load() && !g.probing() || g.limiter.Limit() == 0 {
		return true, fleetPoll
	}
	if g.breaker.State() == gobreaker.StateOpen {
		wait := time.Until(time.Unix(0, g.openUntil.Load()))
		if wait <= 0 {
			wait = 10 * time.Millisecond
		}
		return true, wait
	}
	return false, 0
}

// Admit tells the consumer how many messages for this gateway may be in
// flight now, given that inFlight are: -1 for no limit; 0 with a wait while
// the breaker is open or the gateway is down for the fleet and another
// worker holds the probe lease; 1 while probing (a half-open breaker, or
// the fleet's probe lease held here) and nothing is in flight, 0 with a
// short wait while the probe runs; else the concurrency limit, if any.
func (g *Guard) Admit(inFlight int) (limit int, wait time.Duration) {
	if stop, wait := g.blocked(); stop {
		return 0, wait
	}
	if g.breaker.State() == gobreaker.StateHalfOpen || g.fleetDown.Load() {
		if inFlight > 0 {
			return 0, halfOpenPoll
		}
		return 1, 0
	}
	return int(g.limit.Load()), 0
}

// Wait waits for the rate limiter's permission to call, or for ctx, and
// returns how long it waited. While the share is 0 (before the fleet grants
// one) it waits for a share.
func (g *Guard) Wait(ctx context.Context) (time.Duration, error) {
	g.asked.Add(1)
	g.waiting.Add(1)
	start := time.Now()
	err := g.wait(ctx)
	g.waiting.Add(-1)
	waited := time.Since(start)
	if waited > time.Millisecond {
		g.throttled.Add(1)
	}
	telemetry.ObserveWithTrace(ctx, g.m.LimiterWait, waited.Seconds())
	return waited, err
}

// wait takes a token from the limiter, or waits for ctx. The waits queue
// in order on pace, and only the one at the head holds a reservation, so
// that the limiter never has more than one outstanding: when SetShare
// changes the limit, the head gives its reservation back — the latest one,
// whose token x/time/rate restores exactly — and reserves anew under the
// new limit, so that a message that queued under a small share (a
// newcomer's first grant) does not wait as if the share had stayed small.
// (Every wait reserving ahead and cancelling on a change, as before, lost
// or made up tokens: x/time/rate restores a cancelled reservation's token
// only when no later one was made, so a share that changed every fleet
// step left the rate far off it: 5 calls in 3 s under a share alternating
// 50 and 49.9, 487 under 50 and 40, TestGuardRateUnderChangingShare.) While
// the limit is 0 it waits for a share.
func (g *Guard) wait(ctx context.Context) error {
	select {
	case g.pace <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.pace }()
	for {
		changed := *g.shareChanged.Load()
		if g.limiter.Limit() == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
				continue
			}
		}
		r := g.limiter.Reserve()
		if !r.OK() {
			return fmt.Errorf("rate limiter: cannot reserve a call at limit %v", g.limiter.Limit())
		}
		delay := r.Delay()
		if delay == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			return ctx.Err()
		case <-t.C:
			return nil
		case <-changed:
			t.Stop()
			r.Cancel()
		}
	}
}

// Execute makes one gateway call, fn, through the breaker and the fleet's
// view: refused with ErrFleetOpen while the gateway is down for the fleet
// and another worker probes, with gobreaker's errors while this process's
// breaker refuses it. A call made feeds the concurrency limit with its
// latency and result.
func (g *Guard) Execute(fn func() (payment.ChargeResult, error)) (payment.ChargeResult, error) {
	if g.fleetDown.Load() && !g.probing() {
		return payment.ChargeResult{}, ErrFleetOpen
	}
	var (
		made  bool
		start time.Time
	)
	n := g.callsInFlight.Add(1)
	defer g.callsInFlight.Add(-1)
	res, err := g.breaker.Execute(func() (payment.ChargeResult, error) {
		made, start = true, time.Now()
		return fn()
	})
	if made {
		g.sample(start, time.Since(start), int(n), err)
	}
	return res, err
}

// sample feeds one call's result to the counters and the concurrency limit.
func (g *Guard) sample(start time.Time, latency time.Duration, inFlight int, err error) {
	if errors.Is(err, context.Canceled) {
		return // says nothing of the gateway
	}
	g.calls.Add(1)
	if payment.IsBreakerFailure(err) {
		g.failures.Add(1)
	} else if err == nil {
		for {
			last := g.lastOK.Load()
			if start.UnixNano() <= last || g.lastOK.CompareAndSwap(last, start.UnixNano()) {
				break
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.setLimit(g.conc.sample(time.Now(), latency, inFlight, congested(err)), g.littleBound())
}

// congested reports whether a call's result says the gateway is
// overloaded: a 429, or a timeout.
func congested(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if ge, ok := errors.AsType[*payment.GatewayError](err); ok {
		return ge.StatusCode == 429 || ge.Code == payment.CodeTimeout
	}
	return false
}

// littleQueue is how long, on average, a message may wait at the rate
// limiter: the queue that Little's bound allows beyond the messages being
// served.
const littleQueue = 500 * time.Millisecond

// littleBound is the most messages worth having in flight at the current
// rate limit (Little's law, L = λW): λ times the time a message is held
// (its wait at the limiter excluded) plus littleQueue, and one more. More
// would only queue at the rate limiter, their ack wait and lease running.
// 0 means no bound (no rate limit). Called with g.mu held.
func (g *Guard) littleBound() int {
	lim := g.limiter.Limit()
	w := g.hold
	if w <= 0 {
		w = g.conc.ewma
	}
	if lim == rate.Inf {
		return 0
	}
	return int(math.Ceil(float64(lim)*(w+littleQueue).Seconds())) + 1
}

// Held takes how long one message was in flight in the processor, its
// wait at the rate limiter excluded: the W of Little's law, smoothed.
func (g *Guard) Held(d time.Duration) {
	g.mu.Lock()
	if g.hold == 0 {
		g.hold = d
	} else {
		g.hold += (d - g.hold) / shortWeight
	}
	g.setLimit(g.conc.current(), g.littleBound())
	g.mu.Unlock()
}

// setLimit stores the concurrency limit Admit reads: the configured or
// adaptive limit, lowered to Little's bound; -1 when neither applies.
// Called with g.mu held, so that the stores keep the order of the
// computations.
func (g *Guard) setLimit(limit, bound int) {
	l := int64(-1)
	switch {
	case limit > 0 && bound > 0:
		l = int64(min(limit, bound))
	case limit > 0:
		l = int64(limit)
	case bound > 0:
		l = int64(bound)
	}
	if g.limit.Swap(l) != l {
		g.gm.ConcurrencyLimit.Set(float64(l))
		g.wakeSlots()
	}
}

// SetShare sets this process's share of the gateway's fleet-wide budget,
// in calls per second: the rate limit becomes the share, capped by
// RateLimit, with a burst of at most one second of it. fallback says that
// the share is the fallback of a fleet that cannot be reached (R divided by
// the last known fleet size), for metrics and status. A share of 0 or less
// stops calls.
func (g *Guard) SetShare(share float64, fallback bool) {
	lim := rate.Limit(max(share, 0))
	if c := g.cap(); c < lim {
		lim = c
	}
	burst := g.cfg.RateBurst
	if lim != rate.Inf {
		burst = max(1, min(burst, int(float64(lim))))
	}
	if lim != g.limiter.Limit() || burst != g.limiter.Burst() {
		g.limiter.SetBurst(burst)
		g.limiter.SetLimit(lim)
		next := make(chan struct{})
		close(*g.shareChanged.Swap(&next))
	}
	g.share.Store(math.Float64bits(share))
	g.fallback.Store(fallback)
	g.gm.Share.Set(share)
	g.gm.Fallback.Set(map[bool]float64{true: 1}[fallback])
	g.mu.Lock()
	g.setLimit(g.conc.current(), g.littleBound())
	g.mu.Unlock()
}

// probing reports whether this process is the fleet's prober now.
func (g *Guard) probing() bool {
	u := g.proberUntil.Load()
	return u != 0 && time.Now().UnixNano() < u
}

// SetFleet sets the fleet's view of the gateway: down when a quorum of the
// live workers says so, and until when this process may probe it (zero:
// it may not) — the end of its probe lease less a call's timeout, so that
// its last probe ends before another worker may take the lease. While the
// gateway is down for the fleet only the prober calls it, one message at a
// time.
func (g *Guard) SetFleet(down bool, proberUntil time.Time) {
	var until int64
	if !proberUntil.IsZero() {
		until = proberUntil.UnixNano()
	}
	g.proberUntil.Store(until)
	prober := g.probing()
	if g.fleetDown.Swap(down) != down {
		if down {
			g.log.Error().Bool("prober", prober).Msg("gateway down for the fleet: only the probe lease holder calls it")
		} else {
			g.log.Info().Msg("gateway up again for the fleet")
		}
	}
	v := 0.0
	switch {
	case down && prober:
		v = 1
	case down:
		v = 2
	}
	g.gm.FleetBreaker.Set(v)
}

// GuardStats is what a guard tells the fleet about itself.
type GuardStats struct {
	// Breaker is this process's breaker: closed, half_open or open;
	// OpenedAt when it last opened (zero if never).
	Breaker  string
	OpenedAt time.Time
	// Asked counts rate limiter waits, Throttled those that had to wait;
	// Calls the calls made, Failures those that counted as breaker
	// failures. All four only grow. Waiting is the waits under way.
	Asked, Throttled, Calls, Failures int64
	Waiting                           int
	// LastSuccess is when the latest successful call started (zero if
	// none).
	LastSuccess time.Time
	// Limit is the rate limit in force (+Inf none); Share and Fallback what
	// SetShare set (Share 0 before any).
	Limit    float64
	Share    float64
	Fallback bool
	// FleetDown and Prober are what SetFleet set.
	FleetDown, Prober bool
	// ConcurrencyLimit is the limit Admit applies (-1 none); CallsInFlight
	// the calls running now.
	ConcurrencyLimit int
	CallsInFlight    int
	// Latency is the smoothed call latency.
	Latency time.Duration
}

// Stats returns the guard's state for the fleet and for status.
func (g *Guard) Stats() GuardStats {
	s := GuardStats{
		Breaker:          g.BreakerState(),
		Asked:            g.asked.Load(),
		Throttled:        g.throttled.Load(),
		Waiting:          int(g.waiting.Load()),
		Calls:            g.calls.Load(),
		Failures:         g.failures.Load(),
		Limit:            float64(g.limiter.Limit()),
		Fallback:         g.fallback.Load(),
		FleetDown:        g.fleetDown.Load(),
		Prober:           g.probing(),
		ConcurrencyLimit: int(g.limit.Load()),
		CallsInFlight:    int(g.callsInFlight.Load()),
	}
	s.Share = math.Float64frombits(g.share.Load())
	if t := g.openedAt.Load(); t != 0 {
		s.OpenedAt = time.Unix(0, t)
	}
	if t := g.lastOK.Load(); t != 0 {
		s.LastSuccess = time.Unix(0, t)
	}
	g.mu.Lock()
	s.Latency = g.conc.ewma
	g.mu.Unlock()
	return s
}
