package ops

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/fleet"
)

// TestVerdictNamesTheOpenGateway: the heartbeat's breaker is the worst of
// the worker's gateways; with several, the degraded reason names the open
// ones.
func TestVerdictNamesTheOpenGateway(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := beatClock{now: now, interval: 5 * time.Second}
	two := fleet.Heartbeat{WorkerID: "w1", Ready: true, Breaker: "open", UpdatedAt: now,
		Gateways: []fleet.GatewayBeat{{Gateway: "a", Breaker: "closed"}, {Gateway: "b", Breaker: "open"}}}
	require.Equal(t, []string{"breaker open on worker w1 (gateway b)"},
		verdict("", []fleet.Heartbeat{two}, nil, 0, 0, nil, StatusConfig{}, c))
	one := fleet.Heartbeat{WorkerID: "w2", Ready: true, Breaker: "open", UpdatedAt: now}
	require.Equal(t, []string{"breaker open on worker w2"},
		verdict("", []fleet.Heartbeat{one}, nil, 0, 0, nil, StatusConfig{}, c))
	two.Breaker, two.Gateways[1].Breaker = "half_open", "half_open"
	require.Empty(t, verdict("", []fleet.Heartbeat{two}, nil, 0, 0, nil, StatusConfig{}, c))
}
