package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
	"github.com/paystream/paystream/publish"
)

// Scenario is one infrastructure fault (docs/reliability.md, "When the
// infrastructure fails"): a small stack — NATS, Postgres, the gateway
// simulator and two workers — under a steady load, one fault injected at a
// third of it and lifted again, then the same audit as the main run.
type Scenario struct {
	// Name selects it: make chaos SCENARIOS=name,...
	Name string
	// Doc says in one line what it does.
	Doc string
	// CI marks the scenarios of the CI-sized subset (SCENARIOS=ci).
	CI bool
	// PostgresSettings and NATSConfig shape the stack (see
	// localstack.Config); NATSConfig is the text of a nats-server
	// configuration file.
	PostgresSettings []string
	NATSConfig       string
	// WorkerEnv is merged over the suite's worker settings.
	WorkerEnv map[string]string
	// prepare runs once the stack and the simulator are up, before the
	// workers start: it may point the workers elsewhere (setWorkerEnv,
	// dbURL) and register cleanups.
	prepare func(ctx context.Context, r *infraRun) error
	// fault injects the fault, calls r.begin when it starts and r.end when
	// it is lifted.
	fault func(ctx context.Context, r *infraRun) error
	// excuse, when set, takes out of the report what the scenario's fault
	// is known to cause and documented not to promise (it records what it
	// took as a figure); never a lost payment or a double charge.
	excuse func(r *infraRun, snap *audit.Snapshot, rep *audit.Report)
}

// Scenarios returns the infrastructure scenarios, in the order
// SCENARIOS=infra runs them.
func Scenarios() []Scenario {
	return slices.Concat(failoverScenarios(), netScenarios(), diskScenarios(), connScenarios())
}

// ScenarioNames expands a comma-separated selection: "infra" is every
// infrastructure scenario, "ci" the CI subset; other names pass through
// unchanged (the caller knows "main" and "outbox").
func ScenarioNames(sel string) []string {
	var out []string
	for _, n := range strings.Split(sel, ",") {
		switch n = strings.TrimSpace(n); n {
		case "":
		case "infra", "ci":
			for _, s := range Scenarios() {
				if n == "infra" || s.CI {
					out = append(out, s.Name)
				}
			}
		default:
			out = append(out, n)
		}
	}
	return out
}

// LookupScenario returns the infrastructure scenario named name.
func LookupScenario(name string) (Scenario, bool) {
	for _, s := range Scenarios() {
		if s.Name == name {
			return s, true
		}
	}
	return Scenario{}, false
}

