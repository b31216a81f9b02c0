package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
)

// gateProc is a processor whose every delivery fails with err.
type gateProc struct{ err error }

func (p gateProc) Process(context.Context, processing.Message) processing.Decision {
	if p.err == nil {
		return processing.Decision{Action: processing.ActionAck}
	}
	return processing.Decision{Action: processing.ActionRetry, Delay: time.Second, Err: p.err}
}

func (gateProc) Admit() (int, time.Duration) { return -1, 0 }

// TestDBGate: a delivery failed on a transient database error closes the
// gate (no pulls) until a ping succeeds; other failures leave it open.
func TestDBGate(t *testing.T) {
	t.Parallel()
	var dbDown atomic.Bool
	pings := make(chan struct{}, 100)
	ping := func(context.Context) error {
		pings <- struct{}{}
		if dbDown.Load() {
			return errors.New("connection refused")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	other := newDBGate(gateProc{err: errors.New("gateway said 503")}, ping, zerolog.Nop())
	other.Process(ctx, processing.Message{})
	limit, _ := other.Admit()
	require.Equal(t, -1, limit, "a failure other than the database's leaves the gate open")

	dbDown.Store(true)
	g := newDBGate(gateProc{err: fmt.Errorf("claim k: %w: dial tcp: connection refused", store.ErrRetryable)}, ping, zerolog.Nop())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { g.run(ctx) })

	d := g.Process(ctx, processing.Message{})
	require.Equal(t, processing.ActionRetry, d.Action, "the decision passes through")
	limit, wait := g.Admit()
	require.Zero(t, limit, "closed at once")
	require.Equal(t, dbGateDownPoll, wait)
	<-pings // the failed delivery kicks a ping at once
	<-pings // and it keeps pinging while down
	limit, _ = g.Admit()
	require.Zero(t, limit, "still closed while the ping fails")

	dbDown.Store(false)
	require.Eventually(t, func() bool { l, _ := g.Admit(); return l == -1 }, 5*time.Second, 10*time.Millisecond,
		"open again once a ping succeeds")
}
