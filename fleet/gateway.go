package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/contract"
)

// Local is one worker's guard of one gateway as the fleet sees it: what it
// reports (Stats) and what the fleet sets on it (a budget share, the
// fleet's view of the breaker). processing.Guard is one, through a small
// adapter in the worker's wiring (package fleet does not import processing,
// nor processing fleet). Its methods are called from the Coordinator's
// goroutine while the guard serves calls.
type Local interface {
	// Stats returns the guard's counters and breaker.
	Stats() LocalStats
	// SetShare sets the rate limit to share calls per second (capped by
	// the process's own limit); fallback says the share is the fallback
	// of a fleet that cannot be reached.
	SetShare(share float64, fallback bool)
	// SetFleet says whether the gateway is down for the fleet and until
	// when this worker may probe it (zero: not at all).
	SetFleet(down bool, proberUntil time.Time)
	// Changed receives when the guard's breaker changes state.
	Changed() <-chan struct{}
}

// LocalStats is what a guard reports. The counters only grow.
type LocalStats struct {
	// Breaker is closed, half_open or open; OpenedAt when it last opened.
	Breaker  string
	OpenedAt time.Time
	// Asked counts rate limiter waits, Throttled those that had to wait;
	// Waiting is the waits under way.
	Asked, Throttled int64
	Waiting          int
	// Calls counts the calls made, Failures those that failed (breaker
	// failures).
	Calls, Failures int64
	// LastSuccess is the start of the latest successful call.
	LastSuccess time.Time
}

// Defaults of GatewayConfig.
const (
	DefaultShareInterval = time.Second
	DefaultQuorum        = 0.5
	DefaultErrorRatio    = 0.5
	DefaultMinCalls      = 20
	// defaultErrorWindow is how far back a member's calls and failures
	// count towards its vote.
	defaultErrorWindow = 10 * time.Second
	// maxCASTries bounds the compare-and-set retries of one step.
	maxCASTries = 8
	// stepTimeout bounds one step (or an interval, when longer): a fleet
	// that does not answer by then counts as unreachable.
	stepTimeout = 2 * time.Second
	// fleetMemory is how long a fleet size counts as known: the fallback
	// divides the budget by the largest fleet seen that recently, so that
	// a worker that saw only part of the fleet (at its start, say) does not
	// take too much.
	fleetMemory = time.Minute
)

// GatewayConfig configures a worker's Coordinator for one gateway. The
// zero value of each optional field means its default.
type GatewayConfig struct {
	// Bucket is the KV bucket; empty means contract.GatewaysBucket.
	Bucket string
	// WorkerID is this worker's id (required); Gateway the gateway's name
	// (required).
	WorkerID string
	Gateway  string
	// Budget is the fleet-wide budget R in calls per second
	// (PAYSTREAM_GATEWAY_BUDGET); 0 means none: no shares are set, the
	// process's own PAYSTREAM_RATE_LIMIT alone applies.
	Budget float64
	// Cap is the process's own rate limit (PAYSTREAM_RATE_LIMIT), the most
	// it ever wants; 0 means none (it may want all of Budget).
	Cap float64
	// Interval is how often the worker refreshes its record and share;
	// default DefaultShareInterval. TTL is how long a record lives without
	// refresh: a worker that dies keeps its share reserved that long;
	// default three intervals.
	Interval time.Duration
	TTL      time.Duration
	// Quorum: the gateway is down for the fleet when more than Quorum of
	// the live members vote down; default DefaultQuorum (a majority).
	// Breaker false turns the fleet's breaker off (shares only).
	Quorum  float64
	Breaker bool
	// ErrorRatio and MinCalls: a member with at least MinCalls calls in
	// the error window, ErrorRatio of them failed, votes down even while
	// its breaker stays closed (failures interleaved with successes).
	// Defaults DefaultErrorRatio, DefaultMinCalls.
	ErrorRatio float64
	MinCalls   int64
	// ProbeTTL is how long one worker holds the probe lease before another
	// may take it (the holder does not renew it, so that a holder that
	// cannot reach the gateway passes it on); default three intervals. The
	// worker sets it to twice the breaker's open timeout plus an interval,
	// so that each holder probes at least twice.
	ProbeTTL time.Duration
	// CallTimeout is the gateway call's timeout (PAYSTREAM_GATEWAY_TIMEOUT):
	// the lease holder starts no probe later than CallTimeout before its
	// lease ends, so that its last probe has ended when another worker may
	// take the lease. ProbeTTL must exceed it.
	CallTimeout time.Duration
	// Replicas of the bucket; zero means 1.
	Replicas int
	// NowFunc is the clock; nil means time.Now.
	NowFunc func() time.Time
}

