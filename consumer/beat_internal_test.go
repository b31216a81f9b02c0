package consumer

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// newBeats returns how the benchmarks start a heartbeat: on a beater whose
// loop does not run (nothing becomes due).
func newBeats(interval time.Duration) func(jetstream.Msg) *heartbeat {
	return newBeater(interval).start
}

// beatMsg counts its InProgress calls.
type beatMsg struct {
	jetstream.Msg
	beats atomic.Int64
}

func (m *beatMsg) InProgress() error { m.beats.Add(1); return nil }

// TestBeaterBeatsEachMessageEveryInterval checks on synctest's fake clock
// that every message gets InProgress one interval after its start and every
// interval after that, and none once stopped.
func TestBeaterBeatsEachMessageEveryInterval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Second
		b := newBeater(interval)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Go(func() { b.run(ctx) })
		defer func() {
			cancel()
			wg.Wait()
		}()
		step := func(d time.Duration) {
			time.Sleep(d)
			synctest.Wait()
		}

		m1, m2, m3 := &beatMsg{}, &beatMsg{}, &beatMsg{}
		h1 := b.start(m1)
		step(4 * time.Second)
		h2 := b.start(m2)
		step(5 * time.Second) // t=9s
		require.Zero(t, m1.beats.Load(), "nothing before one interval")
		step(time.Second) // t=10s
		require.EqualValues(t, 1, m1.beats.Load())
		require.Zero(t, m2.beats.Load())
		step(4 * time.Second) // t=14s
		require.EqualValues(t, 1, m2.beats.Load())
		h1.stop()
		h3 := b.start(m3)     // due at t=24s
		step(6 * time.Second) // t=20s
		require.EqualValues(t, 1, m1.beats.Load(), "stopped: no more beats")
		step(4 * time.Second) // t=24s
		require.EqualValues(t, 2, m2.beats.Load())
		require.EqualValues(t, 1, m3.beats.Load())
		h2.stop()
		h3.stop()
		h3.stop() // twice is fine
		step(time.Minute)
		require.EqualValues(t, []int64{1, 2, 1}, []int64{m1.beats.Load(), m2.beats.Load(), m3.beats.Load()})

		// The list ran empty; a new start wakes the loop again.
		m4 := &beatMsg{}
		h4 := b.start(m4)
		step(interval)
		require.EqualValues(t, 1, m4.beats.Load())
		step(interval)
		require.EqualValues(t, 2, m4.beats.Load())
		h4.stop()
	})
}
