package main

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/pgtest"
)

func TestMain(m *testing.M) { pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true}) }

func TestMaintenanceString(t *testing.T) {
	require.Equal(t, "no checkpoint started; no autovacuum", maintenance{samples: 10}.String())
	require.Equal(t, "1 checkpoint started; no autovacuum", maintenance{checkpoints: 1, samples: 10}.String())
	m := maintenance{checkpoints: 2, samples: 10, vacuuming: 4, tables: []string{"VACUUM public.payments"}}
	require.Equal(t, "2 checkpoints started; autovacuum running 40 % of it (VACUUM public.payments)", m.String())
	require.Equal(t, 40.0, m.vacuumPct())
	require.Zero(t, maintenance{}.vacuumPct())
	require.Equal(t, "no checkpoint started; autovacuum not visible to this role (needs pg_read_all_stats)",
		maintenance{samples: 10, hidden: true}.String())
	require.Equal(t, "unknown (maintenance: boom)", maintenance{err: errors.New("maintenance: boom")}.String())
}

func TestCheckpointsQuery(t *testing.T) {
	require.Equal(t, `SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter`, checkpointsQuery(150008))
	require.Equal(t, `SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter`, checkpointsQuery(160004))
	require.Equal(t, `SELECT num_timed + num_requested FROM pg_stat_checkpointer`, checkpointsQuery(170000))
}

// TestMaintenanceWatcherOnPostgres sees a CHECKPOINT and an autovacuum
// worker on a real server: the autovacuum is made to start within a
// second (autovacuum_naptime) and to run slowly (a cost delay per page),
// so that the watcher's last look still finds it.
func TestMaintenanceWatcherOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if os.Getenv("PAYSTREAM_TEST_DATABASE_URL") != "" {
		t.Skip("changes autovacuum_naptime with ALTER SYSTEM: only on the test binary's own cluster")
	}
	pool := pgtest.NewPool(t)
	if _, err := pool.Exec(ctx, `ALTER SYSTEM SET autovacuum_naptime = '1s'`); err != nil {
		t.Skipf("cannot set autovacuum_naptime on this server: %v", err)
	}
	_, err := pool.Exec(ctx, `SELECT pg_reload_conf()`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `ALTER SYSTEM RESET autovacuum_naptime`)
		_, _ = pool.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})

	w, err := watchMaintenance(ctx, pool, 5*time.Millisecond)
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			_, _ = w.stop(ctx)
		}
	}()

	_, err = pool.Exec(ctx, `CHECKPOINT`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE churn (id int, pad text) WITH (
		autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
		autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO churn SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DELETE FROM churn`)
	require.NoError(t, err)

	// Wait for the condition (a worker on churn), not for a time.
	for {
		s, err := w.sample(ctx)
		require.NoError(t, err)
		if strings.Contains(strings.Join(s.vacuums, ","), "churn") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no autovacuum of churn within 2 minutes")
		case <-time.After(20 * time.Millisecond):
		}
	}

	m, err := w.stop(ctx)
	stopped = true
	require.NoError(t, err)
	require.GreaterOrEqual(t, m.checkpoints, int64(1), "the CHECKPOINT")
	require.False(t, m.hidden, "the test cluster's superuser sees every worker")
	require.GreaterOrEqual(t, m.vacuuming, 1)
	require.Greater(t, m.samples, 2, "the watcher's own samples, besides the first and the last")
	// "VACUUM public.churn" or "VACUUM ANALYZE public.churn"; the
	// catalogs' ANALYZEs after the DDL are not listed.
	require.NotEmpty(t, m.tables)
	for _, tbl := range m.tables {
		require.NotContains(t, tbl, "pg_catalog.")
	}
	require.Contains(t, m.String(), "public.churn")
	require.True(t, slices.ContainsFunc(m.tables, func(tbl string) bool {
		return strings.HasPrefix(tbl, "VACUUM") && strings.HasSuffix(tbl, " public.churn")
	}), "%q", m.tables)
}

// TestMaintenanceHiddenFromAPlainRole: a role that may not see other
// roles' activity is told so, not told that no autovacuum ran.
func TestMaintenanceHiddenFromAPlainRole(t *testing.T) {
	if os.Getenv("PAYSTREAM_TEST_DATABASE_URL") != "" {
		t.Skip("creates a role: only on the test binary's own cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := pgtest.NewPool(t)
	_, err := admin.Exec(ctx, `CREATE ROLE bench_plain LOGIN`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `DROP ROLE IF EXISTS bench_plain`) })

	cfg := admin.Config().Copy()
	cfg.ConnConfig.User = "bench_plain"
	cfg.ConnConfig.Password = ""
	plain, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer plain.Close()

	w, err := watchMaintenance(ctx, plain, time.Hour)
	require.NoError(t, err)
	m, err := w.stop(ctx)
	require.NoError(t, err)
	require.True(t, m.hidden)
	require.Contains(t, m.String(), "autovacuum not visible to this role")
}
