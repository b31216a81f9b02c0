package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paystream/paystream/payment"
)

// ErrBatcherStopped is returned by a Batcher's methods once its Run has
// ended (together with Run's context error, when that ended it).
var ErrBatcherStopped = errors.New("store: batcher stopped")

// Defaults of BatcherConfig.
const (
	DefaultMaxBatch             = 128
	DefaultMaxWait              = 500 * time.Microsecond
	DefaultMaxConcurrentFlushes = 4
)

// How long a call waits at most, whatever the database does (unless its
// ctx has an earlier deadline): a claim half its lease (it would be half
// gone) but at least MinClaimTimeout, a completion CompleteTimeout and a
// release ReleaseTimeout. The single forms of Store keep to the same
// bounds.
const (
	MinClaimTimeout = time.Second
	CompleteTimeout = 10 * time.Second
	ReleaseTimeout  = 5 * time.Second
)

// BatcherConfig configures a Batcher. The zero value means the defaults.
type BatcherConfig struct {
	// MaxBatch is the most requests of one kind (claims, completions or
	// releases) sent in one statement. Zero or negative means
	// DefaultMaxBatch (128).
	MaxBatch int
	// MaxWait bounds how long a batch that is not full is held back by a
	// flush of its kind in flight. Such a batch is sent as soon as no flush
	// of its kind is in flight (at once on an idle lane), and otherwise
	// keeps gathering requests while the flush runs; it is sent beside the
	// flushes in flight only when all of them have run longer than MaxWait,
	// or than four times their average run time when that is longer (they are
	// then taken as stalled: a lock wait, a slow connection). Zero means
	// DefaultMaxWait (500µs); a negative value means no holding back: a
	// batch is sent as soon as a flush slot is free. A full batch is sent
	// as soon as a flush slot is free in any case.
	MaxWait time.Duration
	// MaxConcurrentFlushes is how many batches of one kind may be in flight
	// at once, so that one slow round trip does not stall the others; each
	// uses a pool connection. Zero or negative means
	// DefaultMaxConcurrentFlushes (4).
	MaxConcurrentFlushes int
}

// WithDefaults returns a copy of cfg with zero (or negative) fields replaced
// by their defaults. A negative MaxWait is kept: it means no holding back.
func (cfg BatcherConfig) WithDefaults() BatcherConfig {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxConcurrentFlushes <= 0 {
		cfg.MaxConcurrentFlushes = DefaultMaxConcurrentFlushes
	}
	return cfg
}

// Batcher group-commits the claims, completions and releases of many
// concurrent callers: requests of one kind go to Postgres as one batch
// statement in one round trip (up to MaxBatch), and each caller gets its
// own result back. The batches are clocked by the round trips: a request
// that finds its kind idle is sent at once, alone; the requests arriving
// while a batch is in flight are sent together when it is back. So batches
// grow with the load, without a fixed wait (see MaxWait for a stalled
// round trip).
//
// A batch whose statement fails as a whole (a bad item, a deadlock, a lost
// connection) is retried item by item, each as a batch of one, so that only
// the item at fault gets an error.
//
// Its methods have the signatures and semantics of Store's single forms and
// are safe for concurrent use while Run is running. They block until Run
// has started. A caller whose ctx ends before its request is sent gets
// ctx.Err() and the request is not sent. A caller whose ctx ends after its
// request was sent also gets ctx.Err(), and the result is discarded: for a
// claim that won the lease, nobody holds it and the lease simply expires
// (the next delivery takes over then); a completion or release may or may
// not have been written, as with any lost reply.
//
// Each call is bounded as well: a claim by half its lease but at least
// MinClaimTimeout, a completion by CompleteTimeout, a release by
// ReleaseTimeout, or ctx's deadline when that is earlier. Without a timer
// per call: a request whose bound has passed when its batch is sent fails
// with context.DeadlineExceeded unsent, and each statement runs under the
// earliest bound of the requests it carries (they arrived within a round
// trip of each other), so that a database that does not answer fails them
// then; after a statement that failed as a whole, the requests whose bound
// has not passed are retried alone, each under its own. A request waits
// behind the statements of requests that came before it; when their bounds
// end no later than its own (as on the hot path, where the calls of one
// kind have one bound), a caller waits about its bound at most. Callers
// on the hot path need no timed context of their own (one was a timer, a
// Done channel and four allocations per call). This holds once Run has
// started: a caller whose ctx has no deadline waits for that.
type Batcher struct {
	cfg     BatcherConfig
	s       *Store
	started atomic.Bool
	// stopped is closed when Run no longer accepts requests.
	stopped chan struct{}

	claims    *lane[payment.Claim, payment.ClaimResult]
	completes *lane[payment.Completion, payment.Record]
	releases  *lane[payment.Release, struct{}]
}

