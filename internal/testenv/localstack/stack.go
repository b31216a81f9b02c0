// Package localstack runs the whole paystream system on one machine as real
// processes: a NATS server with JetStream, PostgreSQL (a throwaway cluster,
// or the server of Config.DatabaseURL), the gateway simulator and any number
// of workers, built by `make build` into one directory. It is the engine of
// `make demo`, `make dev`, `make bench` and `make chaos`.
//
// Every process runs in its own process group with its output in a log file
// in the stack's directory, and is killed by the kernel if the process
// owning the Stack dies, so that nothing outlives a demo killed with Ctrl-C
// or kill -9. Close stops them all.
package localstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

// Defaults of Config.
const (
	DefaultStopTimeout  = 45 * time.Second
	DefaultReadyTimeout = 60 * time.Second
)

// Binary names expected in Config.BinDir.
const (
	BinWorker     = "worker"
	BinGatewaySim = "gatewaysim"
	BinPublisher  = "publisher"
	BinNATSServer = "nats-server"
	// BinPaystreamctl is the operators' command, which the demo runs at
	// its end; Start does not need it.
	BinPaystreamctl = "paystreamctl"
)

// DatabaseName is the database the stack creates in its throwaway cluster.
const DatabaseName = "paystream"

// Config configures a Stack. The zero value of each field means its default.
type Config struct {
	// Dir is the working directory for the NATS store, the Postgres data
	// directory and every process's log (<name>.log). Default: a new
	// temporary directory, removed by Close; a given directory is kept.
	Dir string
	// BinDir holds the worker, gatewaysim, publisher and nats-server
	// binaries (make build and make nats-server put them in bin/). Default
	// "bin".
	BinDir string
	// DatabaseURL, when set, is the Postgres database to use instead of a
	// throwaway cluster; its migrations are applied at Start.
	DatabaseURL string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// PostgresSettings are extra settings of the throwaway cluster
	// (pgcluster.Config.Settings), e.g. "synchronous_commit=on".
	PostgresSettings []string
	// PostgresDurable runs the throwaway cluster with fsync,
	// synchronous_commit and full_page_writes on (pgcluster.Config.Durable).
	PostgresDurable bool
	// NATSConfig, when set, is the text of a nats-server configuration
	// file (e.g. "jetstream { sync_interval: always }"), written to the
	// stack's directory and passed with --config; the command-line flags
	// (ports, store directory) take precedence. SetNATSConfig changes it
	// for the next RestartNATS.
	NATSConfig string
	// StopTimeout is how long Close and the restarts wait after SIGTERM
	// before they kill a process; default 45s (a worker's default shutdown
	// timeout is 30s, plus draining NATS).
	StopTimeout time.Duration
	// ReadyTimeout bounds each wait for a started process to answer; default
	// 60s.
	ReadyTimeout time.Duration
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// Stack is a running local system. Its methods are safe for concurrent use.
type Stack struct {
	cfg       Config
	dir       string
	removeDir bool
	binDir    string
	logMu     sync.Mutex

	natsPort, natsMonPort int
	natsStore             string

	pg    *pgcluster.Cluster // nil with Config.DatabaseURL
	dbURL string

	procs processSet

	mu         sync.Mutex // guards nats, closed, natsConfig; serialises NATS restarts
	nats       *Process
	closed     bool
	natsConfig string
}

// Start starts NATS (JetStream, its store in Dir) on a free client port
// with a monitoring port, and Postgres (a throwaway cluster in Dir unless
// Config.DatabaseURL is set), and applies the migrations with `worker
// migrate`. On error everything started is stopped again. The caller must
// call Close.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	cfg = cfg.WithDefaults()
	s := &Stack{cfg: cfg, dir: cfg.Dir, natsConfig: cfg.NATSConfig}
	if s.binDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return nil, fmt.Errorf("localstack: %w", err)
	}
	var missing []string
	for _, b := range []string{BinWorker, BinGatewaySim, BinPublisher, BinNATSServer} {
		if _, err := os.Stat(filepath.Join(s.binDir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("localstack: %s missing in %s: run `make build nats-server`", strings.Join(missing, ", "), s.binDir)
	}

	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "paystream-local-"); err != nil {
			return nil, fmt.Errorf("localstack: %w", err)
		}
		s.removeDir = true
		// Searchable by others: the Postgres server runs as the postgres
		// user when we are root.
		if err := os.Chmod(s.dir, 0o755); err != nil {
			_ = os.RemoveAll(s.dir)
			return nil, fmt.Errorf("localstack: %w", err)
		}
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("localstack: %w", err)
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	if err := s.startNATS(ctx); err != nil {
		return nil, err
	}
	if err := s.startPostgres(ctx); err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// logf writes one progress line.
func (s *Stack) logf(format string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.cfg.Log, format+"\n", args...)
}

