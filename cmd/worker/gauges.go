package main

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// fleetGaugeInterval is how often a worker refreshes the fleet gauges: the
// Prometheus scrape interval of deploy/observability.
const fleetGaugeInterval = 15 * time.Second

// fleetGauges keeps the gauges of what the workers share — the consumer's
// lag and the stuck rows (telemetry.FleetMetrics) — fresh, as `paystreamctl
// status` computes them (package ops), so that alerts need no paystreamctl.
type fleetGauges struct {
	js                     jetstream.JetStream
	store                  *store.Store
	stream, consumer       string
	stuckAfter             time.Duration
	m                      *telemetry.FleetMetrics
	log                    zerolog.Logger
	interval               time.Duration
	warnedLag, warnedStuck bool
}

func (w *worker) newFleetGauges(reg prometheus.Registerer) {
	grace := w.cfg.SweepGrace
	if grace == 0 {
		grace = config.Default().SweepGrace
	}
	w.gauges = &fleetGauges{js: w.js, store: w.store, stream: w.cfg.Stream, consumer: w.cfg.Consumer,
		// The sweeper brings a row back within its grace and one interval:
		// a row stays past both (and at least a minute) only when it cannot.
		stuckAfter: max(time.Minute, grace+w.cfg.SweepInterval),
		m:          telemetry.NewFleet(reg), log: w.log, interval: fleetGaugeInterval}
}

// run refreshes the gauges every interval until ctx ends.
func (g *fleetGauges) run(ctx context.Context) {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		g.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh reads the consumer and the stuck rows once; a failure keeps the
// last values and is logged once until the next success.
func (g *fleetGauges) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, g.interval/2)
	defer cancel()
	if c, err := ops.ConsumerLag(ctx, g.js, g.stream, g.consumer, time.Now()); err != nil {
		if !g.warnedLag && ctx.Err() == nil {
			g.log.Warn().Err(err).Msg("read the consumer for its lag gauges")
		}
		g.warnedLag = true
	} else {
		g.warnedLag = false
		g.m.ConsumerPending.Set(float64(c.Pending))
		g.m.ConsumerAckPending.Set(float64(c.AckPending))
		g.m.ConsumerRedelivered.Set(float64(c.Redelivered))
		g.m.ConsumerOldestUnacked.Set(c.OldestUnackedSeconds)
	}
	if n, _, err := g.store.StuckStats(ctx, g.stuckAfter); err != nil {
		if !g.warnedStuck && ctx.Err() == nil {
			g.log.Warn().Err(err).Msg("count stuck payments")
		}
		g.warnedStuck = true
	} else {
		g.warnedStuck = false
		g.m.StuckRows.Set(float64(n))
	}
}