// WithDefaults returns cfg with zero fields replaced by their defaults.
func (cfg GatewayConfig) WithDefaults() GatewayConfig {
	if cfg.Bucket == "" {
		cfg.Bucket = contract.GatewaysBucket
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultShareInterval
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 3 * cfg.Interval
	}
	if cfg.Quorum <= 0 {
		cfg.Quorum = DefaultQuorum
	}
	if cfg.ErrorRatio <= 0 {
		cfg.ErrorRatio = DefaultErrorRatio
	}
	if cfg.MinCalls <= 0 {
		cfg.MinCalls = DefaultMinCalls
	}
	if cfg.ProbeTTL <= 0 {
		cfg.ProbeTTL = 3 * cfg.Interval
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.NowFunc == nil {
		cfg.NowFunc = time.Now
	}
	return cfg
}

// GatewaysBucket creates or updates the gateways bucket. Liveness is in the
// records (Member.Expires), not in the bucket's TTL: a gateway's record
// lives as long as workers write it, and an hour after the last one.
func GatewaysBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	if bucket == "" {
		bucket = contract.GatewaysBucket
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "paystream gateway budgets, breaker votes and probe leases",
		History:     1,
		TTL:         time.Hour,
		Storage:     jetstream.MemoryStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: gateways bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// Coordinator keeps one worker's place in the fleet for one gateway: it
// publishes what the worker wants and how its breaker fares, holds a share
// of the budget and the fleet's view of the breaker, and pushes both onto
// the worker's guard (Local). Run drives it.
type Coordinator struct {
	cfg   GatewayConfig
	js    jetstream.JetStream
	local Local
	log   zerolog.Logger
	key   string

	// State of the Run goroutine only.
	kv          jetstream.KeyValue
	applied     float64    // the share set on local
	fallback    bool       // the share set is the fallback
	sizes       []sizeSeen // the fleet sizes seen within fleetMemory
	expires     time.Time  // our own record's end, as last written
	prev        LocalStats
	prevAt      time.Time
	want        float64
	window      []windowSample
	wrote       Member // our entry as last written
	down        bool
	proberUntil time.Time
}

// sizeSeen is a fleet size seen at a time.
type sizeSeen struct {
	at time.Time
	n  int
}

// seen notes the fleet size n at now, forgetting the sizes seen earlier
// that are no larger or older than fleetMemory.
func (c *Coordinator) seen(now time.Time, n int) {
	keep := c.sizes[:0]
	for _, s := range c.sizes {
		if now.Sub(s.at) < fleetMemory && s.n > n {
			keep = append(keep, s)
		}
	}
	c.sizes = append(keep, sizeSeen{at: now, n: n})
}

// knownSize is the largest fleet size seen within fleetMemory (0: none).
func (c *Coordinator) knownSize(now time.Time) int {
	n := 0
	for _, s := range c.sizes {
		if now.Sub(s.at) < fleetMemory {
			n = max(n, s.n)
		}
	}
	return n
}

// windowSample is one step's calls and failures.
type windowSample struct {
	at              time.Time
	calls, failures int64
}

// NewCoordinator returns a Coordinator of cfg over js for local. It panics
// on a missing dependency or name (wiring bugs).
func NewCoordinator(js jetstream.JetStream, cfg GatewayConfig, local Local, logger zerolog.Logger) *Coordinator {
	if js == nil || local == nil || cfg.WorkerID == "" || cfg.Gateway == "" {
		panic("fleet.NewCoordinator: jetstream, local, worker id and gateway are required")
	}
	cfg = cfg.WithDefaults()
	c := &Coordinator{cfg: cfg, js: js, local: local, key: "gw." + Key(cfg.Gateway),
		log: logger.With().Str("component", "fleet_gateway").Str("gateway", cfg.Gateway).Logger()}
	// Until it hears from the fleet a worker wants all it may use, and
	// holds nothing: it grows only into what the others leave free.
	c.want = c.top()
	if cfg.Budget > 0 {
		c.applied = math.NaN() // so that the first setShare applies
		c.setShare(0, false)
	}
	return c
}

// top is the most this worker may want: the budget, or its own cap when
// lower.
func (c *Coordinator) top() float64 {
	top := c.cfg.Budget
	if c.cfg.Cap > 0 && (top <= 0 || c.cfg.Cap < top) {
		top = c.cfg.Cap
	}
	return top
}

// Run takes part in the fleet until ctx ends: one step at once, then on
// every interval, every change of the gateway's record (a KV watch) and
// every change of the local breaker. A step that cannot reach KV is logged;
// once the worker's own record has expired, the share falls back to the
// budget divided by the last known number of workers, and the fleet's
// breaker to the local one. On return (ctx ended) the worker's entry is
// removed, so that its share is free at once, and Run returns nil.
func (c *Coordinator) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	var (
		w         jetstream.KeyWatcher
		updates   <-chan jetstream.KeyValueEntry
		stopWatch context.CancelFunc = func() {}
		watched   jetstream.KeyValue // the bucket handle w was made on
	)
	// The watch lives as long as Run: a failing step leaves it be (the
	// ordered consumer under it recovers when NATS comes back; stopping it
	// while NATS is away would block on the consumer's deletion). A watch
	// whose channel closed is made anew, and so is one made on a bucket
	// handle that a failed step dropped (the bucket may have been made
	// again, and an ordered consumer on a deleted stream stays open but
	// silent). Its context is its life: nats.go unsubscribes a watch once
	// the context given to Watch ends, in the background; Stop on return
	// deletes its consumer before Run returns.
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
		stopWatch()
	}()
	failing := false
	for {
		select {
		case <-ctx.Done():
			c.leave(ctx)
			return nil
		case <-t.C:
			t.Reset(c.cfg.Interval)
		case <-c.local.Changed():
		case _, ok := <-updates:
			if !ok {
				stopWatch()
				w, updates = nil, nil
			} else {
				drain(updates)
			}
		}
		sctx, cancel := context.WithTimeout(ctx, max(c.cfg.Interval, stepTimeout))
		err := c.step(sctx)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
		case errors.Is(err, errConflict):
			// Others wrote first every time: the fleet is there. Try
			// again at the next event.
		case err != nil:
			if !failing {
				c.log.Warn().Err(err).Msg("gateway record: cannot reach the fleet")
				failing = true
			}
			c.unreachable()
		default:
			if failing {
				c.log.Info().Msg("gateway record: the fleet is reachable again")
				failing = false
			}
			if c.kv != nil && (w == nil || watched != c.kv) {
				stopWatch()
				w, updates, stopWatch = c.watch(ctx)
				watched = c.kv
			}
		}
	}
}

