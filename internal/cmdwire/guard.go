package cmdwire

import (
	"time"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/processing"
)

// GuardLocal is a processing.Guard as the fleet sees it (fleet.Local):
// processing and fleet do not know each other, and this adapter joins them.
func GuardLocal(g *processing.Guard) fleet.Local { return guardLocal{g} }

type guardLocal struct{ g *processing.Guard }

func (l guardLocal) Stats() fleet.LocalStats {
	s := l.g.Stats()
	return fleet.LocalStats{Breaker: s.Breaker, OpenedAt: s.OpenedAt, Asked: s.Asked, Throttled: s.Throttled, Waiting: s.Waiting,
		Calls: s.Calls, Failures: s.Failures, LastSuccess: s.LastSuccess}
}

func (l guardLocal) SetShare(share float64, fallback bool) { l.g.SetShare(share, fallback) }
func (l guardLocal) SetFleet(down bool, until time.Time)   { l.g.SetFleet(down, until) }
func (l guardLocal) Changed() <-chan struct{}              { return l.g.Changed() }

// GuardConfig is the guard part of cfg for the gateway named name: the
// per-process rate cap and breaker, and the concurrency limit (aimd mode
// without PAYSTREAM_GATEWAY_CONCURRENCY takes PAYSTREAM_CONCURRENCY as its
// ceiling).
func GuardConfig(cfg config.Config, name string) processing.GuardConfig {
	conc := cfg.GatewayConcurrency
	adaptive := cfg.GatewayConcurrencyMode == "aimd"
	if adaptive && conc == 0 {
		conc = cfg.Concurrency
	}
	return processing.GuardConfig{Gateway: name, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		BreakerFailures: uint32(cfg.BreakerFailures), BreakerOpenTimeout: cfg.BreakerOpenTimeout,
		Concurrency: conc, Adaptive: adaptive}
}

// FleetGatewayConfig is the fleet part of cfg for worker workerID on the
// gateway named name, whose budget is budget calls per second (0 none):
// the probe lease lasts twice the breaker's open timeout plus an interval
// and a call's timeout, so that each holder probes at least twice, and its
// last probe has ended, before another takes over.
func FleetGatewayConfig(cfg config.Config, workerID, name string, budget float64) fleet.GatewayConfig {
	return fleet.GatewayConfig{WorkerID: workerID, Gateway: name, Budget: budget, Cap: cfg.RateLimit,
		Interval: cfg.FleetInterval, Breaker: cfg.FleetBreaker, Replicas: cfg.StreamReplicas,
		ProbeTTL: 2*cfg.BreakerOpenTimeout + cfg.FleetInterval + cfg.GatewayTimeout, CallTimeout: cfg.GatewayTimeout}
}

// GatewayBeat is g's line in the worker's heartbeat.
func GatewayBeat(g *processing.Guard) fleet.GatewayBeat {
	s := g.Stats()
	return fleet.GatewayBeat{Gateway: g.Name(), Share: s.Share, Fallback: s.Fallback, Breaker: s.Breaker,
		FleetDown: s.FleetDown, Prober: s.Prober, ConcurrencyLimit: s.ConcurrencyLimit}
}
