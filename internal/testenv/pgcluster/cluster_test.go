package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startCluster(t *testing.T, cfg pgcluster.Config) *pgcluster.Cluster {
	t.Helper()
	if cfg.Parent == "" {
		cfg.Parent = parentDir(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, cfg)
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Stop()) })
	return c
}

// parentDir returns a new directory that the postgres user can search when
// the tests run as root (t.TempDir's are private to the owner).
func parentDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { require.NoError(t, os.RemoveAll(dir)) })
	return dir
}

func queryString(t *testing.T, url, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var s string
	require.NoError(t, conn.QueryRow(ctx, sql).Scan(&s))
	return s
}

func exec(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	require.NoError(t, err)
}

func TestClusterLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := startCluster(t, pgcluster.Config{Settings: []string{"synchronous_commit=on"}})
	require.True(t, c.Running())
	require.NotZero(t, c.PID())
	require.DirExists(t, filepath.Join(c.Dir(), "data"))
	require.FileExists(t, c.LogPath())
	// Settings override the defaults.
	require.Equal(t, "on", queryString(t, c.URL(), "SHOW synchronous_commit"))
	require.Equal(t, "off", queryString(t, c.URL(), "SHOW fsync"))

	require.NoError(t, c.CreateDatabase(ctx, "app"))
	require.NoError(t, c.CreateDatabase(ctx, "app"), "creating an existing database is not an error")
	dbURL := c.DatabaseURL("app")
	exec(t, dbURL, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")

	t.Run("restart keeps port and data", func(t *testing.T) {
		port, pid := c.Port(), c.PID()
		require.NoError(t, c.Restart(ctx))
		require.Equal(t, port, c.Port())
		require.NotEqual(t, pid, c.PID())
		require.Equal(t, "kept", queryString(t, dbURL, "SELECT v FROM t"))
	})
	t.Run("crash and launch keep committed data", func(t *testing.T) {
		exec(t, dbURL, "INSERT INTO t VALUES ('committed before crash')")
		require.NoError(t, c.Crash(ctx))
		require.False(t, c.Running())
		require.Zero(t, c.PID())
		require.NoError(t, c.Crash(ctx), "stopping a stopped server does nothing")
		require.NoError(t, c.Launch(ctx))
		require.Equal(t, "2", queryString(t, dbURL, "SELECT count(*)::text FROM t"))
		require.Error(t, c.Launch(ctx), "already running")
	})
	t.Run("shutdown and launch", func(t *testing.T) {
		require.NoError(t, c.Shutdown(ctx))
		conn, err := pgx.Connect(ctx, dbURL)
		if err == nil {
			conn.Close(ctx)
		}
		require.Error(t, err)
		require.NoError(t, c.Launch(ctx))
		require.Equal(t, "2", queryString(t, dbURL, "SELECT count(*)::text FROM t"))
	})
}

func TestStopRemovesDirectory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := startCluster(t, pgcluster.Config{DirPrefix: "stop-test-"})
	dir := c.Dir()
	require.Equal(t, "stop-test-", filepath.Base(dir)[:len("stop-test-")])
	require.NoError(t, c.Stop())
	require.NoDirExists(t, dir)
	require.False(t, c.Running())
	require.Error(t, c.Launch(ctx), "a stopped cluster cannot start again")
	require.NoError(t, c.Stop(), "Stop is idempotent")
}

func TestStartRemovesStaleDirectories(t *testing.T) {
	t.Parallel()
	parent := parentDir(t)
	// A directory of a dead owner, old enough to be stale.
	stale := filepath.Join(parent, "stale-x1")
	require.NoError(t, os.MkdirAll(filepath.Join(stale, "data"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(stale, "owner.pid"), []byte("999999999"), 0o644))
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(stale, old, old))
	// One of a live owner (us) is kept.
	live := filepath.Join(parent, "stale-x2")
	require.NoError(t, os.MkdirAll(live, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(live, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644))
	require.NoError(t, os.Chtimes(live, old, old))

	startCluster(t, pgcluster.Config{Parent: parent, DirPrefix: "stale-"})
	require.NoDirExists(t, stale)
	require.DirExists(t, live)
}

func TestPrivateParentRefusedForRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another user")
	}
	_, err := pgcluster.Start(context.Background(), pgcluster.Config{Parent: t.TempDir()})
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	require.ErrorContains(t, err, "cannot reach")
}

func TestFixedPort(t *testing.T) {
	t.Parallel()
	port, err := pgcluster.FreePort()
	require.NoError(t, err)
	c := startCluster(t, pgcluster.Config{Port: port})
	require.Equal(t, port, c.Port())
	require.Contains(t, c.URL(), ":"+strconv.Itoa(port)+"/postgres")
}

// Durable leaves the durability settings at the server's defaults, where
// ALTER SYSTEM and a reload can change them; the default turns them off.
func TestDurable(t *testing.T) {
	t.Parallel()
	fast := startCluster(t, pgcluster.Config{})
	durable := startCluster(t, pgcluster.Config{Durable: true})
	for _, setting := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
		require.Equal(t, "off", queryString(t, fast.URL(), "SELECT current_setting('"+setting+"')"), setting)
		require.Equal(t, "on", queryString(t, durable.URL(), "SELECT current_setting('"+setting+"')"), setting)
	}
	require.Equal(t, "default", queryString(t, durable.URL(), "SELECT source FROM pg_settings WHERE name = 'fsync'"))
}
