package main

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/cmdwire"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/risk"
	"github.com/paystream/paystream/risk/riskhttp"
	"github.com/paystream/paystream/telemetry"
)

// newRoutes builds the client of every gateway of PAYSTREAM_GATEWAYS (or
// the one of PAYSTREAM_GATEWAY_URL), each with the API key and TLS
// settings, and the function that closes them all.
func newRoutes(cfg config.Config, log zerolog.Logger, tr *telemetry.Tracing) ([]processing.Route, func(), error) {
	var (
		routes  []processing.Route
		closers []func()
	)
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, spec := range cfg.GatewaySpecs() {
		c := cfg
		c.GatewayURL, c.GatewayName = spec.URL, spec.Name
		gw, err := newGateway(c, log, tr)
		if err != nil {
			closeAll()
			if cfg.Gateways != "" {
				return nil, nil, fmt.Errorf("PAYSTREAM_GATEWAYS: gateway %q: %w", spec.Name, err)
			}
			return nil, nil, err
		}
		if cl, ok := gw.(interface{ Close() }); ok {
			closers = append(closers, cl.Close)
		}
		if spec.Name != "" && gw.Name() != spec.Name {
			gw = namedGateway{Gateway: gw, name: spec.Name} // the fake names itself "fake"
		}
		routes = append(routes, processing.Route{Gateway: gw, Weight: spec.Weight,
			Merchants: spec.Merchants, Currencies: spec.Currencies})
	}
	return routes, closeAll, nil
}

// namedGateway is a gateway under the name PAYSTREAM_GATEWAYS gives it.
type namedGateway struct {
	processing.Gateway
	name string
}

func (g namedGateway) Name() string { return g.name }

// newExtraGatewayFleets builds the fleet coordinators of the gateways after
// the first (newGatewayFleet builds the first's), each with its own budget.
func (w *worker) newExtraGatewayFleets() {
	specs := w.cfg.GatewaySpecs()
	guards := w.proc.Guards()
	for i := 1; i < len(guards) && i < len(specs); i++ {
		if specs[i].Budget <= 0 && !w.cfg.FleetBreaker {
			continue
		}
		g := guards[i]
		w.coords = append(w.coords, fleet.NewCoordinator(w.js,
			cmdwire.FleetGatewayConfig(w.cfg, w.cfg.WorkerID, g.Name(), specs[i].Budget), cmdwire.GuardLocal(g), w.log))
	}
}

// gatewayBeats are the heartbeat lines of every gateway's guard.
func gatewayBeats(guards []*processing.Guard) []fleet.GatewayBeat {
	out := make([]fleet.GatewayBeat, len(guards))
	for i, g := range guards {
		out[i] = cmdwire.GatewayBeat(g)
	}
	return out
}

// newRisk builds the risk check of PAYSTREAM_RISK_CHECKS: one HTTP checker
// per URL, fanned out by a risk.FanOut bounded by PAYSTREAM_RISK_TIMEOUT;
// nil, and a no-op close, when the setting is empty.
func newRisk(cfg config.Config) (*risk.FanOut, func(), error) {
	if len(cfg.RiskChecks) == 0 {
		return nil, func() {}, nil
	}
	var (
		checkers []risk.Checker
		closers  []func()
	)
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for i, u := range cfg.RiskChecks {
		c, err := riskhttp.New(u, nil)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("PAYSTREAM_RISK_CHECKS: URL %d: %w", i+1, err)
		}
		checkers = append(checkers, c)
		closers = append(closers, c.Close)
	}
	f, err := risk.NewFanOut(cfg.RiskTimeout, checkers...)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("PAYSTREAM_RISK_CHECKS: %w", err)
	}
	return f, closeAll, nil
}
