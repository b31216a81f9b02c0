// Package chaos is paystream's fault-injection suite (`make chaos`, and a
// smaller run in the test suite): real processes — NATS, Postgres, the
// gateway simulator and three workers (package localstack) — and a load of
// valid payments, duplicates, conflicts and invalid messages, while it
// kills workers with SIGKILL, stops one with SIGTERM, restarts NATS and
// Postgres, takes the gateway down, slows it past the call timeout, rate
// limits it, loses its responses and floods one idempotency key. Then it
// checks the guarantees from the outside (package audit) and prints one
// figure line.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/publish"
)

// Faults selects the faults of a run. A kill loop runs whenever MinKills
// is above zero.
type Faults struct {
	// Flood publishes this many copies of one payment at once; 0 = none.
	Flood int
	// RateLimitBurst answers half the charges 429 with Retry-After for a
	// while.
	RateLimitBurst bool
	// NATSRestart restarts the NATS server (same port and store).
	NATSRestart bool
	// Outage answers every charge 503 for longer than the breaker's open
	// timeout.
	Outage bool
	// SlowGateway makes the gateway slower than the workers' call timeout
	// for a while.
	SlowGateway bool
	// PostgresRestart restarts Postgres (fast shutdown: connections cut).
	PostgresRestart bool
	// SIGTERM stops one worker under load with SIGTERM; it must exit 0
	// within its shutdown timeout (plus the NATS drain).
	SIGTERM bool
}

// AllFaults is every fault, with a flood of 300 copies.
var AllFaults = Faults{Flood: 300, RateLimitBurst: true, NATSRestart: true, Outage: true,
	SlowGateway: true, PostgresRestart: true, SIGTERM: true}