// watch watches the gateway's record for updates until ctx ends or the
// returned stop is called; it returns a nil watcher (and a no-op stop) when
// the watch cannot be made within stepTimeout. The bound is a timer, not a
// deadline on the watch's context: nats.go ends a watch with its context,
// and a watch made under a step's timeout ended with the step, so that Run
// made it anew after every step, each time a new consumer on the server.
func (c *Coordinator) watch(ctx context.Context) (jetstream.KeyWatcher, <-chan jetstream.KeyValueEntry, context.CancelFunc) {
	wctx, stop := context.WithCancel(ctx)
	late := time.AfterFunc(stepTimeout, stop)
	w, err := c.kv.Watch(wctx, c.key, jetstream.UpdatesOnly())
	if !late.Stop() || err != nil {
		// Too late (the watch, if made, is ending) or failed.
		stop()
		return nil, nil, func() {}
	}
	return w, w.Updates(), stop
}

// drain empties ch without blocking, so that a burst of updates costs one
// step.
func drain(ch <-chan jetstream.KeyValueEntry) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

var errConflict = errors.New("fleet: gateway record changed under every try")

// step reads the gateway's record, computes this worker's next entry, the
// fleet's breaker and the probe lease, writes the record back by
// compare-and-set when anything changed (or the entry needs a refresh),
// and applies the share and the breaker view to the guard. A shrinking
// share is applied before the write, a growing one only after it, so that
// the guard never uses more than the record says it holds.
func (c *Coordinator) step(ctx context.Context) error {
	if c.kv == nil {
		kv, err := GatewaysBucket(ctx, c.js, c.cfg.Bucket, c.cfg.Replicas)
		if err != nil {
			return err
		}
		c.kv = kv
	}
	now := c.cfg.NowFunc()
	stats := c.local.Stats()
	c.observe(now, stats)
	for range maxCASTries {
		rec, rev, err := c.read(ctx)
		if err != nil {
			c.kv = nil
			return err
		}
		next, write := c.next(rec, now, stats)
		me := next.Workers[c.cfg.WorkerID]
		if write && c.cfg.Budget > 0 && me.Has < c.applied {
			c.setShare(me.Has, false)
		}
		if write {
			data, err := json.Marshal(next)
			if err != nil {
				return fmt.Errorf("fleet: gateway record: %w", err)
			}
			if rev == 0 {
				_, err = c.kv.Create(ctx, c.key, data)
			} else {
				_, err = c.kv.Update(ctx, c.key, data, rev)
			}
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			if err != nil {
				c.kv = nil
				return fmt.Errorf("fleet: write gateway record: %w", err)
			}
			c.wrote, c.expires = me, me.Expires
		}
		c.seen(now, len(next.live(now)))
		if c.cfg.Budget > 0 {
			c.setShare(c.wrote.Has, false)
		}
		var until time.Time
		if next.Down && next.Probe != nil && next.Probe.Holder == c.cfg.WorkerID {
			until = next.Probe.Expires.Add(-c.cfg.CallTimeout)
		}
		c.setFleet(next.Down, until)
		return nil
	}
	return errConflict
}

