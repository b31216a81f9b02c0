// Package pgtest gives integration tests a real PostgreSQL server: either
// the one named by PAYSTREAM_TEST_DATABASE_URL, or a throwaway cluster that
// the test binary starts on first use and stops when its tests end.
//
// Every test gets its own database, created from a template database that
// has all of paystream's migrations applied (CREATE DATABASE ... TEMPLATE is
// fast), and dropped in t.Cleanup:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		pool := pgtest.NewPool(t)
//		...
//	}
//
// The throwaway cluster needs the PostgreSQL server binaries (initdb and
// postgres, found on PATH or under /usr/lib/postgresql/<version>/bin). When
// the tests run as root, the cluster runs as the unprivileged "postgres"
// user, since initdb refuses root. It is tuned for speed, not durability
// (fsync off), listens on 127.0.0.1 on a free port with trust
// authentication, and is killed with the test binary even when the binary
// panics or times out.
//
// StartTLS starts a separate cluster for one test that accepts TLS only,
// with a server certificate from a throwaway CA, for tests of
// sslmode=verify-full.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/store"
)

// EnvDatabaseURL names the environment variable that points the tests at an
// existing server instead of a throwaway cluster. Its value is a postgres://
// URL of a role allowed to create databases; the database in the URL is used
// only to create and drop the per-test databases.
const EnvDatabaseURL = "PAYSTREAM_TEST_DATABASE_URL"

// server is the PostgreSQL server of this test binary.
type server struct {
	// adminURL points at the maintenance database (the URL's own database
	// for an external server, "postgres" for the throwaway cluster).
	adminURL string
	// template is the database with all migrations applied.
	template string
	// cluster is nil for an external server.
	cluster *cluster
	// createOptions end CREATE DATABASE: STRATEGY FILE_COPY on PostgreSQL
	// 15 and later, faster for small databases than the default WAL_LOG.
	createOptions string
}

// harness is the per-binary state. A test binary has one server, shared by
// its tests and started on first use, which cannot be expressed without
// package-level state: this is the only mutable global of the package.
var harness struct { //nolint:gochecknoglobals // one server per test binary, see above
	once sync.Once
	srv  *server
	err  error

	mu      sync.Mutex // guards stopped
	stopped bool
}

// Start returns the connection URL of this test binary's PostgreSQL server,
// starting the throwaway cluster on first use unless
// PAYSTREAM_TEST_DATABASE_URL is set. It is safe for concurrent use; a
// failure to start is remembered and returned to every caller. Most tests
// want NewDatabase or NewPool instead: the URL points at the maintenance
// database, which tests must not use for data.
func Start() (string, error) {
	srv, err := get()
	if err != nil {
		return "", err
	}
	return srv.adminURL, nil
}

func get() (*server, error) {
	harness.once.Do(func() {
		harness.srv, harness.err = startServer()
	})
	harness.mu.Lock()
	stopped := harness.stopped
	harness.mu.Unlock()
	if harness.err == nil && stopped {
		return nil, errors.New("pgtest: the server was already stopped by Main")
	}
	return harness.srv, harness.err
}

// startServer starts the throwaway cluster or checks the external server,
// then makes sure the template database exists.
func startServer() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	srv := &server{}
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		if _, err := withDatabase(u, "postgres"); err != nil {
			return nil, fmt.Errorf("pgtest: %s: %w", EnvDatabaseURL, err)
		}
		srv.adminURL = u
	} else {
		c, err := startCluster(ctx)
		if err != nil {
			return nil, err
		}
		srv.cluster = c
		srv.adminURL = c.url()
	}

	tpl, version, err := ensureTemplate(ctx, srv.adminURL)
	if err != nil {
		if srv.cluster != nil {
			srv.cluster.stop()
		}
		return nil, err
	}
	srv.template = tpl
	if version >= 150000 {
		srv.createOptions = " STRATEGY FILE_COPY"
	}
	return srv, nil
}

// templateLockID serialises template creation among test binaries sharing an
// external server ("pgtesttp" in ASCII).
const templateLockID int64 = 0x7067746573747470

// ensureTemplate creates, unless it exists, the template database for the
// current migrations. Its name carries a hash of the migration files, so
// that a schema change gets a new template and a ready template is never
// modified again. A template whose creation did not finish (no "ready"
// comment) is dropped and made again.
func ensureTemplate(ctx context.Context, adminURL string) (name string, version int, err error) {
	sum, err := migrationsHash()
	if err != nil {
		return "", 0, fmt.Errorf("pgtest: hash migrations: %w", err)
	}
	name = "paystream_template_" + sum[:12]
	const ready = "paystream pgtest template: ready"

	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", 0, fmt.Errorf("pgtest: connect to the server: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// A session lock on this private connection: test binaries sharing an
	// external server create the template one at a time.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", templateLockID); err != nil {
		return "", 0, fmt.Errorf("pgtest: lock template creation: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", templateLockID) //nolint:errcheck // closing the connection unlocks too

	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return "", 0, fmt.Errorf("pgtest: server version: %w", err)
	}

	var comment *string
	err = conn.QueryRow(ctx,
		"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name).Scan(&comment)
	switch {
	case err == nil && comment != nil && *comment == ready:
		return name, version, nil
	case err == nil:
		if _, err := conn.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return "", 0, fmt.Errorf("pgtest: drop unfinished template %s: %w", name, err)
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return "", 0, fmt.Errorf("pgtest: look up template %s: %w", name, err)
	}

	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", 0, fmt.Errorf("pgtest: create template %s: %w", name, err)
	}
	tplURL, err := withDatabase(adminURL, name)
	if err != nil {
		return "", 0, err
	}
	if err := store.Migrate(ctx, tplURL); err != nil {
		return "", 0, fmt.Errorf("pgtest: migrate template %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{name}.Sanitize()+" IS '"+ready+"'"); err != nil {
		return "", 0, fmt.Errorf("pgtest: mark template %s ready: %w", name, err)
	}
	return name, version, nil
}

func migrationsHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(store.Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(store.Migrations(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// withDatabase returns rawURL with its database replaced by db.
func withDatabase(rawURL, db string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("pgtest: %q is not a postgres:// URL", redact(rawURL))
	}
	u.Path = "/" + db
	u.RawPath = ""
	return u.String(), nil
}

func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// NewDatabase creates a fresh database with all migrations applied and
// returns its URL. The database is dropped (WITH (FORCE), so open
// connections do not stop it) when the test ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return newDatabase(tb, true)
}

// NewEmptyDatabase is NewDatabase without the migrations: the database is
// a copy of template0, for tests of the migrations themselves.
func NewEmptyDatabase(tb testing.TB) string {
	tb.Helper()
	return newDatabase(tb, false)
}

func newDatabase(tb testing.TB, migrated bool) string {
	tb.Helper()
	srv, err := get()
	if err != nil {
		tb.Fatal(err)
	}
	name := "test_" + randomHex(8)
	template := "template0"
	if migrated {
		template = srv.template
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+
		" TEMPLATE "+pgx.Identifier{template}.Sanitize()+srv.createOptions); err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dbURL, err := withDatabase(srv.adminURL, name)
	if err != nil {
		tb.Fatal(err)
	}
	return dbURL
}

// NewPool creates a fresh database like NewDatabase and returns a pool
// connected to it, closed when the test ends (before the database is
// dropped). The pool allows up to 32 connections.
func NewPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	dbURL := NewDatabase(tb)
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		tb.Fatalf("pgtest: parse database url: %v", err)
	}
	cfg.MaxConns = 32
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("pgtest: create pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// exec runs one statement on a short-lived connection to the maintenance
// database. CREATE and DROP DATABASE cannot run in a transaction, and a
// fresh connection per call keeps parallel tests independent.
func (srv *server) exec(ctx context.Context, sql string) error {
	conn, err := pgconn.Connect(ctx, srv.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// MainConfig configures MainWithConfig.
type MainConfig struct {
	// CheckLeaks runs goleak after the tests passed and fails the binary
	// when goroutines are left over. The background goroutines of pgxpool
	// and pgconn that outlive a closed pool for a moment are ignored (see
	// LeakOptions).
	CheckLeaks bool
	// LeakOptions are further goleak options, e.g. goleak.IgnoreTopFunction
	// for a library's known background goroutine.
	LeakOptions []goleak.Option
}

// Main runs the tests of a package, stops the throwaway cluster (if one was
// started) and exits with the tests' exit code. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	MainWithConfig(m, MainConfig{})
}

// MainWithConfig is Main with settings, e.g. leak checking:
//
//	func TestMain(m *testing.M) { pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true}) }
func MainWithConfig(m *testing.M, cfg MainConfig) {
	code := m.Run()
	stop()
	if code == 0 && cfg.CheckLeaks {
		if err := goleak.Find(append(LeakOptions(), cfg.LeakOptions...)...); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: goroutine leak after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// LeakOptions returns goleak options that ignore the harness's own
// goroutine (it waits for the server process) and the goroutines pgx leaves
// running for a moment after a pool or connection is closed (pgxpool's
// health check, connection closers), for tests that call goleak themselves.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/paystream/paystream/internal/testenv/pgcluster.(*Cluster).Launch.func1"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).createIdleResources"),
		goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"),
	}
}

// stop stops the throwaway cluster, if any. Later calls to Start fail.
func stop() {
	harness.mu.Lock()
	defer harness.mu.Unlock()
	if harness.stopped {
		return
	}
	harness.stopped = true
	if harness.srv != nil && harness.srv.cluster != nil {
		harness.srv.cluster.stop()
	}
}

// clusterFor returns the throwaway cluster, skipping the test when the
// server is external.
func clusterFor(tb testing.TB) *cluster {
	tb.Helper()
	srv, err := get()
	if err != nil {
		tb.Fatal(err)
	}
	if srv.cluster == nil {
		tb.Skipf("pgtest: %s is set; stopping or restarting the server needs the throwaway cluster", EnvDatabaseURL)
	}
	return srv.cluster
}

// Restart stops the throwaway cluster (fast shutdown: open connections are
// terminated) and starts it again on the same port and data directory.
// Every test of the binary shares the server, so a test calling Restart must
// not run in parallel with others (do not call t.Parallel in it). Skips the
// test when PAYSTREAM_TEST_DATABASE_URL is set.
func Restart(tb testing.TB) {
	tb.Helper()
	c := clusterFor(tb)
	if err := c.restart(); err != nil {
		tb.Fatalf("pgtest: restart: %v", err)
	}
}

// StopServer stops the throwaway cluster (fast shutdown) and returns a
// function that starts it again on the same port; the test's cleanup starts
// it too if the test did not. For outage tests; the same rules as for
// Restart apply.
func StopServer(tb testing.TB) (startAgain func()) {
	tb.Helper()
	c := clusterFor(tb)
	if err := c.shutdown(); err != nil {
		tb.Fatalf("pgtest: stop server: %v", err)
	}
	var once sync.Once
	startAgain = func() {
		once.Do(func() {
			if err := c.launch(); err != nil {
				tb.Errorf("pgtest: start server again: %v", err)
			}
		})
	}
	tb.Cleanup(startAgain)
	return startAgain
}
