// Package chaos is paystream's fault-injection suite (`make chaos`, and a
// smaller run in the test suite): real processes — NATS, Postgres, the
// gateway simulator and three workers (package localstack) — and a load of
// valid payments, duplicates, conflicts and invalid messages, while it
// kills workers with SIGKILL, stops one with SIGTERM, freezes one with
// SIGSTOP past its lease, restarts NATS and Postgres, takes the gateway
// down, slows it past the call timeout, rate limits it, loses its
// responses, floods one idempotency key, and charges a batch of payments
// whose answers are lost before the gateway goes down for them (through a
// proxy between the workers and the simulator). Then it checks the
// guarantees from the outside (package audit) and prints one figure line.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
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
	// Freeze stops one worker under load with SIGSTOP for longer than its
	// lease and its ack wait, so that its payments are taken over, then
	// continues it with SIGCONT: its late writes must be fenced.
	Freeze bool
	// AmbiguousOutage publishes this many payments whose charge goes
	// through at the gateway while the answer is lost; then the gateway is
	// down for them (charges and lookups answered 503) until each has spent
	// its whole delivery budget, and comes back. 0 = none.
	AmbiguousOutage int
}

// AllFaults is every fault, with a flood of 300 copies and an ambiguous
// outage of 10 payments.
var AllFaults = Faults{Flood: 300, RateLimitBurst: true, NATSRestart: true, Outage: true,
	SlowGateway: true, PostgresRestart: true, SIGTERM: true, Freeze: true, AmbiguousOutage: 10}

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
	// PAYSTREAM_MAX_DELIVER=5 to see payments exhausted; a smaller budget
	// also ends the ambiguous outage sooner).
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
// redeliveries come and the sweeper runs within the run. The delivery
// budget — 10 deliveries, retried after 100ms doubling up to 1s, at most
// 6.5s of retry delays — outlasts what any one fault costs a payment (an
// open breaker pauses the pulls rather than spend deliveries), and is
// short enough for the ambiguous outage to outlast it early in a run. The
// lease must exceed the gateway timeout by more than 2s (docs/contract.md
// §6).
const (
	gatewayTimeout     = time.Second
	breakerOpenTimeout = 2 * time.Second
	shutdownTimeout    = 5 * time.Second
	lease              = 3500 * time.Millisecond
	ackWait            = 4 * time.Second
	maxDeliver         = 10
	retryBackoff       = 100 * time.Millisecond
	retryBackoffMax    = time.Second
)