// read returns the gateway's record and its revision (0: none yet).
func (c *Coordinator) read(ctx context.Context) (GatewayRecord, uint64, error) {
	e, err := c.kv.Get(ctx, c.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return GatewayRecord{Gateway: c.cfg.Gateway}, 0, nil
	}
	if err != nil {
		return GatewayRecord{}, 0, fmt.Errorf("fleet: read gateway record: %w", err)
	}
	var rec GatewayRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		// A record we cannot read is replaced rather than kept for ever.
		c.log.Warn().Err(err).Msg("gateway record unreadable: replacing it")
		return GatewayRecord{Gateway: c.cfg.Gateway}, e.Revision(), nil
	}
	return rec, e.Revision(), nil
}

// observe turns the guard's counters into this worker's want and error
// window.
func (c *Coordinator) observe(now time.Time, s LocalStats) {
	if !c.prevAt.IsZero() && now.Sub(c.prevAt) < c.cfg.Interval/2 {
		return // a step between ticks (a watch event): too short to measure
	}
	if !c.prevAt.IsZero() {
		dt := now.Sub(c.prevAt).Seconds()
		asked, throttled := s.Asked-c.prev.Asked, s.Throttled-c.prev.Throttled
		top := c.top()
		switch {
		case dt <= 0:
		case s.Waiting > 0 || asked > 0 && float64(throttled) >= 0.1*float64(asked):
			// Held back by the limiter: it wants more than it has, how
			// much more the limiter cannot tell. Ask for all it may use.
			c.want = top
		default:
			// Not held back: what it used, with room to grow.
			c.want = math.Min(top, 1.5*float64(asked)/dt+1)
		}
		c.window = append(c.window, windowSample{at: now, calls: s.Calls - c.prev.Calls, failures: s.Failures - c.prev.Failures})
	}
	c.prev, c.prevAt = s, now
	cut := 0
	for cut < len(c.window) && now.Sub(c.window[cut].at) > defaultErrorWindow {
		cut++
	}
	c.window = c.window[cut:]
}

