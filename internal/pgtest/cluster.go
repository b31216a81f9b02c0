package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	"github.com/jackc/pgx/v5/pgconn"
)

// errNoBinaries is returned when no PostgreSQL server binaries are found.
var errNoBinaries = errors.New("PostgreSQL server binaries not found: install them (apt-get install postgresql) or set " + EnvDatabaseURL)

// dirPrefix starts the name of every cluster's temporary directory.
const dirPrefix = "paystream-pgtest-"

// cluster is a throwaway PostgreSQL cluster in a temporary directory, run
// as a child process of the test binary.
type cluster struct {
	binDir  string // directory of initdb and postgres
	dir     string // temporary root, removed by stop
	dataDir string
	sockDir string
	port    int
	// cred is the unprivileged user the server runs as when the tests run
	// as root; nil otherwise.
	cred *syscall.Credential

	mu   sync.Mutex // guards proc, serialises start and stop
	proc *process   // nil while stopped
}

// process is one run of the postmaster.
type process struct {
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed after the process was reaped
	err    error         // Wait's result; read after exited is closed
}

func (c *cluster) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// startCluster creates and starts a new cluster.
func startCluster(ctx context.Context) (*cluster, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	removeStaleDirs()

	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	c := &cluster{
		binDir:  binDir,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		sockDir: filepath.Join(dir, "sock"),
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}

	// The port is picked by binding :0 and closing; another process may
	// take it before the server binds it, so retry with a new one.
	var lastErr error
	for range 5 {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		if lastErr = c.launch(); lastErr == nil {
			ok = true
			return c, nil
		}
	}
	return nil, lastErr
}

// prepareDir makes the temporary directory usable by the server's user and
// records the owning test binary for removeStaleDirs.
func (c *cluster) prepareDir() error {
	if err := os.WriteFile(filepath.Join(c.dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if err := os.Mkdir(c.sockDir, 0o755); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	// 0755 so that the postgres user can traverse it when we are root.
	if err := os.Chmod(c.dir, 0o755); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	// initdb refuses to run as root: run the server as "postgres".
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgtest: running as root, and the unprivileged user postgres to run the server as is missing: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("pgtest: user postgres: %w", err)
	}
	c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	for _, p := range []string{c.dir, c.sockDir} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	return nil
}

func (c *cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = serverEnv(c.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	return cmd
}

func (c *cluster) initdb(ctx context.Context) error {
	cmd := c.command("initdb",
		"--pgdata="+c.dataDir, "--username=postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	return ctx.Err()
}

// serverArgs are the postgres settings of a fast, disposable cluster.
func (c *cluster) serverArgs() []string {
	args := []string{"-D", c.dataDir, "-p", strconv.Itoa(c.port), "-k", c.sockDir}
	for _, s := range []string{
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
	} {
		args = append(args, "-c", s)
	}
	return args
}

// launch starts the postmaster on c.port and waits until it accepts
// connections.
func (c *cluster) launch() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return errors.New("server already running")
	}
	logPath := filepath.Join(c.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := c.command("postgres", c.serverArgs()...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// SIGQUIT (immediate shutdown) when the test binary dies, even by a
	// panic or a go test timeout, so that no server outlives it.
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
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}

	if err := c.waitReady(p); err != nil {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-p.exited
		logFile.Close()
		return fmt.Errorf("pgtest: postgres on port %d did not start: %w\n%s", c.port, err, tail(logPath))
	}
	c.proc = p
	return nil
}

// waitReady polls until the server accepts a connection, the process exits,
// or 30 seconds pass.
func (c *cluster) waitReady(p *process) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgconn.Connect(ctx, c.url())
		cancel()
		if err == nil {
			return conn.Close(context.Background())
		}
		select {
		case <-p.exited:
			return fmt.Errorf("server exited: %v", p.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 30s: %w", err)
		}
	}
}

// signal sends sig to the running server and waits up to timeout for it to
// exit, then kills it.
func (c *cluster) signal(sig syscall.Signal, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.proc
	if p == nil {
		return nil
	}
	c.proc = nil
	defer p.log.Close()
	_ = p.cmd.Process.Signal(sig)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("server did not stop within %s after %s; killed", timeout, sig)
	}
}

// shutdown stops the server with a fast shutdown (connections terminated,
// clean checkpoint), keeping the data directory.
func (c *cluster) shutdown() error {
	return c.signal(syscall.SIGINT, 30*time.Second)
}

// restart is shutdown followed by launch on the same port.
func (c *cluster) restart() error {
	if err := c.shutdown(); err != nil {
		return err
	}
	return c.launch()
}

// stop ends the server with an immediate shutdown (what pg_ctl stop -m
// immediate does) and removes the cluster's directory.
func (c *cluster) stop() {
	_ = c.signal(syscall.SIGQUIT, 10*time.Second)
	_ = os.RemoveAll(c.dir)
}

// findBinDir returns the directory holding initdb and postgres: the one of
// postgres on PATH, else the highest version under /usr/lib/postgresql.
func findBinDir() (string, error) {
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
	return "", errNoBinaries
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// removeStaleDirs removes the directories of clusters whose test binary is
// gone (killed before Main could clean up) and whose server is not running.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
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
