package main

import (
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/cmdwire"
)

// newGatewayFleet builds the coordinator that shares the gateway's budget
// (PAYSTREAM_GATEWAY_BUDGET) and breaker votes (PAYSTREAM_FLEET_BREAKER)
// with the other workers through NATS KV, and pushes the share and the
// fleet's view onto the processor's guard; nil when neither is on.
func (w *worker) newGatewayFleet() {
	budget := w.cfg.GatewaySpecs()[0].Budget // PAYSTREAM_GATEWAY_BUDGET, or the first of PAYSTREAM_GATEWAYS
	if budget <= 0 && !w.cfg.FleetBreaker {
		return
	}
	g := w.proc.Guard()
	w.coord = fleet.NewCoordinator(w.js, cmdwire.FleetGatewayConfig(w.cfg, w.cfg.WorkerID, g.Name(), budget),
		cmdwire.GuardLocal(g), w.log)
}