// NewBatcher returns a Batcher sending its batches through s. Call Run to
// start it.
func NewBatcher(s *Store, cfg BatcherConfig) *Batcher {
	cfg = cfg.WithDefaults()
	b := &Batcher{cfg: cfg, s: s, stopped: make(chan struct{})}
	b.claims = newLane(cfg, b.stopped, s.execClaims)
	b.completes = newLane(cfg, b.stopped, s.execCompletes)
	b.releases = newLane(cfg, b.stopped, s.execReleases)
	return b
}

// Run gathers and sends batches until ctx ends. It then stops accepting
// requests: queued requests not yet sent fail with ErrBatcherStopped and
// ctx's error, and statements in flight are cancelled. Run returns nil once
// every goroutine it started has exited. It may be called only once.
func (b *Batcher) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("store: batcher: Run called twice")
	}
	var flushes, collectors sync.WaitGroup
	for _, collect := range []func(context.Context, *sync.WaitGroup){
		b.claims.collect, b.completes.collect, b.releases.collect,
	} {
		collectors.Go(func() { collect(ctx, &flushes) })
	}
	collectors.Wait()
	close(b.stopped)
	flushes.Wait()
	return nil
}

// Claim is Store.Claim through the batcher.
func (b *Batcher) Claim(ctx context.Context, c payment.Claim) (payment.ClaimResult, error) {
	return b.claims.do(ctx, c, claimBound(c))
}

// Complete is Store.Complete through the batcher: payment.ErrFenced when
// the lease is no longer the current one.
func (b *Batcher) Complete(ctx context.Context, c payment.Completion) (payment.Record, error) {
	return b.completes.do(ctx, c, CompleteTimeout)
}

// ExtendLease is Store.ExtendLease, straight to the store: extensions are
// rare (one per third of a lease per long call) and gain nothing from a
// batch.
func (b *Batcher) ExtendLease(ctx context.Context, key string, attempt int, owner string, lease time.Duration) error {
	return b.s.ExtendLease(ctx, key, attempt, owner, lease)
}

// Release is Store.Release through the batcher: payment.ErrFenced when the
// lease is no longer the current one.
func (b *Batcher) Release(ctx context.Context, r payment.Release) error {
	_, err := b.releases.do(ctx, r, ReleaseTimeout)
	return err
}

// outcome is one item's answer.
type outcome[Res any] struct {
	res Res
	err error
}

// call is one caller's request waiting for its outcome.
type call[Req, Res any] struct {
	ctx      context.Context //nolint:containedctx // the caller's ctx, checked before its request is sent
	req      Req
	deadline time.Time         // the caller's bound: past it, the request is not sent
	done     chan outcome[Res] // buffered: the sender never blocks
}

// expired returns the error of a call that is not to be sent any more
// (its ctx ended or its bound passed at now), or nil.
func (c *call[Req, Res]) expired(now time.Time) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if !now.Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// lane batches the requests of one kind.
type lane[Req, Res any] struct {
	maxBatch   int
	maxWait    time.Duration
	maxFlushes int
	in         chan *call[Req, Res]
	stopped    <-chan struct{}
	// received counts the requests taken from in; statements and rows
	// count the statements sent and the requests they carried, retries
	// included (for tests and benchmarks).
	received, statements, rows atomic.Int64
	// exec sends one batch and returns per-item outcomes in input order,
	// or an error when the statement as a whole failed.
	exec func(ctx context.Context, reqs []Req) ([]outcome[Res], error)
	// beforeExec, when set (by tests), runs before each statement with
	// the number of requests it carries; an error fails the statement.
	beforeExec func(ctx context.Context, n int) error
}

func newLane[Req, Res any](cfg BatcherConfig, stopped <-chan struct{},
	exec func(context.Context, []Req) ([]outcome[Res], error),
) *lane[Req, Res] {
	return &lane[Req, Res]{
		maxBatch:   cfg.MaxBatch,
		maxWait:    cfg.MaxWait,
		maxFlushes: cfg.MaxConcurrentFlushes,
		in:         make(chan *call[Req, Res]),
		stopped:    stopped,
		exec:       exec,
	}
}

