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
// waited behind ran under its own caller's bound.
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

// TestLaneStatementEndsAtTheLatestBound: a statement that never answers is
// given up at the latest bound of the requests it carries, and every
// caller gets the error then, not before and not never.
func TestLaneStatementEndsAtTheLatestBound(t *testing.T) {
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
		// The first statement ends at 1 s; the second carries both others,
		// whose bounds have not passed, and ends at the later, 3 s.
		sent, _ := f.statements()
		require.Equal(t, [][]int{{0}, {1, 2}}, sent)
		require.Equal(t, []time.Duration{time.Second, 3 * time.Second, 3 * time.Second}, ends)
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
