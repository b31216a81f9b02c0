package store_test

import (
	"context"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/store"
)

// schemaVersion returns the highest applied migration and whether the
// payments table and the claim function exist.
func schemaVersion(t *testing.T, dbURL string) (version int64, hasTable bool) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass('payments') IS NOT NULL AND to_regproc('paystream_claim') IS NOT NULL").Scan(&hasTable))
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", store.MigrationTable).Scan(&exists))
	if !exists {
		return 0, hasTable
	}
	require.NoError(t, conn.QueryRow(ctx, "SELECT max(version_id) FROM "+store.MigrationTable+" WHERE is_applied").Scan(&version))
	return version, hasTable
}

func TestMigrateEmptyDatabaseTwice(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	v, ok := schemaVersion(t, dbURL)
	require.Zero(t, v)
	require.False(t, ok)

	require.NoError(t, store.Migrate(t.Context(), dbURL))
	v, ok = schemaVersion(t, dbURL)
	require.EqualValues(t, latestVersion(t), v)
	require.True(t, ok)

	require.NoError(t, store.Migrate(t.Context(), dbURL))
	v2, _ := schemaVersion(t, dbURL)
	require.Equal(t, v, v2)
}

func TestMigrateAlreadyMigrated(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	require.NoError(t, store.Migrate(t.Context(), dbURL))
	v, ok := schemaVersion(t, dbURL)
	require.EqualValues(t, latestVersion(t), v)
	require.True(t, ok)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = store.Migrate(t.Context(), dbURL) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	v, ok := schemaVersion(t, dbURL)
	require.EqualValues(t, latestVersion(t), v)
	require.True(t, ok)

	// Each version is recorded once.
	conn, err := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var rows, distinct int
	require.NoError(t, conn.QueryRow(t.Context(),
		"SELECT count(*), count(DISTINCT version_id) FROM "+store.MigrationTable).Scan(&rows, &distinct))
	require.Equal(t, distinct, rows)
}

func TestMigrateBadURL(t *testing.T) {
	t.Parallel()
	require.Error(t, store.Migrate(t.Context(), "postgres://%zz"))
}

// latestVersion is the number of the newest embedded migration.
func latestVersion(t *testing.T) int64 {
	t.Helper()
	entries, err := fs.ReadDir(store.Migrations(), ".")
	require.NoError(t, err)
	var latest int64
	for _, e := range entries {
		v, err := strconv.ParseInt(strings.SplitN(e.Name(), "_", 2)[0], 10, 64)
		require.NoError(t, err, e.Name())
		latest = max(latest, v)
	}
	require.GreaterOrEqual(t, latest, int64(3))
	return latest
}