// do hands req to the collector and waits for its outcome: about bound at
// most, or until ctx's deadline if earlier (see Batcher and flush).
func (l *lane[Req, Res]) do(ctx context.Context, req Req, bound time.Duration) (Res, error) {
	var zero Res
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	deadline := time.Now().Add(bound)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c := &call[Req, Res]{ctx: ctx, req: req, deadline: deadline, done: make(chan outcome[Res], 1)}
	select {
	case l.in <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-l.stopped:
		return zero, ErrBatcherStopped
	}
	select {
	case o := <-c.done:
		return o.res, o.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// inFlight is a flush under way.
type inFlight struct {
	id    uint64
	start time.Time
}

// flushEnd reports the end of a flush to the collector.
type flushEnd struct {
	id   uint64
	took time.Duration
}

// collect gathers batches and starts a flush for each, at most maxFlushes
// at a time, clocked by the flushes themselves (adaptive group commit): a
// full batch starts as soon as a slot is free; a batch that is not full
// starts at once when no flush of the lane is in flight, and otherwise
// keeps gathering until one of these ends, or until every flush in flight
// has run longer than stallAfter and counts as stalled. So an idle lane
// sends a lone request at once, and under load a batch holds what arrived
// during one round trip. It returns when ctx ends, failing the requests it
// holds; the flushes it started are awaited by Run through flushes.
func (l *lane[Req, Res]) collect(ctx context.Context, flushes *sync.WaitGroup) {
	// Each flush sends one flushEnd and at most maxFlushes are in flight:
	// a flush never blocks on it, even after the collector returned.
	ended := make(chan flushEnd, l.maxFlushes)
	var (
		batch    []*call[Req, Res]
		running  []inFlight // in start order: the last is the youngest
		nextID   uint64
		avgFlush time.Duration // moving average of the flushes' run time
		timer    = time.NewTimer(time.Hour)
		armed    time.Time // the time timer is set to, zero when stopped
	)
	timer.Stop()
	defer timer.Stop()
	stopErr := func() error { return fmt.Errorf("%w: %w", ErrBatcherStopped, ctx.Err()) }

	for {
		var wake <-chan time.Time
		if len(batch) > 0 && len(running) < l.maxFlushes {
			ready := len(batch) >= l.maxBatch || len(running) == 0
			if !ready {
				// Held back by the youngest flush in flight until it
				// ends or stalls.
				at := running[len(running)-1].start.Add(l.stallAfter(avgFlush))
				if ready = !time.Now().Before(at); !ready {
					if !armed.Equal(at) {
						timer.Reset(time.Until(at))
						armed = at
					}
					wake = timer.C
				}
			}
			if ready {
				sent := l.drain(batch)
				if len(running) == 0 {
					sent = l.gather(sent)
				}
				batch = nil
				nextID++
				f := inFlight{id: nextID, start: time.Now()}
				running = append(running, f)
				flushes.Go(func() {
					l.flush(ctx, sent)
					ended <- flushEnd{id: f.id, took: time.Since(f.start)}
				})
				continue
			}
		}

		in := l.in
		if len(batch) >= l.maxBatch {
			in = nil // full: wait for a slot
		}
		select {
		case c := <-in:
			batch = l.take(batch, c)
		case e := <-ended:
			running = slices.DeleteFunc(running, func(f inFlight) bool { return f.id == e.id })
			if avgFlush == 0 {
				avgFlush = e.took
			} else {
				avgFlush += (e.took - avgFlush) / 8
			}
		case <-wake:
			armed = time.Time{}
		case <-ctx.Done():
			fail(batch, stopErr())
			return
		}
	}
}

// stallAfter is how long the youngest flush in flight holds back a batch
// that is not full: MaxWait, or four times the average flush time when
// that is longer, so that a flush counts as stalled only when it runs well
// beyond the usual round trip (a lock wait, a slow connection), not when it
// is merely bigger than most or met a busy moment; zero when MaxWait is
// negative. (Twice the average let one flush in eight go beside a healthy
// one on a loaded machine, in batches half the usual size.)
func (l *lane[Req, Res]) stallAfter(avgFlush time.Duration) time.Duration {
	if l.maxWait < 0 {
		return 0
	}
	return max(l.maxWait, 4*avgFlush)
}

// gather adds to batch, up to maxBatch, the requests of callers that are
// about to send theirs: it yields to them as long as that brings more, a
// few times at most. Requests come in bursts (the callers woken together
// by a flush's results, a fetch of many messages), and a lane that is idle
// would otherwise send a burst's first request alone and the rest one
// round trip later.
func (l *lane[Req, Res]) gather(batch []*call[Req, Res]) []*call[Req, Res] {
	for range 8 {
		n := len(batch)
		if n >= l.maxBatch {
			break
		}
		runtime.Gosched()
		if batch = l.drain(batch); len(batch) == n {
			break
		}
	}
	return batch
}

// drain adds to batch the requests already waiting, up to maxBatch.
func (l *lane[Req, Res]) drain(batch []*call[Req, Res]) []*call[Req, Res] {
	for len(batch) < l.maxBatch {
		select {
		case c := <-l.in:
			batch = l.take(batch, c)
		default:
			return batch
		}
	}
	return batch
}

// flush sends the requests whose callers still wait and whose bound has not
// passed, under the earliest of their bounds, then delivers the outcomes.
// When the statement fails as a whole, it retries each request alone (if
// its bound has not passed meanwhile) so that only the one at fault fails.
func (l *lane[Req, Res]) flush(ctx context.Context, batch []*call[Req, Res]) {
	live := batch[:0:0]
	var earliest time.Time
	now := time.Now()
	for _, c := range batch {
		if err := c.expired(now); err != nil {
			c.done <- outcome[Res]{err: err} // the caller may have gone; keeps the invariant
			continue
		}
		live = append(live, c)
		if earliest.IsZero() || c.deadline.Before(earliest) {
			earliest = c.deadline
		}
	}
	if len(live) == 0 {
		return
	}
	reqs := make([]Req, len(live))
	for i, c := range live {
		reqs[i] = c.req
	}
	sctx, cancel := context.WithDeadline(ctx, earliest)
	outs, err := l.send(tracedBatch(sctx, live), reqs)
	cancel()
	if err == nil {
		for i, c := range live {
			c.done <- outs[i]
		}
		return
	}
	if len(live) == 1 || ctx.Err() != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrBatcherStopped, err)
		}
		fail(live, err)
		return
	}
	// The statement failed: nothing was written (or, where the failure cut
	// off a commit's answer, at the deadline or with the connection, it
	// was, and the retry meets it as a redelivery would: busy, fenced).
	// Find the culprit.
	for _, c := range live {
		if err := c.expired(time.Now()); err != nil {
			c.done <- outcome[Res]{err: err}
			continue
		}
		sctx, cancel := context.WithDeadline(ctx, c.deadline)
		outs, err := l.send(sctx, []Req{c.req})
		cancel()
		if err != nil {
			c.done <- outcome[Res]{err: err}
			continue
		}
		c.done <- outs[0]
	}
}