func workerEnv(gatewayURL string) map[string]string {
	return map[string]string{
		"PAYSTREAM_GATEWAY_URL":          gatewayURL,
		"PAYSTREAM_GATEWAY_TIMEOUT":      gatewayTimeout.String(),
		"PAYSTREAM_LEASE":                lease.String(),
		"PAYSTREAM_ACK_WAIT":             ackWait.String(),
		"PAYSTREAM_MAX_DELIVER":          strconv.Itoa(maxDeliver),
		"PAYSTREAM_RETRY_BACKOFF":        retryBackoff.String(),
		"PAYSTREAM_RETRY_BACKOFF_MAX":    retryBackoffMax.String(),
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
	// SIGTERM); Freezes SIGSTOPs of workers (each continued later).
	Kills, Restarts, WorkerRestarts, Freezes int
	// Ambiguous counts the payments of the ambiguous outage that the
	// gateway charged while their answer was lost.
	Ambiguous int
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
	var (
		lost, doubles, stuck, wrong, exhausted, falseFailed, unknown int
		conflicts                                                    int64
	)
	if r.Report != nil {
		lost, doubles, stuck, wrong = len(r.Report.Lost), len(r.Report.DoubleCharged), len(r.Report.Stuck), len(r.Report.WrongDeadLetters)
		exhausted = r.Report.FailedCodes["exhausted"] + len(r.Report.DeadLetteredOnly)
		falseFailed, unknown, conflicts = len(r.Report.FalseFailed), len(r.Report.Unknown), r.Report.InFlightConflicts
	}
	return fmt.Sprintf("chaos payments=%d messages=%d kills=%d restarts=%d worker_restarts=%d lost=%d double_charged=%d stuck=%d wrong_dead_letters=%d exhausted=%d duration=%s"+
		" freezes=%d in_flight_conflicts=%d false_failed=%d unknown=%d",
		r.Payments, r.Messages, r.Kills, r.Restarts, r.WorkerRestarts, lost, doubles, stuck, wrong, exhausted, r.Duration.Round(time.Second),
		r.Freezes, conflicts, falseFailed, unknown)
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
	proxy  *gatewayProxy
	audit  *audit.Auditor
	env    map[string]string

	mu      sync.Mutex // guards workers, events, problems
	workers []*slot
	events  []string
	probs   []string

	kills, restarts, workerRestarts, freezes atomic.Int64
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
	res.Freezes = int(r.freezes.Load())
	if r.proxy != nil {
		res.Ambiguous = int(r.proxy.lost.Load())
	}
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
	if r.proxy, err = startGatewayProxy(r.simURL); err != nil {
		return err
	}
	defer r.proxy.close()
	r.logf("gateway proxy %s → %s", r.proxy.url, r.simURL)
	// The auditor reads the rows during the run too (the ambiguous outage
	// watches its payments).
	r.audit, err = audit.New(ctx, audit.Config{NATSURL: r.stack.NATSURL(), DatabaseURL: r.stack.DatabaseURL(), GatewayURL: r.simURL})
	if err != nil {
		return err
	}
	defer r.audit.Close()
	r.env = workerEnv(r.proxy.url)
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
		wg        sync.WaitGroup
		loadDone  = make(chan struct{})
		loadErr   error
		faultKeys []string
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
		faultKeys = r.faults(loadCtx, snd)
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
	expected = append(expected, faultKeys...)
	res.Payments, res.Messages = len(expected), int(snd.published.Load())

	// Calm: the steady simulator, every worker running; then drain.
	if err := r.simCtl.set(ctx, baseSim); err != nil {
		return err
	}
	if err := r.ensureWorkers(ctx); err != nil {
		return err
	}
	a := r.audit
	r.logf("faults over; waiting for the work to drain and every unknown row to be settled (at most %s)", cfg.SettleTimeout)
	sctx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	lastPrint := time.Now()
	p, settleErr := a.WaitSettled(sctx, audit.Settled{Final: len(expected), DeadLetters: uint64(l.invalid)}, func(p audit.Progress) {
		if time.Since(lastPrint) >= 5*time.Second {
			lastPrint = time.Now()
			r.logf("%d of %d final, %d processing, %d unknown, %d pending, %d awaiting ack, %d dead letters",
				p.Final, len(expected), p.Processing, p.Unknown, p.Pending, p.AckPending, p.DeadLetters)
		}
	})
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if settleErr != nil {
		r.problem("not settled within %s: %d of %d final, %d processing, %d unknown, %d pending, %d awaiting ack",
			cfg.SettleTimeout, p.Final, len(expected), p.Processing, p.Unknown, p.Pending, p.AckPending)
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
// the idempotency keys of the valid payments it published (the flood's and
// the ambiguous outage's). The ambiguous outage comes first and the freeze
// runs beside the others, which come one after the other; faults returns
// when all are over.
//
// The faults that hold every payment's next delivery back for longer than
// the sweep grace — the NATS restart (lost naks wait for the ack wait), the
// outage and the slow gateway (open breakers pause the pulls) — wait until
// the ambiguous outage's payments have spent their deliveries: the sweeper
// re-publishes a payment whose retry is that late, and the copy comes with
// a fresh budget, so that the payment would be retried until the gateway
// comes back instead of ending (docs/reliability.md). The freeze holds back
// only what the frozen worker had pulled, and is not kept waiting: a copy
// it causes costs the ambiguous outage a second budget at most.
func (r *run) faults(ctx context.Context, snd *sender) (keys []string) {
	f := r.cfg.Faults
	d := r.cfg.LoadDuration
	at := func(frac float64) bool {
		return sleepUntil(ctx, r.start.Add(time.Duration(frac*float64(d))))
	}
	var (
		wg            sync.WaitGroup
		ambiguousKeys []string
		spent         = make(chan struct{}) // closed once the ambiguous payments are spent
	)
	afterSpent := func() bool {
		select {
		case <-spent:
			return true
		case <-ctx.Done():
			return false
		}
	}
	defer func() {
		wg.Wait()
		keys = append(keys, ambiguousKeys...)
	}()
	if f.AmbiguousOutage > 0 {
		wg.Go(func() {
			if at(0.02) {
				ambiguousKeys = r.ambiguousOutage(ctx, snd, f.AmbiguousOutage, spent)
			} else {
				close(spent)
			}
		})
	} else {
		close(spent)
	}
	if f.Freeze {
		wg.Go(func() {
			if at(0.10) {
				r.freeze(ctx)
			}
		})
	}
	if f.Flood > 0 && at(0.08) {
		req := floodRequest(r.cfg.Seed)
		body, err := req.Marshal()
		if err != nil {
			r.problem("flood: %v", err)
			return nil
		}
		msgs := make([]loadMsg, f.Flood)
		for i := range msgs {
			msgs[i] = loadMsg{subject: "payments.requests." + req.MerchantID, body: body, msgID: fmt.Sprintf("flood-%d", i)}
		}
		r.event("flood: %d copies of payment %s at once", f.Flood, req.PaymentID)
		if err := snd.sendBurst(ctx, msgs, 32); err != nil {
			r.problem("flood: %v", err)
			return nil
		}
		keys = append(keys, req.EffectiveKey())
	}
	if f.RateLimitBurst && at(0.15) {
		c := baseSim
		c.RateLimitRate = 0.5
		r.simFor(ctx, c, max(3*time.Second, d/10), "429 burst: half the charges answered 429 with Retry-After 1s")
	}
	if f.NATSRestart && at(0.25) && afterSpent() {
		r.event("NATS restart")
		if err := r.stack.RestartNATS(ctx); err != nil {
			r.problem("NATS restart: %v", err)
		} else {
			r.restarts.Add(1)
			r.event("NATS back")
		}
	}
	if f.Outage && at(0.38) && afterSpent() {
		c := baseSim
		c.ErrorRate = 1
		r.simFor(ctx, c, 5*breakerOpenTimeout/2, fmt.Sprintf("gateway outage: every charge 503, longer than the %s breaker open timeout", breakerOpenTimeout))
	}
	if f.SlowGateway && at(0.55) && afterSpent() {
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
	return keys
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
		// A killed process is reaped at once; bound the wait all the same,
		// so that one that cannot be reaped does not hang the kill loop.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, _ = s.proc.Wait(wctx)
		cancel()
		r.kills.Add(1)
		r.event("kill -9 %s (pid %d), kill #%d", s.name, s.proc.PID(), r.kills.Load())
		if !sleep(ctx, r.between(300*time.Millisecond, time.Second)) {
			r.release(s, nil)
			return
		}
		r.release(s, r.restartWorker(ctx, s))
	}
}

// takeWait waits until a worker can be taken (see take); nil when ctx
// ended first.
func (r *run) takeWait(ctx context.Context) *slot {
	for {
		if s := r.take(); s != nil {
			return s
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return nil
		}
	}
}

// sigterm stops one worker under load with SIGTERM: it must exit 0 within
// its shutdown timeout plus the NATS drain; then it is started again.
func (r *run) sigterm(ctx context.Context) {
	s := r.takeWait(ctx)
	if s == nil {
		return
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

// freeze stops one worker under load with SIGSTOP for longer than its lease
// and its ack wait, so that its messages are redelivered and its payments
// taken over while it cannot run, then continues it with SIGCONT. What it
// had in flight then carries on with leases that are no longer its own:
// each write goes through the lease's fence and must change nothing (the
// audit checks the result). The worker must still be running afterwards.
func (r *run) freeze(ctx context.Context) {
	s := r.takeWait(ctx)
	if s == nil {
		return
	}
	defer r.release(s, nil)
	l, aw := envDuration(r.env, "PAYSTREAM_LEASE", lease), envDuration(r.env, "PAYSTREAM_ACK_WAIT", ackWait)
	d := max(l, aw) + 2*time.Second
	p := s.proc
	before, berr := deliveryOutcomes(ctx, r.simCtl.http, p.HTTPAddr())
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		r.problem("SIGSTOP %s: %v", s.name, err)
		return
	}
	r.freezes.Add(1)
	r.event("SIGSTOP %s (pid %d) under load for %s, past its %s lease and %s ack wait", s.name, p.PID(), d, l, aw)
	start := time.Now()
	sleep(ctx, d) // cut short when the run is cancelled: SIGCONT either way
	if err := p.Signal(syscall.SIGCONT); err != nil {
		r.problem("SIGCONT %s: %v", s.name, err)
		return
	}
	r.event("SIGCONT %s after %.1fs", s.name, time.Since(start).Seconds())
	// Its late writes come within a gateway timeout or so.
	if !sleep(ctx, 2*time.Second) {
		return
	}
	if p.Exited() {
		code, _ := p.Wait(ctx)
		r.problem("%s exited %d after SIGCONT (log %s)", s.name, code, p.LogPath())
		return
	}
	// For the log only: what the worker says it did since SIGSTOP (fenced:
	// a write its lease's fence refused). The audit decides whether its
	// late writes changed anything.
	after, err := deliveryOutcomes(ctx, r.simCtl.http, p.HTTPAddr())
	if err = errors.Join(berr, err); err != nil {
		r.logf("%s: outcomes unknown: %v", s.name, err)
		return
	}
	var since []string
	for _, o := range slices.Sorted(maps.Keys(after)) {
		if n := after[o] - before[o]; n > 0 {
			since = append(since, fmt.Sprintf("%s %d", o, int(n)))
		}
	}
	r.event("%s still running; its deliveries since SIGSTOP by outcome (its own metrics): %s", s.name, strings.Join(since, ", "))
}

// deliveryOutcomes reads a worker's count of deliveries by outcome
// (paystream_messages_total on its /metrics at addr).
func deliveryOutcomes(ctx context.Context, hc *http.Client, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("chaos: worker metrics: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("chaos: worker metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return nil, fmt.Errorf("chaos: worker metrics: %w", err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("chaos: worker metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, `paystream_messages_total{outcome="`)
		if !ok {
			continue
		}
		outcome, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		if n, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[outcome] = n
		}
	}
	return out, nil
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
