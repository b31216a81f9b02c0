// Package pgcluster runs a throwaway PostgreSQL cluster as a child process:
// initdb into a new temporary directory, then the postmaster on a loopback
// port with trust authentication. The test harness (internal/pgtest), the
// local stack of `make demo` and `make dev` (internal/localstack) and the
// chaos suite share it.
//
// The cluster needs the PostgreSQL server binaries (initdb and postgres,
// found on PATH or under /usr/lib/postgresql/<version>/bin). When the caller
// runs as root the server runs as the unprivileged "postgres" user, since
// initdb refuses root. The server gets SIGQUIT (immediate shutdown) when the
// process that started it dies, even by a panic or a kill -9, so that no
// server outlives its owner; directories left behind by an owner that died
// are removed by the next Start with the same DirPrefix.
//
// The default settings trade durability for speed (fsync off, asynchronous
// commit): the data survive a fast or immediate shutdown of the server but
// not a crash of the machine. Config.Settings changes them, and
// Config.Durable leaves the server's durable defaults on.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoBinaries is returned by Start when no PostgreSQL server binaries are
// found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: install them (apt-get install postgresql)")

// Defaults of Config.
const (
	DefaultDirPrefix    = "paystream-pg-"
	DefaultStartTimeout = 30 * time.Second
	DefaultStopTimeout  = 30 * time.Second
)

// Config configures a cluster. The zero value is a fast throwaway cluster in
// os.TempDir() on a free port.
type Config struct {
	// Parent is the directory in which the cluster's own directory is
	// created; default os.TempDir().
	Parent string
	// DirPrefix starts the name of the cluster's directory; default
	// "paystream-pg-". Start removes directories with this prefix in Parent
	// whose owner and server are both gone.
	DirPrefix string
	// Port is the TCP port on 127.0.0.1; zero picks a free one (and retries
	// with another if it was taken meanwhile).
	Port int
	// Settings are extra server settings (name=value, as for postgres -c),
	// applied after the defaults, so that they override them; e.g.
	// "synchronous_commit=on" so that an immediate shutdown loses no
	// committed transaction.
	Settings []string
	// Durable leaves fsync, synchronous_commit and full_page_writes out of
	// the command line, at the server's defaults (all on), as a production
	// server runs; being out of the command line, they can be changed with
	// ALTER SYSTEM and a reload. The default (false) turns them off.
	Durable bool
	// StartTimeout bounds each wait for the server to accept connections;
	// default 30s.
	StartTimeout time.Duration
	// StopTimeout is how long a shutdown waits for the server to exit
	// before it is killed; default 30s.
	StopTimeout time.Duration
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Parent == "" {
		c.Parent = os.TempDir()
	}
	if c.DirPrefix == "" {
		c.DirPrefix = DefaultDirPrefix
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	return c
}

// Cluster is a throwaway PostgreSQL cluster. Its methods are safe for
// concurrent use; starting and stopping are serialised.
type Cluster struct {
	cfg     Config
	binDir  string // directory of initdb and postgres
	dir     string // the cluster's own directory, removed by Stop
	dataDir string
	sockDir string
	port    int
	// cred is the unprivileged user the server runs as when we are root;
	// nil otherwise.
	cred *syscall.Credential

	mu      sync.Mutex // guards proc and removed, serialises start and stop
	proc    *process   // nil while stopped
	removed bool       // Stop ran
}

// process is one run of the postmaster.
type process struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed after the process was reaped
	err    error         // Wait's result; read after exited is closed
}