// Dir returns the stack's working directory.
func (s *Stack) Dir() string { return s.dir }

// BinDir returns the absolute directory of the binaries.
func (s *Stack) BinDir() string { return s.binDir }

// NATSURL returns the NATS client URL.
func (s *Stack) NATSURL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.natsPort) }

// NATSMonitorURL returns the base URL of the NATS monitoring endpoints
// (/varz, /jsz, /healthz).
func (s *Stack) NATSMonitorURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.natsMonPort) }

// DatabaseURL returns the Postgres connection URL the workers use.
func (s *Stack) DatabaseURL() string { return s.dbURL }

// NATS returns the current NATS server process (a new one after each
// RestartNATS).
func (s *Stack) NATS() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nats
}

// Processes returns every process started so far, in start order, exited
// ones included.
func (s *Stack) Processes() []*Process { return s.procs.all() }

// env returns our environment without PAYSTREAM_* and GATEWAYSIM_*
// variables (a developer's shell must not change the stack), plus extra.
func env(extra map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PAYSTREAM_") || strings.HasPrefix(kv, "GATEWAYSIM_") {
			continue
		}
		out = append(out, kv)
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, k+"="+extra[k])
	}
	return out
}

// start starts binary bin (a name in BinDir, or an absolute path) as
// process name with args and environment extra.
func (s *Stack) start(name, bin, httpAddr string, args []string, extra map[string]string) (*Process, error) {
	// Under s.mu, so that Close, which sets closed under it, sees every
	// process started.
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("localstack: stack closed")
	}
	path := bin
	if !filepath.IsAbs(bin) {
		path = filepath.Join(s.binDir, bin)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = s.dir
	cmd.Env = env(extra)
	p, err := startProcess(name, filepath.Join(s.dir, name+".log"), httpAddr, cmd)
	if err != nil {
		return nil, err
	}
	s.procs.add(p)
	return p, nil
}

