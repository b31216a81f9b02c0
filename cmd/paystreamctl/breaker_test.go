package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	fleetbeat "github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/ops"
)

// TestStatusShowsEachGatewaysBreaker: the BREAKER column is the worst of a
// worker's gateways (the heartbeat's breaker) and, with several gateways,
// each one's.
func TestStatusShowsEachGatewaysBreaker(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	statusTable(&out, ops.StatusReport{Workers: []fleetbeat.Heartbeat{
		{WorkerID: "w1", Ready: true, Breaker: "open", Concurrency: 8,
			Gateways: []fleetbeat.GatewayBeat{{Gateway: "a", Breaker: "closed"}, {Gateway: "b", Breaker: "open"}}},
		{WorkerID: "w2", Ready: true, Breaker: "closed", Concurrency: 8,
			Gateways: []fleetbeat.GatewayBeat{{Gateway: "a", Breaker: "closed"}}},
	}})
	require.Contains(t, out.String(), "open (a closed, b open)")
	require.NotContains(t, out.String(), "closed (a closed)")
}
