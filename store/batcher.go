package store

import (
	"context"
	"errors"
	"fmt"
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

// BatcherConfig configures a Batcher. The zero value means the defaults.
type BatcherConfig struct {
	// MaxBatch is the most requests of one kind (claims, completions or
	// releases) sent in one statement. Zero or negative means
	// DefaultMaxBatch (128).
	MaxBatch int
	// MaxWait is how long a batch waits for more requests after its first
	// one, unless it fills up first. Zero means DefaultMaxWait (500µs); a
	// negative value means no waiting: the batch is sent as soon as the
	// batcher finds no more requests queued.
	MaxWait time.Duration
	// MaxConcurrentFlushes is how many batches of one kind may be in flight
	// at once, so that one slow round trip does not stall the others; each
	// uses a pool connection. Zero or negative means
	// DefaultMaxConcurrentFlushes (4).
	MaxConcurrentFlushes int
}

// WithDefaults returns a copy of cfg with zero (or negative) fields replaced
// by their defaults. A negative MaxWait is kept: it means no waiting.
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
// concurrent callers: requests of one kind that arrive together (up to
// MaxBatch, or within MaxWait of the first) go to Postgres as one batch
// statement in one round trip, and each caller gets its own result back.
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
	return b.claims.do(ctx, c)
}

// Complete is Store.Complete through the batcher: payment.ErrFenced when
// the lease is no longer the current one.
func (b *Batcher) Complete(ctx context.Context, c payment.Completion) (payment.Record, error) {
	return b.completes.do(ctx, c)
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
	_, err := b.releases.do(ctx, r)
	return err
}

// outcome is one item's answer.
type outcome[Res any] struct {
	res Res
	err error
}

// call is one caller's request waiting for its outcome.
type call[Req, Res any] struct {
	ctx  context.Context //nolint:containedctx // the caller's ctx, checked before its request is sent
	req  Req
	done chan outcome[Res] // buffered: the sender never blocks
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

// do hands req to the collector and waits for its outcome.
func (l *lane[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &call[Req, Res]{ctx: ctx, req: req, done: make(chan outcome[Res], 1)}
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

// collect gathers batches and starts a flush for each, at most maxFlushes
// at a time; while all flush slots are busy it keeps filling the next
// batch. It returns when ctx ends, failing the requests it holds; the
// flushes it started are awaited by Run through flushes.
func (l *lane[Req, Res]) collect(ctx context.Context, flushes *sync.WaitGroup) {
	slots := make(chan struct{}, l.maxFlushes)
	var timer *time.Timer
	if l.maxWait > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
	}
	stopErr := func() error { return fmt.Errorf("%w: %w", ErrBatcherStopped, ctx.Err()) }

	for {
		var batch []*call[Req, Res]
		select {
		case <-ctx.Done():
			return
		case c := <-l.in:
			batch = l.take(batch, c)
		}

		// Gather: until full, and until maxWait passed or (no waiting)
		// nothing more is queued.
		if l.maxWait > 0 {
			timer.Reset(l.maxWait)
		gather:
			for len(batch) < l.maxBatch {
				select {
				case c := <-l.in:
					batch = l.take(batch, c)
				case <-timer.C:
					break gather
				case <-ctx.Done():
					fail(batch, stopErr())
					return
				}
			}
			timer.Stop()
		} else {
		drain:
			for len(batch) < l.maxBatch {
				select {
				case c := <-l.in:
					batch = l.take(batch, c)
				default:
					break drain
				}
			}
		}

		// Wait for a flush slot, still taking requests while there is room.
	slot:
		for {
			in := l.in
			if len(batch) >= l.maxBatch {
				in = nil
			}
			select {
			case slots <- struct{}{}:
				break slot
			case c := <-in:
				batch = l.take(batch, c)
			case <-ctx.Done():
				fail(batch, stopErr())
				return
			}
		}

		flushes.Go(func() {
			defer func() { <-slots }()
			l.flush(ctx, batch)
		})
	}
}

// flush sends the requests whose callers still wait, then delivers the
// outcomes. When the statement fails as a whole, it retries each request
// alone so that only the one at fault fails.
func (l *lane[Req, Res]) flush(ctx context.Context, batch []*call[Req, Res]) {
	live := batch[:0:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- outcome[Res]{err: err} // nobody listens; keeps the invariant
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	reqs := make([]Req, len(live))
	for i, c := range live {
		reqs[i] = c.req
	}
	outs, err := l.send(tracedBatch(ctx, live), reqs)
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
	// The statement failed: nothing was written. Find the culprit.
	for _, c := range live {
		if err := c.ctx.Err(); err != nil {
			c.done <- outcome[Res]{err: err}
			continue
		}
		outs, err := l.send(ctx, []Req{c.req})
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
