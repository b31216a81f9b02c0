package pgtest_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/pgtest"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

func TestNewDatabaseHasSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)

	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&n))
	require.Zero(t, n)
	var db string
	require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&db))
	require.Regexp(t, `^test_[0-9a-f]{16}$`, db)
}

func TestDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := pgtest.NewPool(t), pgtest.NewPool(t)
	_, err := a.Exec(ctx, `INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor,
		currency, status, attempts, fingerprint, lease_until) VALUES ('k', 'p', 'm', 1, 'EUR', 'processing', 1, 'f', now())`)
	require.NoError(t, err)
	var n int
	require.NoError(t, b.QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&n))
	require.Zero(t, n)
}

func TestDatabaseDroppedOnCleanup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var name string
	t.Run("inner", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
		require.NoError(t, err)
		// An open connection must not stop the drop (WITH (FORCE)).
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&name))
	})
	adminURL, err := pgtest.Start()
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, adminURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists))
	require.False(t, exists, "database %s still exists", name)
}

func TestConcurrentStart(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	urls := make([]string, 8)
	for i := range urls {
		wg.Go(func() {
			u, err := pgtest.Start()
			if err == nil {
				urls[i] = u
			}
		})
	}
	wg.Wait()
	for _, u := range urls {
		require.NotEmpty(t, u)
		require.Equal(t, urls[0], u)
	}
}

// TestRestart is not parallel: it takes the shared server down.
func TestRestart(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	require.NoError(t, pool.Ping(ctx))
	pgtest.Restart(t)
	// The pool's connections died with the server; the pool reconnects.
	require.Eventually(t, func() bool { return pool.Ping(ctx) == nil }, time5s, tick)

	startAgain := pgtest.StopServer(t)
	require.Error(t, pool.Ping(ctx))
	startAgain()
	require.Eventually(t, func() bool { return pool.Ping(ctx) == nil }, time5s, tick)
}

// TestLeakOptionsCoverHarness is not parallel: goleak would see the other
// tests' goroutines.
func TestLeakOptionsCoverHarness(t *testing.T) {
	t.Run("pool", func(t *testing.T) {
		pool := pgtest.NewPool(t)
		require.NoError(t, pool.Ping(context.Background()))
	})
	// The pool is closed; the server keeps running.
	goleak.VerifyNone(t, pgtest.LeakOptions()...)
}
