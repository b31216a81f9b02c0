package main

import (
	"context"
	"os"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/telemetry"
)

// newHeartbeat builds the worker's heartbeat (package fleet): its record in
// the workers bucket, and the same on /metrics.
func (w *worker) newHeartbeat(reg prometheus.Registerer) {
	m := telemetry.NewWorker(reg)
	host, _ := os.Hostname()
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	started := time.Now().UTC()
	m.Info.WithLabelValues(w.cfg.WorkerID, version, host).Set(1)
	m.Concurrency.Set(float64(w.cfg.Concurrency))
	m.RateLimit.Set(w.cfg.RateLimit)
	w.beat = fleet.NewBeater(w.js, fleet.Config{Replicas: w.cfg.StreamReplicas}, func(ctx context.Context) fleet.Heartbeat {
		hb := fleet.Heartbeat{WorkerID: w.cfg.WorkerID, Version: version, Host: host, StartedAt: started,
			InFlight: w.proc.InFlight(), Concurrency: w.cfg.Concurrency, Breaker: w.proc.BreakerState(),
			RateLimit: w.cfg.RateLimit, LastPull: w.cons.LastPull(), Ready: true,
			Gateways: gatewayBeats(w.proc.Guards())}
		deps := w.dependencies(ctx)
		for _, d := range deps {
			m.DependencyUp.WithLabelValues(d.name).Set(map[bool]float64{true: 1}[d.err == nil])
		}
		if err := w.readyFrom(deps); err != nil {
			hb.Ready, hb.NotReady = false, err.Error()
		}
		if !hb.LastPull.IsZero() {
			m.LastPull.Set(float64(hb.LastPull.UnixNano()) / 1e9)
		}
		m.Ready.Set(map[bool]float64{true: 1}[hb.Ready])
		return hb
	}, w.log)
}