// send sends one statement.
func (l *lane[Req, Res]) send(ctx context.Context, reqs []Req) ([]outcome[Res], error) {
	l.statements.Add(1)
	l.rows.Add(int64(len(reqs)))
	if l.beforeExec != nil {
		if err := l.beforeExec(ctx, len(reqs)); err != nil {
			return nil, err
		}
	}
	return l.exec(ctx, reqs)
}

// take adds c to batch.
func (l *lane[Req, Res]) take(batch []*call[Req, Res], c *call[Req, Res]) []*call[Req, Res] {
	l.received.Add(1)
	return append(batch, c)
}

func fail[Req, Res any](batch []*call[Req, Res], err error) {
	for _, c := range batch {
		c.done <- outcome[Res]{err: err}
	}
}

func (s *Store) execClaims(ctx context.Context, cs []payment.Claim) ([]outcome[payment.ClaimResult], error) {
	res, err := s.ClaimBatch(ctx, cs)
	if err != nil {
		return nil, err
	}
	outs := make([]outcome[payment.ClaimResult], len(res))
	for i, r := range res {
		outs[i].res = r
	}
	return outs, nil
}

func (s *Store) execCompletes(ctx context.Context, cs []payment.Completion) ([]outcome[payment.Record], error) {
	res, err := s.CompleteBatch(ctx, cs)
	if err != nil {
		return nil, err
	}
	outs := make([]outcome[payment.Record], len(res))
	for i, r := range res {
		if r.Err != nil {
			outs[i].err = fmt.Errorf("store: complete key %q attempt %d: %w", cs[i].Key, cs[i].Attempt, r.Err)
			continue
		}
		outs[i].res = r.Record
	}
	return outs, nil
}

func (s *Store) execReleases(ctx context.Context, rs []payment.Release) ([]outcome[struct{}], error) {
	res, err := s.ReleaseBatch(ctx, rs)
	if err != nil {
		return nil, err
	}
	outs := make([]outcome[struct{}], len(res))
	for i, e := range res {
		if e != nil {
			outs[i].err = fmt.Errorf("store: release key %q attempt %d: %w", rs[i].Key, rs[i].Attempt, e)
		}
	}
	return outs, nil
}

// Route is Store.Route, unbatched: a failover is rare.
func (b *Batcher) Route(ctx context.Context, key string, attempt int, owner, from, to string) error {
	return b.s.Route(ctx, key, attempt, owner, from, to)
}
