package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// StandbyConfig configures a streaming standby (StartStandby).
type StandbyConfig struct {
	// Name is the standby's application_name on the primary, which
	// synchronous_standby_names names; default "standby1".
	Name string
	// Synchronous makes the primary wait, on every commit, until the
	// standby has flushed its WAL (synchronous_standby_names = Name, with
	// synchronous_commit on): a crash of the primary then loses nothing it
	// acknowledged. Without it replication is asynchronous and the last
	// commits before a crash may never reach the standby.
	Synchronous bool
}

// StartStandby makes a streaming standby of c: pg_basebackup of the running
// primary into a new directory beside c's (WAL streamed), standby.signal and
// a primary_conninfo naming the standby, then the server on a free port. It
// waits until the primary sees the standby streaming — as "sync" when cfg
// asks for synchronous replication, which it then turns on with ALTER
// SYSTEM. The standby is a Cluster of its own: the caller must Stop it;
// Promote makes it a primary.
func (c *Cluster) StartStandby(ctx context.Context, cfg StandbyConfig) (*Cluster, error) {
	if cfg.Name == "" {
		cfg.Name = "standby1"
	}
	dir, err := os.MkdirTemp(c.cfg.Parent, c.cfg.DirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: standby directory: %w", err)
	}
	scfg := c.cfg
	// The standby starts without the primary's replication wishes; the
	// rest of its settings are the primary's.
	scfg.Settings = nil
	for _, s := range c.cfg.Settings {
		if !strings.HasPrefix(s, "synchronous_standby_names") {
			scfg.Settings = append(scfg.Settings, s)
		}
	}
	s := &Cluster{cfg: scfg, binDir: c.binDir, dir: dir, dataDir: filepath.Join(dir, "data"), sockDir: filepath.Join(dir, "sock")}
	ok := false
	defer func() {
		if !ok {
			_ = s.Stop()
		}
	}()
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", c.port, cfg.Name)
	cmd := s.setup(exec.CommandContext(ctx, filepath.Join(c.binDir, "pg_basebackup"),
		"--pgdata="+s.dataDir, "--dbname="+conninfo, "--wal-method=stream", "--checkpoint=fast", "--no-sync"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgcluster: pg_basebackup: %w\n%s", err, out)
	}
	// standby.signal and primary_conninfo as pg_basebackup -R writes them,
	// with the application name synchronous_standby_names refers to.
	auto := fmt.Sprintf("primary_conninfo = '%s'\n", conninfo)
	if err := appendFile(filepath.Join(s.dataDir, "postgresql.auto.conf"), auto); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dataDir, "standby.signal"), nil, 0o600); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if s.cred != nil {
		for _, p := range []string{filepath.Join(s.dataDir, "postgresql.auto.conf"), filepath.Join(s.dataDir, "standby.signal")} {
			if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return nil, fmt.Errorf("pgcluster: %w", err)
			}
		}
	}
	var lastErr error
	for range 5 {
		if s.port, err = FreePort(); err != nil {
			return nil, err
		}
		if lastErr = s.Launch(ctx); lastErr == nil || ctx.Err() != nil {
			break
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}
	if cfg.Synchronous {
		if err := c.exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(cfg.Name),
			"ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"); err != nil {
			return nil, err
		}
	}
	want := "async"
	if cfg.Synchronous {
		want = "sync"
	}
	if err := c.waitReplication(ctx, cfg.Name, want); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// waitReplication waits until the primary's pg_stat_replication shows
// standby name streaming with sync_state want.
func (c *Cluster) waitReplication(ctx context.Context, name, want string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	var last string
	for {
		conn, err := pgx.Connect(ctx, c.URL())
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT state || '/' || sync_state FROM pg_stat_replication WHERE application_name = $1", name).Scan(&last)
			_ = conn.Close(context.WithoutCancel(ctx))
		}
		if err == nil && last == "streaming/"+want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: standby %s not streaming (%s) within %s: %w (last state %q, last error %v)", name, want, c.cfg.StartTimeout, ctx.Err(), last, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Promote ends recovery on a standby (pg_promote) and waits until it
// accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	return c.exec(ctx, "SELECT pg_promote(true, 60)")
}

// WALReceiverPID returns the process id of a standby's WAL receiver, 0 when
// none runs.
func (c *Cluster) WALReceiverPID(ctx context.Context) (int, error) {
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		return 0, fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var pid int
	err = conn.QueryRow(ctx, "SELECT pid FROM pg_stat_wal_receiver").Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pgcluster: wal receiver: %w", err)
	}
	return pid, nil
}

// exec runs statements on the maintenance database.
func (c *Cluster) exec(ctx context.Context, stmts ...string) error {
	conn, err := pgconn.Connect(ctx, c.URL())
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q).ReadAll(); err != nil {
			return fmt.Errorf("pgcluster: %s: %w", q, err)
		}
	}
	return nil
}

// MultiHostURL returns the connection URL of database name on every
// cluster given, in order, with target_session_attrs=read-write: a client
// connects to the first that accepts writes (pgx and libpq both read it).
func MultiHostURL(name string, clusters ...*Cluster) string {
	hosts := make([]string, len(clusters))
	for i, c := range clusters {
		hosts[i] = "127.0.0.1:" + strconv.Itoa(c.port)
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/" + name + "?sslmode=disable&target_session_attrs=read-write"
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// StopStreaming makes a standby stop receiving WAL — primary_conninfo
// emptied, the configuration reloaded, the WAL receiver gone — so that from
// now on it falls behind its primary, as an asynchronous standby does over
// a slow link. It waits until the WAL receiver has exited.
func (c *Cluster) StopStreaming(ctx context.Context) error {
	if err := c.exec(ctx, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	for {
		pid, err := c.WALReceiverPID(ctx)
		if err == nil && pid == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: WAL receiver still running (pid %d, %v): %w", pid, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