// InfraConfig configures RunInfra. The zero value of each field means its
// default.
type InfraConfig struct {
	// BinDir holds the binaries (make build nats-server); default "bin".
	BinDir string
	// Payments is the number of distinct valid payments; default 3,000.
	Payments int
	// LoadDuration is how long publishing takes; default 24s. The fault
	// starts at a third of it.
	LoadDuration time.Duration
	// Workers is the number of worker processes; default 2.
	Workers int
	// SettleTimeout bounds the wait for the work to drain; default 2m.
	SettleTimeout time.Duration
	// Seed seeds the load; zero means random.
	Seed int64
	// Out receives progress lines.
	Out io.Writer
	// KeepDir keeps the working directory even when the run passes.
	KeepDir bool
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c InfraConfig) WithDefaults() InfraConfig {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.Payments <= 0 {
		c.Payments = 3000
	}
	if c.LoadDuration <= 0 {
		c.LoadDuration = 24 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 2
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

// InfraResult is the outcome of one scenario.
type InfraResult struct {
	Scenario string
	Seed     int64
	// Payments is the number of distinct valid payments; Messages the
	// messages published.
	Payments, Messages int
	Report             *audit.Report
	Problems           []string
	// Fault is how long the fault lasted; Recover the time from its end
	// until every worker answered /readyz 200 and outcomes flowed again.
	Fault, Recover time.Duration
	// NotReady is the first not-ready answer of a worker's /readyz during
	// the fault ("" when every worker stayed ready).
	NotReady string
	// WorkerExits counts workers that exited on their own (a crash loop
	// shows here); each was started again.
	WorkerExits int
	// Figures are the scenario's own figures, name=value.
	Figures  []string
	Duration time.Duration
	Dir      string
}

// OK reports whether every invariant held.
func (r *InfraResult) OK() bool { return len(r.Problems) == 0 }

// FigureLine is the one-line summary of a scenario.
func (r *InfraResult) FigureLine() string {
	var lost, doubles, stuck, falseFailed, unknown, wrong int
	if r.Report != nil {
		lost, doubles, stuck = len(r.Report.Lost), len(r.Report.DoubleCharged), len(r.Report.Stuck)
		falseFailed, unknown, wrong = len(r.Report.FalseFailed), len(r.Report.Unknown), len(r.Report.WrongDeadLetters)
	}
	line := fmt.Sprintf("chaos-%s payments=%d messages=%d lost=%d double_charged=%d false_failed=%d stuck=%d unknown=%d wrong_dead_letters=%d fault=%s recover=%s worker_exits=%d duration=%s",
		r.Scenario, r.Payments, r.Messages, lost, doubles, falseFailed, stuck, unknown, wrong,
		r.Fault.Round(100*time.Millisecond), r.Recover.Round(100*time.Millisecond), r.WorkerExits, r.Duration.Round(time.Second))
	if len(r.Figures) > 0 {
		line += " " + strings.Join(r.Figures, " ")
	}
	return line + " not_ready=" + strconv.Quote(r.NotReady)
}

// infraSim is the simulator's steady state in the infrastructure
// scenarios: some declines, errors and lost answers, little latency.
var infraSim = sim.Config{
	Latency:          5 * time.Millisecond,
	LatencyJitter:    10 * time.Millisecond,
	DeclineRate:      0.02,
	ErrorRate:        0.005,
	LostResponseRate: 0.005,
	RetryAfter:       time.Second,
	HangFor:          30 * time.Second,
}

// infraRun is the state of one scenario run.
type infraRun struct {
	cfg   InfraConfig
	sc    Scenario
	out   io.Writer
	start time.Time

	stack  *localstack.Stack
	simURL string
	audit  *audit.Auditor
	js     jetstream.JetStream // the harness's own connection
	load   load
	snd    *sender
	// dbURL is the workers' and the auditor's database URL; prepare may
	// replace the stack's.
	dbURL string
	// auditURL, when set, is the auditor's database URL (default dbURL).
	auditURL string
	env      map[string]string
	perName  map[string]map[string]string
	cleanup  []func()
	hc       *http.Client
	// standby is the streaming standby of the failover scenarios.
	standby *pgcluster.Cluster
	// proxies are the network-fault scenarios' proxies: worker → link.
	proxies map[string]map[string]*toxiproxy.Proxy

	mu        sync.Mutex // guards everything below
	workers   map[string]*localstack.Process
	names     []string
	probs     []string
	figures   []string
	faultFrom time.Time
	faultTo   time.Time
	notReady  string
	recovered time.Duration
	exits     atomic.Int64
	// extraInvalid counts invalid messages the harness published on top
	// of the load's (the async failover's replay).
	extraInvalid atomic.Int64
}

func (r *infraRun) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, "  %6.1fs  %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *infraRun) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.logf("PROBLEM: %s", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.probs = append(r.probs, msg)
}

// figure adds a name=value figure to the line.
func (r *infraRun) figure(name string, value any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.figures = append(r.figures, fmt.Sprintf("%s=%v", name, value))
}

// begin marks the start of the fault.
func (r *infraRun) begin(format string, args ...any) {
	r.logf("FAULT: "+format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faultFrom = time.Now()
}

// end marks the fault lifted.
func (r *infraRun) end(format string, args ...any) {
	r.logf("LIFTED: "+format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faultTo = time.Now()
}

func (r *infraRun) faultTimes() (from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.faultFrom, r.faultTo
}

// setWorkerEnv sets worker name's settings over the common ones.
func (r *infraRun) setWorkerEnv(name string, env map[string]string) { r.perName[name] = env }

func (r *infraRun) workerEnv(name string) map[string]string {
	env := map[string]string{"PAYSTREAM_DATABASE_URL": r.dbURL}
	for k, v := range r.env {
		env[k] = v
	}
	for k, v := range r.perName[name] {
		env[k] = v
	}
	return env
}

// worker returns the current process of worker name.
func (r *infraRun) worker(name string) *localstack.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[name]
}

// RunInfra runs the infrastructure scenario named name (see Scenarios). It
// returns an error when the run could not be carried out; broken
// invariants are in the result's Problems.
func RunInfra(ctx context.Context, name string, cfg InfraConfig) (*InfraResult, error) {
	sc, ok := LookupScenario(name)
	if !ok {
		return nil, fmt.Errorf("chaos: no scenario %q", name)
	}
	cfg = cfg.WithDefaults()
	r := &infraRun{cfg: cfg, sc: sc, out: cfg.Out, start: time.Now(), perName: map[string]map[string]string{},
		workers: map[string]*localstack.Process{}, hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	res := &InfraResult{Scenario: name, Seed: cfg.Seed}
	dir, err := os.MkdirTemp("", "paystream-chaos-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach it
		return nil, fmt.Errorf("chaos: %w", err)
	}
	res.Dir = dir
	r.load = makeLoad(cfg.Seed, cfg.Payments, 0.05, 0.01, 0.01, publish.DefaultSubjectPrefix)
	fmt.Fprintf(r.out, "chaos-%s: %s\n  %d payments in %d messages over %s, %d workers, seed %d\n",
		name, sc.Doc, cfg.Payments, len(r.load.msgs), cfg.LoadDuration, cfg.Workers, cfg.Seed)

	err = r.execute(ctx, res)
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
	res.Duration = time.Since(r.start)
	r.mu.Lock()
	res.Problems = append(res.Problems, r.probs...)
	res.Figures = r.figures
	res.NotReady = r.notReady
	res.Recover = r.recovered
	if !r.faultFrom.IsZero() && !r.faultTo.IsZero() {
		res.Fault = r.faultTo.Sub(r.faultFrom)
	}
	r.mu.Unlock()
	res.WorkerExits = int(r.exits.Load())
	if res.Report != nil {
		res.Problems = append(res.Problems, res.Report.Problems()...)
	}
	if (err == nil && res.OK() && !cfg.KeepDir) || r.stack == nil {
		_ = os.RemoveAll(dir)
		res.Dir = ""
	}
	return res, err
}

// execute starts the stack, runs the load and the fault, waits, audits and
// stops.
func (r *infraRun) execute(ctx context.Context, res *InfraResult) (err error) {
	cfg := r.cfg
	lcfg := localstack.Config{
		Dir: res.Dir, BinDir: cfg.BinDir, Log: infraLog{r}, StopTimeout: 20 * time.Second,
		PostgresSettings: append([]string{"synchronous_commit=on"}, r.sc.PostgresSettings...),
	}
	lcfg.NATSConfig = r.sc.NATSConfig
	if r.stack, err = localstack.Start(ctx, lcfg); err != nil {
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
	simCtl := newSimClient(r.simURL)
	defer simCtl.close()
	if err := simCtl.set(ctx, infraSim); err != nil {
		return err
	}
	r.dbURL = r.stack.DatabaseURL()
	r.env = workerEnv(r.simURL)
	for k, v := range r.sc.WorkerEnv {
		r.env[k] = v
	}
	if r.sc.prepare != nil {
		if err := r.sc.prepare(ctx, r); err != nil {
			return err
		}
	}
	auditURL := r.auditURL
	if auditURL == "" {
		auditURL = r.dbURL
	}
	if r.audit, err = audit.New(ctx, audit.Config{NATSURL: r.stack.NATSURL(), DatabaseURL: auditURL, GatewayURL: r.simURL}); err != nil {
		return err
	}
	defer r.audit.Close()
	for i := range cfg.Workers {
		name := fmt.Sprintf("w%d", i+1)
		p, err := r.stack.StartWorker(ctx, name, r.workerEnv(name))
		if err != nil {
			return err
		}
		r.workers[name] = p
		r.names = append(r.names, name)
	}

	nc, err := nats.Connect(r.stack.NATSURL(), nats.Name("paystream-chaos"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		return fmt.Errorf("chaos: connect to NATS: %w", err)
	}
	defer nc.Close()
	if r.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	pub, err := publish.New(ctx, r.js, publish.Config{Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	r.snd = &sender{pub: pub}

	r.start = time.Now()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg               sync.WaitGroup
		loadErr, faultEr error
	)
	wg.Go(func() {
		loadErr = r.snd.sendAll(runCtx, r.load.msgs, float64(len(r.load.msgs))/cfg.LoadDuration.Seconds(), 8)
		if loadErr == nil {
			r.logf("load published: %d messages (%d publish retries)", r.snd.published.Load(), r.snd.retries.Load())
		}
	})
	wg.Go(func() {
		if !sleep(runCtx, cfg.LoadDuration/3) {
			return
		}
		faultEr = r.sc.fault(runCtx, r)
	})
	watchCtx, stopWatch := context.WithCancel(runCtx)
	var watch sync.WaitGroup
	watch.Go(func() { r.watch(watchCtx) })
	wg.Wait()
	if err := errors.Join(loadErr, faultEr); err != nil {
		stopWatch()
		watch.Wait()
		return err
	}
	res.Payments, res.Messages = len(r.load.validKeys), int(r.snd.published.Load())

	r.logf("fault over; waiting for the work to drain (at most %s)", cfg.SettleTimeout)
	sctx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	lastPrint := time.Now()
	p, settleErr := r.audit.WaitSettled(sctx, audit.Settled{Final: len(r.load.validKeys), DeadLetters: uint64(r.load.invalid + int(r.extraInvalid.Load()))}, func(p audit.Progress) {
		if time.Since(lastPrint) >= 5*time.Second {
			lastPrint = time.Now()
			r.logf("%d of %d final, %d processing, %d unknown, %d pending, %d awaiting ack, %d dead letters",
				p.Final, len(r.load.validKeys), p.Processing, p.Unknown, p.Pending, p.AckPending, p.DeadLetters)
		}
	})
	cancel()
	if settleErr == nil {
		// A worker may be ready again only after the others drained the
		// work (its database probe backs off, say): recovery is then every
		// worker ready with nothing left, which the watch sees a little
		// after the settling. Watch a while longer before calling it
		// missing.
		deadline := time.Now().Add(recoverAfterSettle)
		for r.recoveredAt() == 0 && time.Now().Before(deadline) {
			if !sleep(ctx, 100*time.Millisecond) {
				break
			}
		}
	}
	stopWatch()
	watch.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if settleErr != nil {
		r.problem("not settled within %s: %d of %d final, %d processing, %d unknown, %d pending, %d awaiting ack",
			cfg.SettleTimeout, p.Final, len(r.load.validKeys), p.Processing, p.Unknown, p.Pending, p.AckPending)
	} else {
		r.logf("settled")
	}
	if r.recoveredAt() == 0 {
		r.problem("no recovery seen: not every worker ready with outcomes flowing after the fault")
	}
	snap, err := r.audit.Collect(ctx)
	if err != nil {
		return err
	}
	res.Report = audit.Check(snap, audit.Expect{ValidKeys: r.load.validKeys, InvalidMessages: r.load.invalid + int(r.extraInvalid.Load())})
	if r.sc.excuse != nil {
		r.sc.excuse(r, snap, res.Report)
	}
	for _, name := range r.names {
		if err := stopWorker(r.worker(name), shutdownTimeout+10*time.Second); err != nil {
			r.problem("final stop: %v", err)
		}
	}
	return nil
}

func (r *infraRun) recoveredAt() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recovered
}

// watch polls every worker's /readyz: it records the first not-ready
// answer during the fault (and what `paystreamctl status` says a heartbeat
// later) and, after the fault, the time until every worker is
// ready and the outcomes stream grew; it starts again a worker that exited
// on its own (counted).
func (r *infraRun) watch(ctx context.Context) {
	var status sync.WaitGroup
	defer status.Wait()
	var outcomesAtEnd, outcomesAtStart uint64
	haveBase, haveStart := false, false
	for sleep(ctx, 200*time.Millisecond) {
		r.restartExited(ctx)
		from, to := r.faultTimes()
		if from.IsZero() {
			continue
		}
		allReady := true
		for _, name := range r.names {
			p := r.worker(name)
			ok, body := r.readyz(ctx, p)
			if ok {
				continue
			}
			allReady = false
			if to.IsZero() || time.Since(to) < 2*time.Second {
				r.mu.Lock()
				if r.notReady == "" {
					r.notReady = name + ": " + body
					r.mu.Unlock()
					r.logf("%s /readyz: %s", name, body)
					status.Go(func() { r.statusDuringFault(ctx) })
				} else {
					r.mu.Unlock()
				}
			}
		}
		if (!to.IsZero() || haveStart) && (to.IsZero() || r.recoveredAt() != 0) {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		pr, err := r.audit.Progress(pctx)
		cancel()
		if err != nil {
			continue
		}
		if !haveStart {
			outcomesAtStart, haveStart = pr.Outcomes, true
		}
		if to.IsZero() {
			continue
		}
		if !haveBase {
			outcomesAtEnd, haveBase = pr.Outcomes, true
			// Work the fleet got done while the fault lasted.
			r.figure("outcomes_during_fault", int64(outcomesAtEnd)-int64(outcomesAtStart))
		}
		if allReady && (pr.Outcomes > outcomesAtEnd || pr.Drained()) {
			d := time.Since(to)
			r.mu.Lock()
			r.recovered = max(d, time.Millisecond)
			r.mu.Unlock()
			r.logf("recovered %.1fs after the fault ended: every worker ready, outcomes flowing", d.Seconds())
		}
	}
}

// readyz asks worker process p whether it is ready.
func (r *infraRun) readyz(ctx context.Context, p *localstack.Process) (bool, string) {
	if p == nil || p.Exited() {
		return false, "not running"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr()+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return false, "no answer: " + firstLine(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(b))
}

// restartExited starts again every worker that exited on its own.
func (r *infraRun) restartExited(ctx context.Context) {
	for _, name := range r.names {
		p := r.worker(name)
		if p == nil || !p.Exited() {
			continue
		}
		code, _ := p.Wait(ctx)
		r.exits.Add(1)
		r.logf("worker %s exited %d on its own (log %s); starting it again", name, code, p.LogPath())
		np, err := r.stack.StartWorker(ctx, name, r.workerEnv(name))
		if err != nil {
			r.logf("restart %s: %v", name, firstLine(err))
			continue
		}
		r.mu.Lock()
		r.workers[name] = np
		r.mu.Unlock()
	}
}

// infraLog turns localstack's progress lines into run log lines.
type infraLog struct{ r *infraRun }

func (w infraLog) Write(b []byte) (int, error) {
	w.r.logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// recoverAfterSettle is how long the watch goes on, once the work has
// settled, for a recovery it has not seen yet.
const recoverAfterSettle = 15 * time.Second

// heartbeatLag is how long a worker's heartbeat record may take to say
// what its /readyz says (the heartbeat interval, and a little).
const heartbeatLag = 5500 * time.Millisecond

// statusDuringFault runs `paystreamctl status` once, a heartbeat interval
// after the first not-ready answer (or when the fault ends, if sooner), and
// records its verdict as the figure status.
func (r *infraRun) statusDuringFault(ctx context.Context) {
	deadline := time.Now().Add(heartbeatLag)
	for time.Now().Before(deadline) {
		if _, to := r.faultTimes(); !to.IsZero() {
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
	if v := r.fleetStatus(ctx); v != "" {
		r.logf("paystreamctl status: %s", v)
		r.figure("status", strconv.Quote(v))
	}
}

// fleetStatus runs `paystreamctl status` against the stack and returns its
// verdict: "healthy", or the reasons of a degraded fleet; "" when the
// binary is missing.
func (r *infraRun) fleetStatus(ctx context.Context) string {
	bin := filepath.Join(r.stack.BinDir(), localstack.BinPaystreamctl)
	if _, err := os.Stat(bin); err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	dbURL := r.auditURL
	if dbURL == "" {
		dbURL = r.dbURL
	}
	cmd := exec.CommandContext(ctx, bin, "status")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PAYSTREAM_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PAYSTREAM_NATS_URL="+r.stack.NATSURL(), "PAYSTREAM_DATABASE_URL="+dbURL)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err == nil {
		return "healthy"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
	line = strings.TrimPrefix(line, "paystreamctl: ")
	if len(line) > 400 {
		line = line[:400] + "…"
	}
	return line
}