func (s *Stack) natsArgs() ([]string, error) {
	args := []string{
		"--jetstream", "--store_dir", s.natsStore,
		"--addr", "127.0.0.1", "--port", strconv.Itoa(s.natsPort),
		"--http_port", strconv.Itoa(s.natsMonPort),
		"--server_name", "paystream-local",
	}
	s.mu.Lock()
	text := s.natsConfig
	s.mu.Unlock()
	if text == "" {
		return args, nil
	}
	path := filepath.Join(s.dir, "nats.conf")
	if err := os.WriteFile(path, []byte(text+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("localstack: nats config: %w", err)
	}
	return append([]string{"--config", path}, args...), nil
}

// SetNATSConfig replaces Config.NATSConfig for the next RestartNATS.
func (s *Stack) SetNATSConfig(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.natsConfig = text
}

func (s *Stack) startNATS(ctx context.Context) error {
	s.natsStore = filepath.Join(s.dir, "nats")
	var lastErr error
	for range 5 { // free ports may be taken before the server binds them
		var err1, err2 error
		s.natsPort, err1 = pgcluster.FreePort()
		s.natsMonPort, err2 = pgcluster.FreePort()
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("localstack: %w", err)
		}
		if lastErr = s.launchNATS(ctx); lastErr == nil {
			s.logf("nats-server  %s (monitoring %s, store %s)", s.NATSURL(), s.NATSMonitorURL(), s.natsStore)
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

// launchNATS starts the server on the chosen ports and waits until its
// JetStream is healthy.
func (s *Stack) launchNATS(ctx context.Context) error {
	args, err := s.natsArgs()
	if err != nil {
		return err
	}
	p, err := s.start("nats", BinNATSServer, "", args, nil)
	if err != nil {
		return err
	}
	if err := s.waitHTTP(ctx, p, s.NATSMonitorURL()+"/healthz"); err != nil {
		p.stop(5 * time.Second)
		return fmt.Errorf("localstack: nats-server: %w", err)
	}
	s.mu.Lock()
	s.nats = p
	s.mu.Unlock()
	return nil
}

// RestartNATS stops the NATS server (SIGTERM, then SIGKILL after the stop
// timeout) and starts it again on the same ports and store.
func (s *Stack) RestartNATS(ctx context.Context) error {
	s.mu.Lock()
	old := s.nats
	s.mu.Unlock()
	if old != nil {
		if old.stop(s.cfg.StopTimeout) {
			s.logf("nats-server did not stop in %s: killed", s.cfg.StopTimeout)
		}
	}
	// The port may linger for a moment; retry briefly.
	var err error
	for range 20 {
		if err = s.launchNATS(ctx); err == nil || ctx.Err() != nil {
			break
		}
		if !sleep(ctx, 250*time.Millisecond) {
			break
		}
	}
	if err != nil {
		return err
	}
	s.logf("nats-server restarted (pid %d)", s.NATS().PID())
	return nil
}

func (s *Stack) startPostgres(ctx context.Context) error {
	if s.cfg.DatabaseURL != "" {
		s.dbURL = s.cfg.DatabaseURL
		s.logf("postgres     %s (PAYSTREAM_DATABASE_URL)", redactURL(s.dbURL))
		return nil
	}
	pg, err := pgcluster.Start(ctx, pgcluster.Config{
		Parent:    s.dir,
		DirPrefix: "postgres-",
		Settings:  s.cfg.PostgresSettings,
		Durable:   s.cfg.PostgresDurable,
	})
	if err != nil {
		return fmt.Errorf("localstack: %w", err)
	}
	s.pg = pg
	if err := pg.CreateDatabase(ctx, DatabaseName); err != nil {
		return fmt.Errorf("localstack: %w", err)
	}
	s.dbURL = pg.DatabaseURL(DatabaseName)
	s.logf("postgres     %s (throwaway cluster in %s)", s.dbURL, pg.Dir())
	return nil
}

// RestartPostgres stops the throwaway cluster with a fast shutdown (open
// connections are terminated) and starts it again on the same port and
// data directory. It fails with Config.DatabaseURL.
func (s *Stack) RestartPostgres(ctx context.Context) error {
	if s.pg == nil {
		return errors.New("localstack: cannot restart an external Postgres (PAYSTREAM_DATABASE_URL)")
	}
	if err := s.pg.Restart(ctx); err != nil {
		return fmt.Errorf("localstack: restart postgres: %w", err)
	}
	s.logf("postgres restarted (pid %d)", s.pg.PID())
	return nil
}

// Postgres returns the throwaway cluster, or nil with Config.DatabaseURL.
func (s *Stack) Postgres() *pgcluster.Cluster { return s.pg }

// migrate applies the migrations with `worker migrate`.
func (s *Stack) migrate(ctx context.Context) error {
	if err := s.runOnce(ctx, "migrate", BinWorker, []string{"migrate"}, map[string]string{
		"PAYSTREAM_DATABASE_URL": s.dbURL,
		"PAYSTREAM_LOG_FORMAT":   "json",
	}); err != nil {
		return fmt.Errorf("localstack: worker migrate: %w", err)
	}
	s.logf("migrations   applied")
	return nil
}

// runOnce runs bin as a process named name and waits, at most
// Config.ReadyTimeout, for it to exit 0.
func (s *Stack) runOnce(ctx context.Context, name, bin string, args []string, env map[string]string) error {
	p, err := s.start(name, bin, "", args, env)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		p.stop(time.Second)
		return err
	}
	if code != 0 {
		return fmt.Errorf("exited %d:\n%s", code, tail(p.LogPath()))
	}
	return nil
}

// StartGatewaySim starts the gateway simulator on a free port with the
// given extra arguments (gatewaysim flags such as --latency 5ms) and waits
// until it answers /healthz. It returns the process and the simulator's
// base URL, the workers' PAYSTREAM_GATEWAY_URL.
func (s *Stack) StartGatewaySim(ctx context.Context, args ...string) (*Process, string, error) {
	var lastErr error
	for range 3 {
		port, err := pgcluster.FreePort()
		if err != nil {
			return nil, "", fmt.Errorf("localstack: %w", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p, err := s.start("gatewaysim", BinGatewaySim, addr, append([]string{"--addr", addr}, args...), nil)
		if err != nil {
			return nil, "", err
		}
		base := "http://" + addr
		if lastErr = s.waitHTTP(ctx, p, base+"/healthz"); lastErr == nil {
			s.logf("gatewaysim   %s %s", base, strings.Join(args, " "))
			return p, base, nil
		}
		p.stop(5 * time.Second)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", fmt.Errorf("localstack: gatewaysim: %w", lastErr)
}

// StartWorker starts a worker process named name and waits until it
// answers /healthz (it has connected and provisioned the streams). Its
// environment is env merged over these defaults: PAYSTREAM_NATS_URL and
// PAYSTREAM_DATABASE_URL of the stack, PAYSTREAM_HTTP_ADDR on a free port,
// PAYSTREAM_WORKER_ID=name, JSON logs (to Dir/name.log, appended to when a
// worker of the same name is started again). PAYSTREAM_GATEWAY_URL has no
// default.
func (s *Stack) StartWorker(ctx context.Context, name string, env map[string]string) (*Process, error) {
	return s.StartWorkerFrom(ctx, name, "", env)
}

// StartWorkerFrom is StartWorker with the worker binary at path (another
// build, to compare two against the same stack); an empty path means the
// stack's own (BinDir/worker).
func (s *Stack) StartWorkerFrom(ctx context.Context, name, path string, env map[string]string) (*Process, error) {
	bin := BinWorker
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("localstack: worker binary: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("localstack: worker binary: %w", err)
		}
		bin = abs
	}
	_, fixedAddr := env["PAYSTREAM_HTTP_ADDR"]
	var lastErr error
	for range 3 {
		vars := map[string]string{
			"PAYSTREAM_NATS_URL":     s.NATSURL(),
			"PAYSTREAM_DATABASE_URL": s.dbURL,
			"PAYSTREAM_WORKER_ID":    name,
			"PAYSTREAM_LOG_FORMAT":   "json",
		}
		if !fixedAddr {
			port, err := pgcluster.FreePort()
			if err != nil {
				return nil, fmt.Errorf("localstack: %w", err)
			}
			vars["PAYSTREAM_HTTP_ADDR"] = "127.0.0.1:" + strconv.Itoa(port)
		}
		for k, v := range env {
			vars[k] = v
		}
		addr := vars["PAYSTREAM_HTTP_ADDR"]
		p, err := s.start(name, bin, addr, nil, vars)
		if err != nil {
			return nil, err
		}
		if lastErr = s.waitHTTP(ctx, p, "http://"+addr+"/healthz"); lastErr == nil {
			s.logf("worker %-6s pid %d, metrics http://%s/metrics", name, p.PID(), addr)
			return p, nil
		}
		p.stop(5 * time.Second)
		// Retry only when the port we picked may have been taken.
		if fixedAddr || ctx.Err() != nil || !strings.Contains(tail(p.LogPath()), "PAYSTREAM_HTTP_ADDR") {
			break
		}
	}
	return nil, fmt.Errorf("localstack: worker %s: %w", name, lastErr)
}

// StartOutboxRelay creates the outbox table in the stack's database
// (`publisher outbox migrate`, run to completion), then starts `publisher
// outbox relay` as a process named name and waits until it answers
// /healthz. Its environment is the stack's NATS and database URLs,
// PAYSTREAM_HTTP_ADDR on a free port and JSON logs (to Dir/name.log).
func (s *Stack) StartOutboxRelay(ctx context.Context, name string) (*Process, error) {
	if err := s.runOnce(ctx, name+"-migrate", BinPublisher, []string{"outbox", "migrate"}, map[string]string{
		"PAYSTREAM_DATABASE_URL": s.dbURL,
	}); err != nil {
		return nil, fmt.Errorf("localstack: publisher outbox migrate: %w", err)
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, fmt.Errorf("localstack: %w", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := s.start(name, BinPublisher, addr, []string{"outbox", "relay"}, map[string]string{
		"PAYSTREAM_NATS_URL":     s.NATSURL(),
		"PAYSTREAM_DATABASE_URL": s.dbURL,
		"PAYSTREAM_HTTP_ADDR":    addr,
		"PAYSTREAM_LOG_FORMAT":   "json",
	})
	if err != nil {
		return nil, err
	}
	if err := s.waitHTTP(ctx, p, "http://"+addr+"/healthz"); err != nil {
		p.stop(5 * time.Second)
		return nil, fmt.Errorf("localstack: outbox relay %s: %w", name, err)
	}
	s.logf("%-12s pid %d, metrics http://%s/metrics", name, p.PID(), addr)
	return p, nil
}

// waitHTTP polls url until it answers 200, the process exits, ctx ends or
// the ready timeout passes.
func (s *Stack) waitHTTP(ctx context.Context, p *Process, target string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if err := get(ctx, client, target); err == nil {
			return nil
		}
		select {
		case <-p.Done():
			code, _ := p.Wait(context.Background())
			return fmt.Errorf("%s exited with code %d before it was ready:\n%s", p.Name(), code, tail(p.LogPath()))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w\n%s", p.Name(), target, ctx.Err(), tail(p.LogPath()))
		case <-t.C:
		}
	}
}

func get(ctx context.Context, client *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", target, resp.Status)
	}
	return nil
}

// Close stops every process the stack started: first workers, simulator and
// other processes, then NATS, each with SIGTERM and, after the stop
// timeout, SIGKILL; then the throwaway Postgres; then it removes the
// temporary directory. It is idempotent; it reports processes it had to
// kill.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	var (
		errs   []error
		errsMu sync.Mutex
		wg     sync.WaitGroup
	)
	stopAll := func(procs []*Process) {
		for _, p := range procs {
			wg.Go(func() {
				if p.Exited() {
					p.reap()
					return
				}
				if p.stop(s.cfg.StopTimeout) {
					errsMu.Lock()
					errs = append(errs, fmt.Errorf("localstack: %s (pid %d) did not stop within %s of SIGTERM: killed", p.Name(), p.PID(), s.cfg.StopTimeout))
					errsMu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	var rest, natsProcs []*Process
	for _, p := range s.procs.all() {
		if p.name == "nats" {
			natsProcs = append(natsProcs, p)
		} else {
			rest = append(rest, p)
		}
	}
	stopAll(rest)
	stopAll(natsProcs)
	if s.pg != nil {
		if err := s.pg.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("localstack: %w", err))
		}
	}
	if s.removeDir {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("localstack: remove %s: %w", s.dir, err))
		}
	}
	return errors.Join(errs...)
}

// tail returns the last lines of the file at path, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// redactURL hides the password of a connection URL.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return "(database URL)"
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Build builds the worker, gatewaysim, publisher and nats-server binaries
// into dir with the go command (GOFLAGS apply), for tests that need a
// stack without `make build`. It must run inside the paystream module.
func Build(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"github.com/paystream/paystream/cmd/worker",
		"github.com/paystream/paystream/cmd/gatewaysim",
		"github.com/paystream/paystream/cmd/publisher",
		"github.com/paystream/paystream/cmd/paystreamctl",
		"github.com/nats-io/nats-server/v2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("localstack: go build: %w\n%s", err, out)
	}
	return nil
}