// Config configures a run. The zero value of each field means its default.
type Config struct {
	// BinDir holds the binaries (make build nats-server); default "bin".
	BinDir string
	// Payments is the number of distinct valid payments; duplicates,
	// conflicts and invalid messages come on top. Default 20,000.
	Payments int
	// Duplicates, Conflicts and Invalid are fractions of the load; defaults
	// 0.10, 0.02 and 0.03.
	Duplicates, Conflicts, Invalid float64
	// Workers is the number of worker processes; default 3.
	Workers int
	// LoadDuration is how long publishing takes; the faults are spread over
	// it. Default 45s.
	LoadDuration time.Duration
	// MinKills is the least number of SIGKILLs: the kill loop goes on
	// after the load until it is reached. Default 10; negative disables
	// the kill loop.
	MinKills int
	// MaxKills caps the kills; 0 means no cap.
	MaxKills int
	// Faults selects the other faults; the zero value means AllFaults
	// unless NoFaults is set.
	Faults   Faults
	NoFaults bool
	// SettleTimeout bounds the wait for the work to drain after the load;
	// default 2m.
	SettleTimeout time.Duration
	// Seed seeds the load and the chaos; zero means random (printed).
	Seed int64
	// Out receives progress lines and the figure line.
	Out io.Writer
	// WorkerEnv is merged over the suite's worker settings (e.g.
	// PAYSTREAM_MAX_DELIVER=5 to see payments exhausted).
	WorkerEnv map[string]string
	// KeepDir keeps the working directory (logs, stores) even when the run
	// passes; it is always kept when it fails.
	KeepDir bool
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.Payments <= 0 {
		c.Payments = 20_000
	}
	if c.Duplicates == 0 {
		c.Duplicates = 0.10
	}
	if c.Conflicts == 0 {
		c.Conflicts = 0.02
	}
	if c.Invalid == 0 {
		c.Invalid = 0.03
	}
	if c.Workers <= 0 {
		c.Workers = 3
	}
	if c.LoadDuration <= 0 {
		c.LoadDuration = 45 * time.Second
	}
	if c.MinKills == 0 {
		c.MinKills = 10
	}
	if c.Faults == (Faults{}) && !c.NoFaults {
		c.Faults = AllFaults
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 2 * time.Minute
	}
	if c.Seed == 0 {
		c.Seed = rand.Int64N(1<<62) + 1 //nolint:gosec // a chaos seed
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// Worker settings of a chaos run: short timeouts, so that leases expire,
// redeliveries come and the sweeper runs within the run; many deliveries,
// so that the faults do not exhaust valid payments.
const (
	gatewayTimeout     = time.Second
	breakerOpenTimeout = 2 * time.Second
	shutdownTimeout    = 5 * time.Second
	maxDeliver         = 30
)

func workerEnv(gatewayURL string) map[string]string {
	return map[string]string{
		"PAYSTREAM_GATEWAY_URL":          gatewayURL,
		"PAYSTREAM_GATEWAY_TIMEOUT":      gatewayTimeout.String(),
		"PAYSTREAM_LEASE":                "3500ms",
		"PAYSTREAM_ACK_WAIT":             "4s",
		"PAYSTREAM_MAX_DELIVER":          strconv.Itoa(maxDeliver),
		"PAYSTREAM_RETRY_BACKOFF":        "100ms",
		"PAYSTREAM_RETRY_BACKOFF_MAX":    "2s",
		"PAYSTREAM_BREAKER_FAILURES":     "5",
		"PAYSTREAM_BREAKER_OPEN_TIMEOUT": breakerOpenTimeout.String(),
		"PAYSTREAM_SHUTDOWN_TIMEOUT":     shutdownTimeout.String(),
		"PAYSTREAM_SWEEP_INTERVAL":       "1s",
		"PAYSTREAM_SWEEP_GRACE":          "2s",
		"PAYSTREAM_DUPLICATE_WINDOW":     "10m",
	}
}

// baseSim is the simulator's steady state: declines, errors, hangs and lost
// responses all the time, and enough latency (30ms on average) that every
// worker has payments in flight at the gateway when it is killed.
var baseSim = sim.Config{
	Latency:          10 * time.Millisecond,
	LatencyJitter:    40 * time.Millisecond,
	DeclineRate:      0.02,
	ErrorRate:        0.01,
	TimeoutRate:      0.002,
	LostResponseRate: 0.02,
	RetryAfter:       time.Second,
	HangFor:          30 * time.Second,
}

// Result is the outcome of a run.
type Result struct {
	Seed int64
	// Payments is the number of distinct valid payments; Messages the
	// messages published (load, flood and conflicts).
	Payments, Messages int
	// Kills counts SIGKILLs of workers; Restarts restarts of NATS and
	// Postgres; WorkerRestarts restarts of workers (after a kill or the
	// SIGTERM).
	Kills, Restarts, WorkerRestarts int
	// Events lists the faults injected, in order, with their time.
	Events []string
	// Report is the audit.
	Report *audit.Report
	// Problems lists every broken invariant, including ones outside the
	// audit (a worker that did not exit 0 after SIGTERM, say).
	Problems []string
	Duration time.Duration
	// Dir is the working directory, kept when the run failed.
	Dir string
}

// OK reports whether every invariant held.
func (r *Result) OK() bool { return len(r.Problems) == 0 }

// FigureLine is the one-line summary of a run.
func (r *Result) FigureLine() string {
	var lost, doubles, stuck, wrong, exhausted int
	if r.Report != nil {
		lost, doubles, stuck, wrong = len(r.Report.Lost), len(r.Report.DoubleCharged), len(r.Report.Stuck), len(r.Report.WrongDeadLetters)
		exhausted = r.Report.FailedCodes["exhausted"] + len(r.Report.DeadLetteredOnly)
	}
	return fmt.Sprintf("chaos payments=%d messages=%d kills=%d restarts=%d worker_restarts=%d lost=%d double_charged=%d stuck=%d wrong_dead_letters=%d exhausted=%d duration=%s",
		r.Payments, r.Messages, r.Kills, r.Restarts, r.WorkerRestarts, lost, doubles, stuck, wrong, exhausted, r.Duration.Round(time.Second))
}

// run is the state of one run.
type run struct {
	cfg   Config
	out   io.Writer
	start time.Time
	rng   *rand.Rand
	rngMu sync.Mutex

	stack  *localstack.Stack
	simURL string
	simCtl *simClient
	env    map[string]string

	mu      sync.Mutex // guards workers, events, problems
	workers []*slot
	events  []string
	probs   []string

	kills, restarts, workerRestarts atomic.Int64
}

// slot is one worker name and its current process.
type slot struct {
	name string
	proc *localstack.Process
	busy bool // being killed, restarted or stopped
}

func (r *run) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, "  %6.1fs  %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *run) event(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.logf("%s", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%.1fs %s", time.Since(r.start).Seconds(), msg))
}

func (r *run) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.logf("PROBLEM: %s", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probs = append(r.probs, msg)
}

func (r *run) float() float64 {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.Float64()
}

// between returns a random duration in [lo, hi).
func (r *run) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.float()*float64(hi-lo))
}

