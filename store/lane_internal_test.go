package store

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeStatements is a lane's exec that records each statement's requests
// and deadline, and holds each statement until the test lets it go (or its
// ctx ends).
type fakeStatements struct {
	mu        sync.Mutex
	sent      [][]int
	deadlines []time.Time
	release   chan struct{}
}

func (f *fakeStatements) exec(ctx context.Context, reqs []int) ([]outcome[int], error) {
	d, _ := ctx.Deadline()
	f.mu.Lock()
	f.sent = append(f.sent, append([]int(nil), reqs...))
	f.deadlines = append(f.deadlines, d)
	f.mu.Unlock()
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	outs := make([]outcome[int], len(reqs))
	for i, r := range reqs {
		outs[i].res = r * 10
	}
	return outs, nil
}

// statements returns what was sent so far, and under which deadlines.
func (f *fakeStatements) statements() ([][]int, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent, f.deadlines
}

// runLane starts a lane of one flush at a time on f in the bubble, and
// stops it when the test ends.
func runLane(t *testing.T, f *fakeStatements) *lane[int, int] {
	t.Helper()
	stopped := make(chan struct{})
	l := newLane(BatcherConfig{MaxBatch: 8, MaxWait: time.Millisecond, MaxConcurrentFlushes: 1}.WithDefaults(),
		stopped, f.exec)
	ctx, cancel := context.WithCancel(t.Context())
	var flushes, collector sync.WaitGroup
	collector.Go(func() { l.collect(ctx, &flushes) })
	t.Cleanup(func() {
		cancel()
		collector.Wait()
		close(stopped)
		flushes.Wait()
	})
	return l
}

// TestLaneBoundWithoutTimedContext: a call bounded by do's bound alone
// (its ctx has no deadline) that waited past it behind a slow statement
// fails with context.DeadlineExceeded and is not sent; the statement it
// waited behind ran under its own caller's bound. (A later bound than the
// statement's own: a statement ends no later than the bounds of the
// requests behind it, as the next test shows.)
func TestLaneBoundWithoutTimedContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeStatements{release: make(chan struct{})}
		l := runLane(t, f)
		ctx := context.Background() // no deadline, never cancelled
		start := time.Now()

		var wg sync.WaitGroup
		var first, second outcome[int]
		wg.Go(func() { first.res, first.err = l.do(ctx, 1, time.Second) })
		synctest.Wait() // the first statement is in flight
		wg.Go(func() { second.res, second.err = l.do(ctx, 2, 100*time.Millisecond) })
		synctest.Wait() // the second request is held behind it

		time.Sleep(200 * time.Millisecond) // past the second's bound
		close(f.release)
		wg.Wait()

		require.NoError(t, first.err)
		require.Equal(t, 10, first.res)
		require.ErrorIs(t, second.err, context.DeadlineExceeded)
		sent, deadlines := f.statements()
		require.Equal(t, [][]int{{1}}, sent, "the expired request is not sent")
		require.Equal(t, start.Add(time.Second), deadlines[0], "the statement runs under its caller's bound")
	})
}

// TestLaneStatementEndsAtTheEarliestBound: a statement that never answers
// is given up at the earliest bound of the requests it carries; the others
// are retried alone, each under its own bound, so that every caller gets
// its error at its own bound, not later and not never.
func TestLaneStatementEndsAtTheEarliestBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeStatements{release: make(chan struct{})} // never released
		l := runLane(t, f)
		ctx := context.Background()
		start := time.Now()

		var wg sync.WaitGroup
		ends := make([]time.Duration, 3)
		errs := make([]error, 3)
		// The first is sent alone; the other two wait for it together.
		for i, bound := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
			wg.Go(func() {
				_, errs[i] = l.do(ctx, i, bound)
				ends[i] = time.Since(start)
			})
			synctest.Wait()
		}
		wg.Wait()

		for i, err := range errs {
			require.ErrorIs(t, err, context.DeadlineExceeded, "call %d", i)
		}
		// At 1 s the first statement gives up and the other two go
		// together, until the earlier of their bounds (2 s); then the one
		// whose bound has not passed goes alone, until its own (3 s).
		sent, deadlines := f.statements()
		require.Equal(t, [][]int{{0}, {1, 2}, {2}}, sent)
		require.Equal(t, []time.Time{start.Add(time.Second), start.Add(2 * time.Second), start.Add(3 * time.Second)}, deadlines)
		require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, ends)
	})
}

// TestLaneCallerDeadlineIsEarlier: a ctx deadline earlier than do's bound
// is the call's bound.
func TestLaneCallerDeadlineIsEarlier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeStatements{release: make(chan struct{})}
		l := runLane(t, f)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := l.do(ctx, 1, time.Hour)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, 50*time.Millisecond, time.Since(start))
		_, deadlines := f.statements()
		require.Equal(t, start.Add(50*time.Millisecond), deadlines[0])
	})
}

// BenchmarkLane is a call's cost through a lane whose statements answer at
// once, from 512 goroutines: with the caller's ctx as the Processor passes
// it since the lanes bound calls themselves (the worker's context, shared
// by every handler, or one that is never cancelled, as a record's), and as
// it was before (a timed context per call).
func BenchmarkLane(b *testing.B) {
	exec := func(_ context.Context, reqs []int) ([]outcome[int], error) {
		return make([]outcome[int], len(reqs)), nil
	}
	shared, cancelShared := context.WithCancel(context.Background())
	defer cancelShared()
	for _, bc := range []struct {
		name string
		call func(l *lane[int, int]) error
	}{
		{"shared ctx", func(l *lane[int, int]) error {
			_, err := l.do(shared, 1, time.Second)
			return err
		}},
		{"uncancellable ctx", func(l *lane[int, int]) error {
			_, err := l.do(context.WithoutCancel(shared), 1, time.Second)
			return err
		}},
		{"timed ctx per call, as the Processor made", func(l *lane[int, int]) error {
			ctx, cancel := context.WithTimeout(shared, time.Second)
			defer cancel()
			_, err := l.do(ctx, 1, time.Second)
			return err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			stopped := make(chan struct{})
			l := newLane(BatcherConfig{}.WithDefaults(), stopped, exec)
			ctx, cancel := context.WithCancel(context.Background())
			var flushes, collector sync.WaitGroup
			collector.Go(func() { l.collect(ctx, &flushes) })
			b.ReportAllocs()
			b.SetParallelism(256)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := bc.call(l); err != nil {
						b.Error(err)
						return
					}
				}
			})
			cancel()
			collector.Wait()
			close(stopped)
			flushes.Wait()
		})
	}
}