// Start creates a cluster in a new directory and starts its server. The
// caller must call Stop. ctx bounds initdb and the first start.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg = cfg.WithDefaults()
	binDir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	removeStaleDirs(cfg.Parent, cfg.DirPrefix)

	if err := os.MkdirAll(cfg.Parent, 0o755); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	dir, err := os.MkdirTemp(cfg.Parent, cfg.DirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: create directory: %w", err)
	}
	c := &Cluster{
		cfg:     cfg,
		binDir:  binDir,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(dir)
		}
	}()
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}

	if cfg.Port != 0 {
		c.port = cfg.Port
		if err := c.Launch(ctx); err != nil {
			return nil, err
		}
		ok = true
		return c, nil
	}
	// The port is picked by binding :0 and closing; another process may
	// take it before the server binds it, so retry with a new one.
	var lastErr error
	for range 5 {
		if c.port, err = FreePort(); err != nil {
			return nil, err
		}
		if lastErr = c.Launch(ctx); lastErr == nil {
			ok = true
			return c, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// URL returns the connection URL of the maintenance database "postgres" as
// the superuser "postgres".
func (c *Cluster) URL() string { return c.DatabaseURL("postgres") }

// DatabaseURL returns the connection URL of database name as the superuser
// "postgres".
func (c *Cluster) DatabaseURL(name string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + name,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the server's TCP port; it stays the same across restarts.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster's directory: data/ is the data directory,
// postgres.log the server's log.
func (c *Cluster) Dir() string { return c.dir }

// LogPath returns the path of the server's log file.
func (c *Cluster) LogPath() string { return filepath.Join(c.dir, "postgres.log") }

// PID returns the postmaster's process id, or 0 while it is stopped.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.cmd.Process.Pid
}

// Running reports whether the server was started and has not been stopped
// or exited.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return false
	}
	select {
	case <-c.proc.exited:
		return false
	default:
		return true
	}
}

// CreateDatabase creates database name (owned by postgres) unless it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgconn.Connect(ctx, c.URL())
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()).ReadAll()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	return nil
}

// prepareDir makes the directory usable by the server's user and records
// the owning process for removeStaleDirs.
func (c *Cluster) prepareDir() error {
	if err := os.WriteFile(filepath.Join(c.dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := os.Mkdir(c.sockDir, 0o755); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	// 0755 so that the postgres user can traverse it when we are root.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	// initdb refuses to run as root: run the server as "postgres".
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgcluster: running as root, and the unprivileged user postgres to run the server as is missing: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("pgcluster: user postgres: %w", err)
	}
	c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if err := searchableByOthers(filepath.Dir(c.dir)); err != nil {
		return fmt.Errorf("pgcluster: the server runs as user postgres, which cannot reach %s: %w; choose a parent directory that others may search", c.dir, err)
	}
	for _, p := range []string{c.dir, c.sockDir} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	return nil
}

// setup makes cmd run in the cluster's directory and environment, in its
// own process group, as the server's user.
func (c *Cluster) setup(cmd *exec.Cmd) *exec.Cmd {
	cmd.Dir = c.dir
	cmd.Env = serverEnv(c.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

func (c *Cluster) initdb(ctx context.Context) error {
	cmd := c.setup(exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"),
		"--pgdata="+c.dataDir, "--username=postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, out)
	}
	return ctx.Err()
}

// defaultSettings are the settings of a fast, disposable cluster.
var defaultSettings = []string{
	"listen_addresses=127.0.0.1",
	"fsync=off",
	"synchronous_commit=off",
	"full_page_writes=off",
	"max_connections=300",
	"shared_buffers=128MB",
	"max_wal_size=1GB",
	"checkpoint_timeout=1h",
	"logging_collector=off",
	"log_min_messages=warning",
}

// durabilitySettings are the defaultSettings that Config.Durable leaves out.
var durabilitySettings = []string{"fsync=off", "synchronous_commit=off", "full_page_writes=off"}

// serverArgs are the postgres command-line arguments.
func (c *Cluster) serverArgs() []string {
	args := []string{"-D", c.dataDir, "-p", strconv.Itoa(c.port), "-k", c.sockDir}
	for _, s := range slices.Concat(defaultSettings, c.cfg.Settings) {
		if c.cfg.Durable && slices.Contains(durabilitySettings, s) {
			continue
		}
		args = append(args, "-c", s)
	}
	return args
}

// Launch starts the server on the cluster's port and data directory and
// waits until it accepts connections, ctx ends or Config.StartTimeout
// passes. It fails if the server is running or the cluster was stopped.
func (c *Cluster) Launch(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return errors.New("pgcluster: cluster already stopped and removed")
	}
	if c.proc != nil {
		select {
		case <-c.proc.exited: // died on its own: start again
			c.proc.log.Close()
			c.proc = nil
		default:
			return errors.New("pgcluster: server already running")
		}
	}
	logPath := c.LogPath()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	// Not CommandContext: the server outlives this call; signal and Stop
	// end it.
	cmd := c.setup(exec.Command(filepath.Join(c.binDir, "postgres"), c.serverArgs()...))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// SIGQUIT (immediate shutdown) when our process dies, even by a panic
	// or a kill, so that no server outlives it.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	p := &process{cmd: cmd, log: logFile, exited: make(chan struct{})}

	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the thread that started the child,
		// not the process: keep this goroutine, and so the thread, alive and
		// locked until the server exits.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		logFile.Close()
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}

	if err := c.waitReady(ctx, p); err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-p.exited
		logFile.Close()
		return fmt.Errorf("pgcluster: postgres on port %d did not start: %w\n%s", c.port, err, tail(logPath))
	}
	c.proc = p
	return nil
}

