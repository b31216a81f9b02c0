package pgcluster_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

// TestStandbyFailover makes a synchronous standby, commits on the primary,
// crashes it and promotes the standby: the commit is there, and a client of
// the multi-host URL with target_session_attrs=read-write lands on it.
func TestStandbyFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startCluster(t, pgcluster.Config{Settings: []string{"synchronous_commit=on"}})
	require.NoError(t, p.CreateDatabase(ctx, "app"))
	s, err := p.StartStandby(ctx, pgcluster.StandbyConfig{Synchronous: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Stop()) })
	require.Equal(t, "standby1", queryString(t, p.URL(), "SHOW synchronous_standby_names"))
	require.Equal(t, "true", queryString(t, s.URL(), "SELECT pg_is_in_recovery()::text"))
	pid, err := s.WALReceiverPID(ctx)
	require.NoError(t, err)
	require.NotZero(t, pid)

	multi := pgcluster.MultiHostURL("app", p, s)
	exec(t, multi, "CREATE TABLE t (v text); INSERT INTO t VALUES ('acknowledged')")

	require.NoError(t, p.Crash(ctx))
	require.NoError(t, s.Promote(ctx))
	require.Equal(t, "acknowledged", queryString(t, multi, "SELECT v FROM t"))
	exec(t, multi, "INSERT INTO t VALUES ('after failover')")
	conn, err := pgx.Connect(ctx, multi)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.Equal(t, uint16(s.Port()), conn.PgConn().Conn().RemoteAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port())
}

// TestStandbyAsyncLoses: an asynchronous standby that stopped streaming
// misses what the primary commits afterwards; promoted, it lacks it.
func TestStandbyAsyncLoses(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startCluster(t, pgcluster.Config{Settings: []string{"synchronous_commit=on"}})
	require.NoError(t, p.CreateDatabase(ctx, "app"))
	s, err := p.StartStandby(ctx, pgcluster.StandbyConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Stop()) })
	require.Empty(t, queryString(t, p.URL(), "SHOW synchronous_standby_names"))

	multi := pgcluster.MultiHostURL("app", p, s)
	exec(t, multi, "CREATE TABLE t (v text)")
	// Replicated before the standby stops: the standby confirms it.
	exec(t, multi, "INSERT INTO t VALUES ('before')")
	require.Eventually(t, func() bool {
		conn, err := pgx.Connect(ctx, s.DatabaseURL("app"))
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		var n int
		return conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n) == nil && n == 1
	}, 30*time.Second, 20*time.Millisecond)

	require.NoError(t, s.StopStreaming(ctx))
	pid, err := s.WALReceiverPID(ctx)
	require.NoError(t, err)
	require.Zero(t, pid)
	exec(t, multi, "INSERT INTO t VALUES ('after')")
	require.NoError(t, p.Crash(ctx))
	require.NoError(t, s.Promote(ctx))
	require.Equal(t, "before", queryString(t, multi, "SELECT string_agg(v, ',') FROM t"))
}