// Run runs the suite once. It returns the Result, and an error when the
// run could not be carried out (the stack did not start, say); broken
// invariants are in Result.Problems, not in the error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	r := &run{cfg: cfg, out: cfg.Out, start: time.Now(),
		rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0xc4a05))} //nolint:gosec // chaos, not secrets
	res := &Result{Seed: cfg.Seed}

	dir, err := os.MkdirTemp("", "paystream-chaos-")
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach it
		return nil, fmt.Errorf("chaos: %w", err)
	}
	res.Dir = dir

	l := makeLoad(cfg.Seed, cfg.Payments, cfg.Duplicates, cfg.Conflicts, cfg.Invalid, publish.DefaultSubjectPrefix)
	fmt.Fprintf(r.out, "chaos: %d payments in %d messages (%d duplicates, %d conflicts, %d invalid) over %s, %d workers, seed %d\n",
		cfg.Payments, len(l.msgs), l.dups, l.conflicts, l.invalid, cfg.LoadDuration, cfg.Workers, cfg.Seed)

	err = r.execute(ctx, l, res)
	res.Duration = time.Since(r.start)
	r.mu.Lock()
	res.Events = r.events
	res.Problems = append(res.Problems, r.probs...)
	r.mu.Unlock()
	if res.Report != nil {
		res.Problems = append(res.Problems, res.Report.Problems()...)
	}
	res.Kills, res.Restarts, res.WorkerRestarts = int(r.kills.Load()), int(r.restarts.Load()), int(r.workerRestarts.Load())
	// Keep the logs and stores of a failed run; a stack that never started
	// left nothing to look at (its error quotes the logs).
	if (err == nil && res.OK() && !cfg.KeepDir) || r.stack == nil {
		_ = os.RemoveAll(dir)
		res.Dir = ""
	}
	return res, err
}

