package chaos_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/chaos"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for the run's concurrent writers.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// TestChaosSmall is the CI-sized run of the chaos suite: real processes, a
// small load, every fault once and three kills.
//
// Until issue 10 (the status unknown, lookups before failed, the
// reconciler) is in, the ambiguous outage's payments end failed although
// the gateway charged them, and this test fails on false_failed: that is
// the regression it is there to catch.
func TestChaosSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes for about a minute")
	}
	if _, err := pgcluster.FindBinDir(); errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	require.NoError(t, localstack.Build(ctx, bin))

	out := newSyncBuffer()
	f := chaos.AllFaults
	f.Flood = 100
	res, err := chaos.Run(ctx, chaos.Config{
		BinDir:        bin,
		Payments:      1500,
		LoadDuration:  15 * time.Second,
		MinKills:      3,
		MaxKills:      3,
		Faults:        f,
		SettleTimeout: time.Minute,
		Seed:          42,
		Out:           out,
	})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	t.Log(res.FigureLine())
	for _, p := range res.Problems {
		t.Log("problem:", p)
	}

	require.Equal(t, 3, res.Kills)
	require.Equal(t, 1, res.Freezes)
	require.Equal(t, 2, res.Restarts, "NATS and Postgres")
	require.GreaterOrEqual(t, res.WorkerRestarts, 4, "after each kill and the SIGTERM")
	require.Equal(t, 1511, res.Payments, "the load, the flood and the ambiguous outage")
	require.Positive(t, res.Ambiguous, "payments charged with the answer lost")
	require.NotNil(t, res.Report)
	require.Equal(t, res.Payments, res.Report.ValidKeys)
	require.Positive(t, res.Report.ConflictMessages)
	require.Positive(t, res.Report.InvalidMessages)
	require.GreaterOrEqual(t, res.Report.DuplicateMessages, 99, "the flood's copies at least")
	// At least one conflict dead letter per conflicting message; more when
	// a conflict claimed its key before the original (held back by the
	// freeze, say): the original and its duplicates are the conflicts then.
	// Each dead letter's reason is checked against the row (wrong dead
	// letters).
	require.GreaterOrEqual(t, res.Report.DeadLetters["conflict"], res.Report.ConflictMessages)
	require.Equal(t, res.Report.InvalidMessages, res.Report.DeadLetters["invalid"])
	for _, want := range []string{"flood:", "429 burst", "NATS restart", "gateway outage", "slow gateway",
		"Postgres restart", "SIGTERM", "exited 0", "kill -9", "SIGSTOP", "SIGCONT", "ambiguous outage over"} {
		require.True(t, containsEvent(res.Events, want), "event %q in %v", want, res.Events)
	}
	require.Contains(t, res.FigureLine(), "lost=0 double_charged=0 stuck=0 wrong_dead_letters=0")

	// Fails until issue 10 is merged: the ambiguous outage's payments end
	// failed while the gateway holds their charge.
	require.Empty(t, res.Report.FalseFailed, "false failed")
	require.Empty(t, res.Report.Unknown, "unknown rows left after the settle wait")
	require.Contains(t, res.FigureLine(), " false_failed=0 unknown=0")
	require.Equal(t, int64(res.Report.Succeeded()), res.Report.RealCharges)
	require.Empty(t, res.Problems, "kept in %s", res.Dir)
	require.True(t, res.OK())
	require.Empty(t, res.Dir, "the working directory is removed after a passing run")
}

func containsEvent(events []string, s string) bool {
	for _, e := range events {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// TestChaosOutboxSmall is the CI-sized run of the outbox scenario: relays
// killed with SIGKILL while an upstream enqueues, some transactions rolled
// back.
func TestChaosOutboxSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes for about half a minute")
	}
	if _, err := pgcluster.FindBinDir(); errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	require.NoError(t, localstack.Build(ctx, bin))

	out := newSyncBuffer()
	res, err := chaos.RunOutbox(ctx, chaos.OutboxConfig{
		BinDir:   bin,
		Payments: 600,
		Duration: 6 * time.Second,
		MinKills: 5,
		Seed:     7,
		Out:      out,
	})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	t.Log(res.FigureLine())
	require.GreaterOrEqual(t, res.Kills, 5)
	require.Equal(t, 600, res.Committed+res.RolledBack)
	require.Positive(t, res.RolledBack)
	require.Equal(t, res.Committed, res.Published, "each committed request once, no rolled-back one")
	require.Empty(t, res.Lost)
	require.Empty(t, res.Extra)
	require.Empty(t, res.OutOfOrder)
	require.Empty(t, res.Unprocessed)
	require.Zero(t, res.Left)
	require.True(t, res.OK(), "problems %v, kept in %s", res.Problems, res.Dir)
	require.Contains(t, res.FigureLine(), "lost=0 extra=0 out_of_order=0 unprocessed=0 left=0")
}