// next computes the record after this worker's step at now, and whether it
// must be written.
func (c *Coordinator) next(rec GatewayRecord, now time.Time, s LocalStats) (GatewayRecord, bool) {
	id := c.cfg.WorkerID
	// A member counts as dead one interval after its entry expired, not
	// at once: the grace covers a holder whose steps run late (a starved
	// process applies a new share a moment after its entry says) and the
	// hosts' clocks disagreeing by less than an interval, so that the
	// others do not grow into a share its holder may still use.
	live := rec.live(now.Add(-c.cfg.Interval))
	write := len(live) != len(rec.Workers) // dead members to drop
	old, known := live[id]

	var calls, failures int64
	for _, w := range c.window {
		if w.at.After(rec.UpSince) {
			calls, failures = calls+w.calls, failures+w.failures
		}
	}
	me := Member{Want: c.want, Breaker: s.Breaker, OpenedAt: s.OpenedAt, Calls: calls, Failures: failures,
		Expires: old.Expires}
	me.Vote = (s.Breaker != "closed" && s.OpenedAt.After(rec.UpSince)) ||
		(calls >= c.cfg.MinCalls && float64(failures) >= c.cfg.ErrorRatio*float64(calls))
	if c.cfg.Budget > 0 {
		me.Has = grant(c.cfg.Budget, live, id, c.want)
	}
	if !known || old.Expires.Sub(now) < c.cfg.TTL-c.cfg.Interval/2 {
		me.Expires = now.Add(c.cfg.TTL)
	}
	if !known || material(old, me) {
		write = true
	}
	live[id] = me

	next := rec
	next.Gateway, next.Budget, next.Workers = c.cfg.Gateway, c.cfg.Budget, live
	if c.cfg.Breaker {
		if c.breakerStep(&next, now, s) {
			write = true
		}
	} else if next.Down || next.Probe != nil {
		// Another worker ran the fleet's breaker; this one does not.
		next.Down, next.Probe = false, nil
		write = true
	}
	return next, write
}

// material reports whether an entry changed enough to be written before its
// refresh is due.
func material(a, b Member) bool {
	near := func(x, y, frac float64) bool { return math.Abs(x-y) <= frac*math.Max(math.Abs(x), math.Abs(y))+1e-9 }
	return !near(a.Has, b.Has, 0.02) || !near(a.Want, b.Want, 0.2) || a.Vote != b.Vote || a.Breaker != b.Breaker ||
		!a.OpenedAt.Equal(b.OpenedAt) || !a.Expires.Equal(b.Expires)
}

// breakerStep moves the fleet's breaker: up → down when more than Quorum
// of the live members vote down; while down, the probe lease goes to a
// worker whose own breaker lets a call through, for ProbeTTL, and not to its
// last holder again while another could take it; down → up when the
// holder's call, started after the fleet went down, succeeded. It reports
// whether the record changed.
func (c *Coordinator) breakerStep(r *GatewayRecord, now time.Time, s LocalStats) bool {
	id := c.cfg.WorkerID
	votes := 0
	for _, m := range r.Workers {
		if m.Vote {
			votes++
		}
	}
	// The quorum counts the largest fleet seen lately, not only the members
	// alive in this record: a member whose refresh is late (a busy host)
	// must not leave the sick worker a majority of one.
	members := max(len(r.Workers), c.knownSize(now))
	changed := false
	switch {
	case !r.Down && float64(votes) > c.cfg.Quorum*float64(members):
		r.Down, r.DownSince, r.Probe = true, now, nil
		changed = true
		c.log.Error().Int("votes", votes).Int("workers", members).Msg("gateway down for the fleet")
	case !r.Down:
		if r.Probe != nil {
			r.Probe = nil
			return true
		}
		return false
	case r.Probe != nil && r.Probe.Holder == id && s.LastSuccess.After(r.Probe.Since):
		// A call this worker started after taking the lease (both times on
		// its own clock) succeeded.
		r.Down, r.UpSince, r.Probe = false, now, nil
		c.log.Info().Msg("probe succeeded: gateway up for the fleet")
		return true
	}
	// Down: keep exactly one prober.
	if p := r.Probe; p != nil && p.Expires.After(now) {
		if _, alive := r.Workers[p.Holder]; alive {
			return changed
		}
	}
	if s.Breaker == "open" {
		return changed // this worker cannot call now; another may
	}
	if p := r.Probe; p != nil && p.Holder == id && now.Sub(p.Expires) < c.cfg.Interval && len(r.Workers) > 1 {
		return changed // our lease just ended: the others may take it first
	}
	r.Probe = &ProbeLease{Holder: id, Since: now, Expires: now.Add(c.cfg.ProbeTTL)}
	c.log.Warn().Msg("took the probe lease: this worker probes the gateway for the fleet")
	return true
}

