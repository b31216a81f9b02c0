package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
)

// Intervals of the database gate's pings.
const (
	dbGateDownPoll = 250 * time.Millisecond
	dbGateUpPoll   = time.Second
	dbGatePingTime = 2 * time.Second
)

// dbGate stands between the consumer and the processor and stops the pulls
// while this worker cannot reach the database, as an open breaker does
// while the gateway is down. Without it a worker cut from Postgres but not
// from NATS pulls message after message, fails each claim at once and
// spends the messages' delivery budgets in seconds, dead-lettering valid
// payments as exhausted that a worker with a database would have charged
// (the chaos scenario net-cut-postgres). A delivery that failed on a
// transient database error closes the gate at once; a ping that succeeds
// opens it. Its methods are safe for concurrent use.
type dbGate struct {
	consumer.Processor
	ping func(context.Context) error
	log  zerolog.Logger
	down atomic.Bool
	kick chan struct{}
}

func newDBGate(p consumer.Processor, ping func(context.Context) error, log zerolog.Logger) *dbGate {
	return &dbGate{Processor: p, ping: ping, log: log.With().Str("component", "dbgate").Logger(), kick: make(chan struct{}, 1)}
}

// Admit admits nothing while the database is down; otherwise it asks the
// processor.
func (g *dbGate) Admit() (int, time.Duration) {
	if g.down.Load() {
		return 0, dbGateDownPoll
	}
	return g.Processor.Admit()
}

// Process runs the delivery and closes the gate when it failed on a
// transient database error, until a ping says otherwise.
func (g *dbGate) Process(ctx context.Context, m processing.Message) processing.Decision {
	d := g.Processor.Process(ctx, m)
	if d.Action == processing.ActionRetry && errors.Is(d.Err, store.ErrRetryable) && !g.down.Swap(true) {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
	return d
}

// run pings the database — every dbGateUpPoll while it answers, every
// dbGateDownPoll while it does not, and at once after a failed delivery —
// until ctx ends.
func (g *dbGate) run(ctx context.Context) {
	t := time.NewTimer(dbGateUpPoll)
	defer t.Stop()
	wasDown := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.kick:
		}
		pctx, cancel := context.WithTimeout(ctx, dbGatePingTime)
		err := g.ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		g.down.Store(err != nil)
		switch {
		case err != nil && !wasDown:
			g.log.Warn().Err(err).Msg("database unreachable: pulls paused until it answers")
		case err == nil && wasDown:
			g.log.Info().Msg("database answers again: pulls resume")
		}
		wasDown = err != nil
		next := dbGateUpPoll
		if wasDown {
			next = dbGateDownPoll
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}