// execute starts the stack, runs the load and the faults, waits, audits and
// stops.
func (r *run) execute(ctx context.Context, l load, res *Result) (err error) {
	cfg := r.cfg
	r.stack, err = localstack.Start(ctx, localstack.Config{
		Dir:    res.Dir,
		BinDir: cfg.BinDir,
		Log:    logWriter{r},
		// Every commit durable in the server's memory before it is
		// acknowledged, so that a restart loses nothing acknowledged.
		PostgresSettings: []string{"synchronous_commit=on"},
		StopTimeout:      20 * time.Second,
	})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := r.stack.Close(); cerr != nil && err == nil {
			r.problem("stopping the stack: %v", cerr)
		}
	}()

	if _, r.simURL, err = r.stack.StartGatewaySim(ctx, "--seed", strconv.FormatInt(cfg.Seed, 10), "--log-level", "warn"); err != nil {
		return err
	}
	r.simCtl = newSimClient(r.simURL)
	defer r.simCtl.close()
	if err := r.simCtl.set(ctx, baseSim); err != nil {
		return err
	}
	r.env = workerEnv(r.simURL)
	for k, v := range cfg.WorkerEnv {
		r.env[k] = v
	}
	for i := range cfg.Workers {
		name := fmt.Sprintf("w%d", i+1)
		p, err := r.stack.StartWorker(ctx, name, r.env)
		if err != nil {
			return err
		}
		r.workers = append(r.workers, &slot{name: name, proc: p})
	}

	nc, err := nats.Connect(r.stack.NATSURL(), nats.Name("paystream-chaos"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		return fmt.Errorf("chaos: connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	pub, err := publish.New(ctx, js, publish.Config{Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	snd := &sender{pub: pub}

	// The load, the faults and the kill loop run together.
	r.start = time.Now()
	r.logf("load starts: %d messages at %.0f/s", len(l.msgs), float64(len(l.msgs))/cfg.LoadDuration.Seconds())
	expected := slices.Clone(l.validKeys)
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	var (
		wg       sync.WaitGroup
		loadDone = make(chan struct{})
		loadErr  error
		floodKey string
	)
	wg.Go(func() {
		defer close(loadDone)
		loadErr = snd.sendAll(loadCtx, l.msgs, float64(len(l.msgs))/cfg.LoadDuration.Seconds(), 8)
		if loadErr == nil {
			r.logf("load published: %d messages (%d publish retries)", snd.published.Load(), snd.retries.Load())
		}
	})
	faultsDone := make(chan struct{})
	wg.Go(func() {
		defer close(faultsDone)
		floodKey = r.faults(loadCtx, snd)
	})
	if cfg.MinKills > 0 {
		wg.Go(func() { r.killLoop(loadCtx, loadDone, faultsDone) })
	}
	wg.Wait()
	if loadErr != nil {
		return loadErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if floodKey != "" {
		expected = append(expected, floodKey)
	}
	res.Payments, res.Messages = len(expected), int(snd.published.Load())

	// Calm: the steady simulator, every worker running; then drain.
	if err := r.simCtl.set(ctx, baseSim); err != nil {
		return err
	}
	if err := r.ensureWorkers(ctx); err != nil {
		return err
	}
	a, err := audit.New(ctx, audit.Config{NATSURL: r.stack.NATSURL(), DatabaseURL: r.stack.DatabaseURL(), GatewayURL: r.simURL})
	if err != nil {
		return err
	}
	defer a.Close()
	r.logf("faults over; waiting for the work to drain (at most %s)", cfg.SettleTimeout)
	sctx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	lastPrint := time.Now()
	p, settleErr := a.WaitSettled(sctx, audit.Settled{Final: len(expected), DeadLetters: uint64(l.invalid)}, func(p audit.Progress) {
		if time.Since(lastPrint) >= 5*time.Second {
			lastPrint = time.Now()
			r.logf("%d of %d final, %d processing, %d pending, %d awaiting ack, %d dead letters",
				p.Final, len(expected), p.Processing, p.Pending, p.AckPending, p.DeadLetters)
		}
	})
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if settleErr != nil {
		r.problem("not settled within %s: %d of %d final, %d processing, %d pending, %d awaiting ack",
			cfg.SettleTimeout, p.Final, len(expected), p.Processing, p.Pending, p.AckPending)
	} else {
		r.logf("settled")
	}

	snap, err := a.Collect(ctx)
	if err != nil {
		return err
	}
	res.Report = audit.Check(snap, audit.Expect{ValidKeys: expected, InvalidMessages: l.invalid})

	// Every worker stops cleanly at the end too.
	for _, s := range r.slots() {
		if err := stopWorker(s.proc, shutdownTimeout+10*time.Second); err != nil {
			r.problem("final stop: %v", err)
		}
	}
	return nil
}

// faults injects the faults on a schedule spread over the load and returns
// the flood's idempotency key ("" without a flood).
func (r *run) faults(ctx context.Context, snd *sender) (floodKey string) {
	f := r.cfg.Faults
	d := r.cfg.LoadDuration
	at := func(frac float64) bool {
		return sleepUntil(ctx, r.start.Add(time.Duration(frac*float64(d))))
	}
	if f.Flood > 0 && at(0.08) {
		req := floodRequest(r.cfg.Seed)
		body, err := req.Marshal()
		if err != nil {
			r.problem("flood: %v", err)
			return ""
		}
		msgs := make([]loadMsg, f.Flood)
		for i := range msgs {
			msgs[i] = loadMsg{subject: "payments.requests." + req.MerchantID, body: body, msgID: fmt.Sprintf("flood-%d", i)}
		}
		r.event("flood: %d copies of payment %s at once", f.Flood, req.PaymentID)
		if err := snd.sendBurst(ctx, msgs, 32); err != nil {
			r.problem("flood: %v", err)
			return ""
		}
		floodKey = req.EffectiveKey()
	}
	if f.RateLimitBurst && at(0.15) {
		c := baseSim
		c.RateLimitRate = 0.5
		r.simFor(ctx, c, max(3*time.Second, d/10), "429 burst: half the charges answered 429 with Retry-After 1s")
	}
	if f.NATSRestart && at(0.25) {
		r.event("NATS restart")
		if err := r.stack.RestartNATS(ctx); err != nil {
			r.problem("NATS restart: %v", err)
		} else {
			r.restarts.Add(1)
			r.event("NATS back")
		}
	}
	if f.Outage && at(0.38) {
		c := baseSim
		c.ErrorRate = 1
		r.simFor(ctx, c, 5*breakerOpenTimeout/2, fmt.Sprintf("gateway outage: every charge 503, longer than the %s breaker open timeout", breakerOpenTimeout))
	}
	if f.SlowGateway && at(0.55) {
		c := baseSim
		c.Latency = gatewayTimeout + gatewayTimeout/2
		r.simFor(ctx, c, 3*time.Second, fmt.Sprintf("slow gateway: %s latency, above the %s call timeout", c.Latency, gatewayTimeout))
	}
	if f.PostgresRestart && at(0.68) {
		r.event("Postgres restart")
		if err := r.stack.RestartPostgres(ctx); err != nil {
			r.problem("Postgres restart: %v", err)
		} else {
			r.restarts.Add(1)
			r.event("Postgres back")
		}
	}
	if f.SIGTERM && at(0.80) {
		r.sigterm(ctx)
	}
	return floodKey
}

// simFor sets the simulator to c for d, then back to the steady state.
func (r *run) simFor(ctx context.Context, c sim.Config, d time.Duration, what string) {
	r.event("%s, for %s", what, d)
	if err := r.simCtl.set(ctx, c); err != nil {
		r.problem("%s: %v", what, err)
		return
	}
	sleep(ctx, d)
	if err := r.simCtl.set(context.WithoutCancel(ctx), baseSim); err != nil {
		r.problem("restore the simulator: %v", err)
		return
	}
	r.event("gateway back to normal")
}

// slots returns the worker slots.
func (r *run) slots() []*slot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*slot(nil), r.workers...)
}

// take marks a random running, idle worker busy and returns it; nil when
// there is none.
func (r *run) take() *slot {
	r.mu.Lock()
	var idle []*slot
	for _, s := range r.workers {
		if !s.busy && !s.proc.Exited() {
			idle = append(idle, s)
		}
	}
	r.mu.Unlock()
	if len(idle) == 0 {
		return nil
	}
	s := idle[int(r.float()*float64(len(idle)))]
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.busy {
		return nil
	}
	s.busy = true
	return s
}

func (r *run) release(s *slot, p *localstack.Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p != nil {
		s.proc = p
	}
	s.busy = false
}

// restartWorker starts the slot's worker again, retrying while the stack
// is in the middle of a restart.
func (r *run) restartWorker(ctx context.Context, s *slot) *localstack.Process {
	for {
		p, err := r.stack.StartWorker(ctx, s.name, r.env)
		if err == nil {
			r.workerRestarts.Add(1)
			return p
		}
		if ctx.Err() != nil {
			return nil
		}
		r.logf("restart %s: %v; retrying", s.name, firstLine(err))
		if !sleep(ctx, time.Second) {
			return nil
		}
	}
}

// killLoop SIGKILLs a random worker every 1–3s and restarts it shortly
// after, until the load and the faults are over and MinKills is reached (or
// MaxKills).
func (r *run) killLoop(ctx context.Context, loadDone, faultsDone <-chan struct{}) {
	for {
		if !sleep(ctx, r.between(time.Second, 3*time.Second)) {
			return
		}
		n := int(r.kills.Load())
		if r.cfg.MaxKills > 0 && n >= r.cfg.MaxKills {
			return
		}
		if n >= r.cfg.MinKills && closed(loadDone) && closed(faultsDone) {
			return
		}
		s := r.take()
		if s == nil {
			continue
		}
		if err := s.proc.Kill(); err != nil {
			r.release(s, nil)
			continue
		}
		_, _ = s.proc.Wait(context.WithoutCancel(ctx))
		r.kills.Add(1)
		r.event("kill -9 %s (pid %d), kill #%d", s.name, s.proc.PID(), r.kills.Load())
		if !sleep(ctx, r.between(300*time.Millisecond, time.Second)) {
			r.release(s, nil)
			return
		}
		r.release(s, r.restartWorker(ctx, s))
	}
}

// sigterm stops one worker under load with SIGTERM: it must exit 0 within
// its shutdown timeout plus the NATS drain; then it is started again.
func (r *run) sigterm(ctx context.Context) {
	var s *slot
	for s == nil {
		if s = r.take(); s == nil && !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
	limit := shutdownTimeout + 5*time.Second
	r.event("SIGTERM %s (pid %d) under load", s.name, s.proc.PID())
	start := time.Now()
	if err := stopWorker(s.proc, limit); err != nil {
		r.problem("SIGTERM: %v", err)
	} else {
		r.event("%s exited 0 %.1fs after SIGTERM (shutdown timeout %s)", s.name, time.Since(start).Seconds(), shutdownTimeout)
	}
	r.release(s, r.restartWorker(ctx, s))
}

// stopWorker sends SIGTERM and checks that the worker exits 0 within limit.
func stopWorker(p *localstack.Process, limit time.Duration) error {
	if p == nil || p.Exited() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	wctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	code, err := p.Wait(wctx)
	switch {
	case err != nil:
		_ = p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.Name(), limit)
	case code != 0:
		return fmt.Errorf("%s exited %d after SIGTERM", p.Name(), code)
	}
	return nil
}

// ensureWorkers restarts any worker that is not running.
func (r *run) ensureWorkers(ctx context.Context) error {
	for _, s := range r.slots() {
		if !s.proc.Exited() {
			continue
		}
		p := r.restartWorker(ctx, s)
		if p == nil {
			return ctx.Err()
		}
		r.release(s, p)
	}
	return nil
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// sleep waits for d or ctx; it reports whether d passed.
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

func sleepUntil(ctx context.Context, t time.Time) bool {
	return sleep(ctx, time.Until(t))
}

// logWriter turns localstack's progress lines into run log lines.
type logWriter struct{ r *run }

func (w logWriter) Write(b []byte) (int, error) {
	w.r.logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