// setShare applies a share to the guard when it changed.
func (c *Coordinator) setShare(share float64, fallback bool) {
	if share == c.applied && fallback == c.fallback {
		return
	}
	c.applied, c.fallback = share, fallback
	c.local.SetShare(share, fallback)
}

// setFleet applies the fleet's breaker view to the guard when it changed.
func (c *Coordinator) setFleet(down bool, proberUntil time.Time) {
	if down == c.down && proberUntil.Equal(c.proberUntil) {
		return
	}
	c.down, c.proberUntil = down, proberUntil
	c.local.SetFleet(down, proberUntil)
}

// unreachable handles a step that could not reach the fleet: while this
// worker's record is still alive for the others, it keeps its share (they
// leave it free); after that it falls back to the budget divided by the
// last known number of workers, and the fleet's breaker to the local one.
func (c *Coordinator) unreachable() {
	now := c.cfg.NowFunc()
	if now.Before(c.expires) {
		return
	}
	known := c.knownSize(now)
	if c.cfg.Budget > 0 && known == 0 {
		return // never heard from the fleet: hold nothing rather than guess
	}
	if c.cfg.Budget > 0 {
		share := c.cfg.Budget / float64(known)
		if !c.fallback {
			c.log.Warn().Float64("share", share).Int("last_known_workers", known).
				Msg("gateway budget: fleet unreachable, falling back to budget / last known fleet size")
		}
		c.setShare(share, true)
	}
	c.setFleet(false, time.Time{})
}

// leave removes this worker's entry (and probe lease) from the record, so
// that the others may take its share at once.
func (c *Coordinator) leave(ctx context.Context) {
	if c.kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	for range maxCASTries {
		rec, rev, err := c.read(ctx)
		if err != nil || rev == 0 {
			return
		}
		if _, ok := rec.Workers[c.cfg.WorkerID]; !ok {
			return
		}
		delete(rec.Workers, c.cfg.WorkerID)
		if rec.Probe != nil && rec.Probe.Holder == c.cfg.WorkerID {
			rec.Probe = nil
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return
		}
		_, err = c.kv.Update(ctx, c.key, data, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			c.log.Warn().Err(err).Msg("leave the gateway record")
		}
		return
	}
}

// Gateways returns every gateway's record from bucket (empty means
// contract.GatewaysBucket), sorted by gateway, with dead members dropped
// as of now. No bucket yet means no records, no error.
func Gateways(ctx context.Context, js jetstream.JetStream, bucket string, now time.Time) ([]GatewayRecord, error) {
	if bucket == "" {
		bucket = contract.GatewaysBucket
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: gateways bucket %s: %w", bucket, err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: list gateways: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop()
	out := make([]GatewayRecord, 0, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("fleet: read gateway record %s: %w", k, err)
		}
		var rec GatewayRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("fleet: gateway record %s: %w", k, err)
		}
		rec.Workers = rec.live(now)
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Gateway < out[j].Gateway })
	return out, nil
}