// waitReady polls until the server accepts a connection, the process
// exits, ctx ends or the start timeout passes.
func (c *Cluster) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(cctx, c.URL())
		ccancel()
		if err == nil {
			return conn.Close(context.WithoutCancel(ctx))
		}
		select {
		case <-p.exited:
			return fmt.Errorf("server exited: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// signal sends sig to the running server and waits for it to exit until
// ctx ends or the stop timeout passes, then kills it.
func (c *Cluster) signal(ctx context.Context, sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.proc
	if p == nil {
		return nil
	}
	c.proc = nil
	defer p.log.Close()
	_ = p.cmd.Process.Signal(sig)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StopTimeout)
	defer cancel()
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("pgcluster: server did not stop after %s (%w); killed", sig, ctx.Err())
	}
}

// Shutdown stops the server with a fast shutdown (open connections are
// terminated, a clean checkpoint is written), keeping the data directory;
// Launch starts it again. It does nothing while the server is stopped.
func (c *Cluster) Shutdown(ctx context.Context) error {
	return c.signal(ctx, syscall.SIGINT)
}

// Crash stops the server with an immediate shutdown (what pg_ctl stop -m
// immediate does: no checkpoint; the next Launch runs crash recovery),
// keeping the data directory. With the default synchronous_commit=off the
// last fraction of a second of committed transactions may be lost; set
// "synchronous_commit=on" in Config.Settings to keep them.
func (c *Cluster) Crash(ctx context.Context) error {
	return c.signal(ctx, syscall.SIGQUIT)
}

// Restart is Shutdown followed by Launch on the same port and data
// directory.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Shutdown(ctx); err != nil {
		return err
	}
	return c.Launch(ctx)
}

// Stop ends the server with an immediate shutdown and removes the cluster's
// directory. Later Launch calls fail. It is idempotent.
func (c *Cluster) Stop() error {
	err := c.signal(context.Background(), syscall.SIGQUIT)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return err
	}
	c.removed = true
	if rmErr := os.RemoveAll(c.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgcluster: remove %s: %w", c.dir, rmErr))
	}
	return err
}

// searchableByOthers checks that dir and every directory above it grant
// search (x) permission to other users.
func searchableByOthers(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s has mode %s", dir, fi.Mode().Perm())
		}
		up := filepath.Dir(dir)
		if up == dir {
			return nil
		}
		dir = up
	}
}

// FindBinDir returns the directory holding initdb and postgres: the one of
// postgres on PATH, else the highest version under /usr/lib/postgresql. It
// returns ErrNoBinaries when there is none.
func FindBinDir() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append(candidates, filepath.Dir(real))
		}
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(versioned, func(a, b string) int {
		return versionOf(b) - versionOf(a) // highest first
	})
	candidates = append(candidates, versioned...)
	for _, dir := range candidates {
		if isExecutable(filepath.Join(dir, "postgres")) && isExecutable(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, err := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	if err != nil {
		return -1
	}
	return v
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// serverEnv is the environment of initdb and postgres: ours without PG*
// variables (which would redirect them), in the C locale.
func serverEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C", "HOME="+home)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeStaleDirs removes the directories of clusters whose owner is gone
// (killed before it could clean up) and whose server is not running.
func removeStaleDirs(parent, prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, prefix+"*"))
	for _, dir := range dirs {
		// A directory of a cluster being created right now may not have
		// its owner.pid yet.
		if fi, err := os.Stat(dir); err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if alive(readPID(filepath.Join(dir, "owner.pid"))) ||
			alive(readPID(filepath.Join(dir, "data", "postmaster.pid"))) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// readPID returns the number on the first line of path, or 0.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0
	}
	return pid
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// tail returns the end of the file at path, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
