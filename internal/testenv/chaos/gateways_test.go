package chaos_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/chaos"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

// TestChaosGatewaysSmall is the CI-sized run of the two-gateway scenario:
// A refuses connections, then charges and loses its answers, a worker is
// killed; nothing is lost and nothing is charged twice across A and B.
func TestChaosGatewaysSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes for about half a minute")
	}
	if _, err := pgcluster.FindBinDir(); errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	bin := t.TempDir()
	require.NoError(t, localstack.Build(ctx, bin))

	out := newSyncBuffer()
	res, err := chaos.RunGateways(ctx, chaos.GatewaysConfig{BinDir: bin, Payments: 400, Duration: 8 * time.Second, Seed: 11, Out: out})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	t.Log(res.FigureLine())
	require.True(t, res.OK(), "problems %v, kept in %s", res.Problems, res.Dir)
	require.Contains(t, res.FigureLine(), "lost=0 double_charged=0 wrong_gateway=0")
	require.Positive(t, res.FailedOver)
	require.Equal(t, 1, res.Kills)
}
