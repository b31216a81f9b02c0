// Package demo runs `make demo` and `make dev`: the whole paystream system
// on one machine (package localstack), a published load of payments, and —
// for the demo — a summary and a verdict checked from the outside
// (package audit).
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/paystream/paystream/internal/testenv/audit"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

// Defaults of Config.
const (
	DefaultCount         = 20_000
	DefaultDuplicates    = 0.10
	DefaultInvalid       = 0.02
	DefaultWorkers       = 3
	DefaultMerchants     = 10
	DefaultSettleTimeout = 150 * time.Second
)

// Config configures a demo run. The zero value of each field means its
// default.
type Config struct {
	// BinDir holds the binaries (make build nats-server); default "bin".
	BinDir string
	// Dir is the stack's working directory; default a temporary directory,
	// removed at the end.
	Dir string
	// DatabaseURL, when set, is the Postgres database to use instead of a
	// throwaway cluster (PAYSTREAM_DATABASE_URL).
	DatabaseURL string
	// Count is the number of messages published; default 20,000.
	Count int
	// Duplicates and Invalid are the fractions of duplicate and invalid
	// messages; defaults 0.10 and 0.02.
	Duplicates, Invalid float64
	// Workers is the number of worker processes; default 3.
	Workers int
	// Seed seeds the load; zero means a random seed (printed).
	Seed int64
	// SettleTimeout bounds the wait for the work to drain; default 150s.
	SettleTimeout time.Duration
	// Out receives the demo's output.
	Out io.Writer
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.Count == 0 {
		c.Count = DefaultCount
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.Invalid == 0 {
		c.Invalid = DefaultInvalid
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.Seed == 0 {
		c.Seed = rand.Int64N(1<<62) + 1 //nolint:gosec // a load seed
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = DefaultSettleTimeout
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// ErrVerdict is returned by Run when the verdict fails.
var ErrVerdict = errors.New("verdict failed")

// simArgs are the gateway simulator's flags: a little latency, declines,
// errors, rate limiting and lost responses, like a real provider on a bad
// day.
var simArgs = []string{
	"--latency", "2ms", "--latency-jitter", "8ms",
	"--decline-rate", "0.03", "--error-rate", "0.02", "--rate-limit-rate", "0.005",
	"--lost-response-rate", "0.01", "--retry-after", "1s",
}

// workerEnv is the workers' configuration: a short gateway timeout and a
// quick backoff, so that retries settle within the demo.
func workerEnv(gatewayURL string) map[string]string {
	return map[string]string{
		"PAYSTREAM_GATEWAY_URL":       gatewayURL,
		"PAYSTREAM_GATEWAY_TIMEOUT":   "2s",
		"PAYSTREAM_LEASE":             "5s",
		"PAYSTREAM_ACK_WAIT":          "10s",
		"PAYSTREAM_RETRY_BACKOFF":     "50ms",
		"PAYSTREAM_RETRY_BACKOFF_MAX": "2s",
		"PAYSTREAM_MAX_DELIVER":       "20",
		"PAYSTREAM_SHUTDOWN_TIMEOUT":  "10s",
		"PAYSTREAM_DUPLICATE_WINDOW":  "10m",
		"PAYSTREAM_SWEEP_INTERVAL":    "2s",
		"PAYSTREAM_SWEEP_GRACE":       "5s",
	}
}

// stack is a started local system with its simulator and workers.
type stack struct {
	*localstack.Stack
	simURL  string
	workers []*localstack.Process
	// apiKey is the gateway API key the simulator requires and the workers
	// send (from keyFile); no output of the run may hold it.
	apiKey, keyFile string
}

func startStack(ctx context.Context, cfg Config, out io.Writer) (*stack, error) {
	ls, err := localstack.Start(ctx, localstack.Config{
		Dir:         cfg.Dir,
		BinDir:      cfg.BinDir,
		DatabaseURL: cfg.DatabaseURL,
		Log:         prefixWriter{w: out, prefix: "  "},
		StopTimeout: 20 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	s := &stack{Stack: ls}
	// The simulator requires an API key, as a real gateway does; the
	// workers read theirs from a file.
	key, simKeys, workerKey, err := writeAPIKey(ls.Dir())
	if err != nil {
		_ = ls.Close()
		return nil, err
	}
	s.apiKey, s.keyFile = key, workerKey
	args := append(slices.Clone(simArgs), "--seed", strconv.FormatInt(cfg.Seed, 10), "--keys-file", simKeys)
	if _, s.simURL, err = ls.StartGatewaySim(ctx, args...); err != nil {
		_ = ls.Close()
		return nil, err
	}
	env := workerEnv(s.simURL)
	env["PAYSTREAM_GATEWAY_API_KEY_FILE"] = workerKey
	for i := range cfg.Workers {
		w, err := ls.StartWorker(ctx, fmt.Sprintf("w%d", i+1), env)
		if err != nil {
			_ = ls.Close()
			return nil, err
		}
		s.workers = append(s.workers, w)
	}
	return s, nil
}

// Dev starts the stack and leaves it running until ctx ends (Ctrl-C),
// printing how to publish and inspect; then it stops every process.
func Dev(ctx context.Context, cfg Config) error {
	cfg = cfg.WithDefaults()
	out := cfg.Out
	fmt.Fprintf(out, "paystream dev: starting NATS, Postgres, the gateway simulator and %d workers\n", cfg.Workers)
	s, err := startStack(ctx, cfg, out)
	if err != nil {
		return err
	}
	defer s.Close()
	bin := cfg.BinDir
	// One write, so that a reader who sees the first line sees them all.
	var b strings.Builder
	fmt.Fprintf(&b, "\nrunning; Ctrl-C stops every process. Logs: %s/*.log\n", s.Dir())
	b.WriteString(consoleLine(ctx, s))
	fmt.Fprintf(&b, "  publish:  %s --nats-url %s --count 1000 --duplicates 0.1 --invalid 0.02\n", filepath.Join(bin, "publisher"), s.NATSURL())
	fmt.Fprintf(&b, "  psql:     psql '%s' -c 'SELECT status, count(*) FROM payments GROUP BY 1'\n", s.DatabaseURL())
	fmt.Fprintf(&b, "  nats:     nats --server %s stream ls   (monitoring %s/jsz?streams=true)\n", s.NATSURL(), s.NATSMonitorURL())
	fmt.Fprintf(&b, "  gateway:  curl %s/v1/stats   (change faults: curl -X PUT %s/v1/config -d '{\"error_rate\":1}')\n", s.simURL, s.simURL)
	for _, w := range s.workers {
		fmt.Fprintf(&b, "  metrics:  http://%s/metrics   (%s; /readyz)\n", w.HTTPAddr(), w.Name())
	}
	fmt.Fprintf(&b, "  env:      export PAYSTREAM_NATS_URL=%s PAYSTREAM_DATABASE_URL='%s' PAYSTREAM_GATEWAY_URL=%s PAYSTREAM_GATEWAY_API_KEY_FILE=%s\n",
		s.NATSURL(), s.DatabaseURL(), s.simURL, s.keyFile)
	fmt.Fprintf(&b, "  operate:  %s status   (after the export; also payment show, payments ls, dlq ls|show|replay, retention run: docs/operations.md)\n",
		filepath.Join(bin, "paystreamctl"))
	_, _ = io.WriteString(out, b.String())
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping every process")
	return stopWorkers(s.workers, 20*time.Second)
}

// Run runs the demo: start, publish, settle, summarise, check, stop. It
// returns ErrVerdict (wrapped) when a guarantee failed.
func Run(ctx context.Context, cfg Config) (err error) {
	cfg = cfg.WithDefaults()
	rec := &recorder{w: cfg.Out}
	out := io.Writer(rec)
	start := time.Now()
	fmt.Fprintf(out, "paystream demo: %d payment requests through NATS JetStream, Postgres, a gateway simulator and %d workers\n\n",
		cfg.Count, cfg.Workers)
	s, err := startStack(ctx, cfg, out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	exp, err := publishLoad(ctx, cfg, s, out)
	if err != nil {
		return err
	}

	acfg := audit.Config{NATSURL: s.NATSURL(), DatabaseURL: s.DatabaseURL(), GatewayURL: s.simURL}
	if cfg.DatabaseURL != "" {
		acfg.Keys = exp.ValidKeys
	}
	a, err := audit.New(ctx, acfg)
	if err != nil {
		return err
	}
	defer a.Close()

	settleStart := time.Now()
	sctx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	lastPrint := time.Now()
	_, settleErr := a.WaitSettled(sctx, audit.Settled{Final: len(exp.ValidKeys), DeadLetters: uint64(exp.InvalidMessages)},
		func(p audit.Progress) {
			if time.Since(lastPrint) >= 5*time.Second {
				lastPrint = time.Now()
				fmt.Fprintf(out, "  %4.0fs  %6d of %d payments final, %d dead letters, %d messages pending, %d awaiting ack\n",
					time.Since(settleStart).Seconds(), p.Final, len(exp.ValidKeys), p.DeadLetters, p.Pending, p.AckPending)
			}
		})
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if settleErr != nil {
		fmt.Fprintf(out, "  not settled after %s: checking what is there\n", cfg.SettleTimeout)
	} else {
		fmt.Fprintf(out, "  settled %.1fs after publishing started\n", time.Since(settleStart).Seconds())
	}

	snap, err := a.Collect(ctx)
	if err != nil {
		return err
	}
	rep := audit.Check(snap, exp)

	// Search everything the run produced for the gateway API key: the
	// pages now, while the workers serve them; logs, streams and tables
	// once they have stopped.
	scan := newLeakScan(s.apiKey)
	scan.pages(ctx, scanPages(s))
	keyErr := checkKeyRequired(ctx, s.simURL)
	// The operators' view of the run, while the workers still run.
	ctlOut, ctlCode, ctlErr := ctlStatus(ctx, cfg.BinDir, s)
	scan.check("paystreamctl", "paystreamctl status", ctlOut)

	fmt.Fprintf(out, "\nstopping the workers with SIGTERM\n")
	rss := peakRSS(s.workers)
	stopErr := stopWorkers(s.workers, 20*time.Second)
	scan.logs(s.Dir())
	scan.streams(ctx, s.NATSURL())
	scan.rows(ctx, s.DatabaseURL())

	printSummary(out, rep, rss, stopErr)
	scan.check("demo output", "the demo's output", rec.Bytes())
	leaks, leakSummary := scan.verdict()
	fmt.Fprintf(out, "  secrets\n    %-18s %10s  %s\n", "gateway API key", "", leakSummary)
	printStatus(out, cfg.BinDir, ctlOut, ctlCode, ctlErr)
	problems := rep.Problems()
	problems = append(problems, leaks...)
	if keyErr != nil {
		problems = append(problems, keyErr.Error())
	}
	if settleErr != nil {
		problems = append(problems, fmt.Sprintf("not settled within %s", cfg.SettleTimeout))
	}
	if stopErr != nil {
		problems = append(problems, stopErr.Error())
	}
	if ctlErr != nil {
		problems = append(problems, "paystreamctl status: "+ctlErr.Error())
	}
	fmt.Fprintf(out, "\ntotal time %.1fs\n", time.Since(start).Seconds())
	if len(problems) > 0 {
		fmt.Fprintf(out, "verdict: FAILED\n")
		for _, p := range problems {
			fmt.Fprintf(out, "  - %s\n", p)
		}
		return fmt.Errorf("%w: %s", ErrVerdict, strings.Join(problems, "; "))
	}
	fmt.Fprintf(out, "verdict: nothing lost, nobody charged twice\n")
	return nil
}

// scanPages are the HTTP pages of the run to search for the API key: each
// worker's /metrics and /readyz, and the simulator's /metrics, /v1/stats
// and /v1/config.
func scanPages(s *stack) []string {
	var urls []string
	for _, w := range s.workers {
		urls = append(urls, "http://"+w.HTTPAddr()+"/metrics", "http://"+w.HTTPAddr()+"/readyz")
	}
	return append(urls, s.simURL+"/metrics", s.simURL+"/v1/stats", s.simURL+"/v1/config")
}

// publisherSummary is the publisher's --summary-json output.
type publisherSummary struct {
	Published                  int64   `json:"published"`
	DuplicatesRejectedByServer int64   `json:"duplicates_rejected_by_server"`
	Failed                     int64   `json:"failed"`
	Valid                      int64   `json:"valid"`
	DuplicatesSent             int64   `json:"duplicates_sent"`
	InvalidSent                int64   `json:"invalid_sent"`
	Elapsed                    float64 `json:"elapsed"`
	Rate                       float64 `json:"rate"`
}

// publishLoad runs the publisher binary and works out, from the same seed,
// what it published.
func publishLoad(ctx context.Context, cfg Config, s *stack, out io.Writer) (audit.Expect, error) {
	var exp audit.Expect
	gen := publish.GenOptions{Merchants: DefaultMerchants, Duplicates: cfg.Duplicates, Invalid: cfg.Invalid}
	if err := gen.Validate(); err != nil {
		return exp, err
	}
	for i := range cfg.Count {
		it := publish.Generate(cfg.Seed, i, gen)
		switch it.Kind {
		case publish.KindValid:
			exp.ValidKeys = append(exp.ValidKeys, it.Request.EffectiveKey())
		case publish.KindInvalid:
			exp.InvalidMessages++
		}
	}

	fmt.Fprintf(out, "\npublishing %d messages with bin/publisher (seed %d): %d valid payments, %d duplicates, %d invalid\n",
		cfg.Count, cfg.Seed, len(exp.ValidKeys), cfg.Count-len(exp.ValidKeys)-exp.InvalidMessages, exp.InvalidMessages)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir(), localstack.BinPublisher),
		"--nats-url", s.NATSURL(), "--count", strconv.Itoa(cfg.Count),
		"--duplicates", strconv.FormatFloat(cfg.Duplicates, 'f', -1, 64),
		"--invalid", strconv.FormatFloat(cfg.Invalid, 'f', -1, 64),
		"--merchants", strconv.Itoa(DefaultMerchants),
		"--seed", strconv.FormatInt(cfg.Seed, 10), "--quiet", "--summary-json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return exp, fmt.Errorf("publisher: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	var sum publisherSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		return exp, fmt.Errorf("publisher summary: %w: %s", err, stdout.String())
	}
	if sum.Failed != 0 || sum.Valid != int64(len(exp.ValidKeys)) || sum.InvalidSent != int64(exp.InvalidMessages) {
		return exp, fmt.Errorf("publisher summary disagrees with the load: %+v", sum)
	}
	fmt.Fprintf(out, "  published %d in %.1fs (%.0f msg/s), %d rejected as duplicates by the server\n",
		sum.Published, sum.Elapsed, sum.Rate, sum.DuplicatesRejectedByServer)
	return exp, nil
}

// stopWorkers sends SIGTERM to every running worker and checks that each
// exits 0 within timeout.
func stopWorkers(workers []*localstack.Process, timeout time.Duration) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, w := range workers {
		if w.Exited() {
			continue
		}
		wg.Go(func() {
			_ = w.Signal(syscall.SIGTERM)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			code, err := w.Wait(ctx)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("worker %s did not exit within %s of SIGTERM", w.Name(), timeout))
			case code != 0:
				errs = append(errs, fmt.Errorf("worker %s exited %d after SIGTERM", w.Name(), code))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func peakRSS(workers []*localstack.Process) []string {
	var out []string
	for _, w := range workers {
		if b, err := w.PeakRSS(); err == nil {
			out = append(out, fmt.Sprintf("%s %.0f MB", w.Name(), float64(b)/(1<<20)))
		}
	}
	return out
}

// printSummary prints the summary table.
func printSummary(out io.Writer, r *audit.Report, rss []string, stopErr error) {
	section := func(title string) { fmt.Fprintf(out, "  %s\n", title) }
	row := func(label string, v any, note string) {
		fmt.Fprintln(out, strings.TrimRight(fmt.Sprintf("    %-18s %10v  %s", label, v, note), " "))
	}
	fmt.Fprintf(out, "\nsummary\n")
	section("requests stream")
	row("messages", r.Requests, "")
	row("valid payments", r.ValidKeys, "distinct idempotency keys")
	row("duplicates", r.DuplicateMessages, "same key and request, new message")
	row("invalid", r.InvalidMessages, "")
	section("payments table (rows by status)")
	for _, st := range []string{"succeeded", "declined", "failed", "processing"} {
		note := ""
		if st == "failed" && len(r.FailedCodes) > 0 {
			note = fmt.Sprint(r.FailedCodes)
		}
		row(st, r.Rows[st], note)
	}
	section("dead letters (by reason)")
	for _, reason := range payment.DeadLetterReasons() {
		row(string(reason), r.DeadLetters[string(reason)], "")
	}
	section("gateway simulator")
	row("real charges", r.RealCharges, fmt.Sprintf("succeeded rows: %d", r.Succeeded()))
	row("double charged", len(r.DoubleCharged), "payment ids charged more than once")
	section("results stream")
	row("outcome events", r.Outcomes, fmt.Sprintf("final rows: %d", r.Rows["succeeded"]+r.Rows["declined"]+r.Rows["failed"]))
	section("performance")
	if d := r.LastOutcome.Sub(r.FirstRequest); d > 0 {
		row("throughput", fmt.Sprintf("%.0f/s", float64(len(r.Latencies))/d.Seconds()),
			fmt.Sprintf("%d payments from first request to last outcome in %.1fs", len(r.Latencies), d.Seconds()))
	}
	row("latency p50", r.Percentile(0.50).Round(time.Millisecond), "request stored → outcome event stored, per payment")
	row("latency p99", r.Percentile(0.99).Round(time.Millisecond), "")
	row("worker peak RSS", "", strings.Join(rss, ", "))
	stopped := "every worker exited 0 after SIGTERM"
	if stopErr != nil {
		stopped = stopErr.Error()
	}
	row("shutdown", "", stopped)
}

// prefixWriter prefixes each Write (one line from localstack) with prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ctlStatus runs `paystreamctl status` against the stack, as an operator
// would, and returns its standard output and exit status. err is set when
// it could not run or exited 2 (a usage error); 1 (degraded) is reported,
// not failed: the verdict is about the payments.
func ctlStatus(ctx context.Context, binDir string, s *stack) (out []byte, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "paystreamctl"), "status")
	cmd.Env = append(os.Environ(), "PAYSTREAM_NATS_URL="+s.NATSURL(), "PAYSTREAM_DATABASE_URL="+s.DatabaseURL())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if exit, ok := errors.AsType[*exec.ExitError](err); ok && exit.ExitCode() == 1 {
		return append(out, []byte("degraded: "+stderr.String())...), 1, nil
	}
	if err != nil {
		return out, -1, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, 0, nil
}

// printStatus prints paystreamctl's view of the run and the commands that
// go further.
func printStatus(out io.Writer, binDir string, status []byte, code int, err error) {
	fmt.Fprintf(out, "\npaystreamctl status (taken before the workers stopped; exit %d)\n", code)
	if err != nil {
		fmt.Fprintf(out, "  could not run: %v\n", err)
		return
	}
	for line := range strings.SplitSeq(strings.TrimRight(string(status), "\n"), "\n") {
		fmt.Fprintln(out, strings.TrimRight("  "+line, " "))
	}
	ctl := filepath.Join(binDir, "paystreamctl")
	fmt.Fprintf(out, "\nthe operators' other commands (run them against `make dev`, which prints the variables to export):\n")
	for _, c := range []string{
		"payment show <payment_id>          a payment's whole story: request (masked), every gateway call, dead letters",
		"payments ls --status declined      payments by status, merchant, error code, time, amount; keyset pages",
		"dlq ls --reason invalid            dead letters, with counts by reason; dlq show <seq> for one",
		"dlq replay --reason exhausted --dry-run --actor $USER   what a replay would do; without --dry-run it does it",
		"retention run --dry-run            rows past their retention period",
	} {
		fmt.Fprintf(out, "  %s %s\n", ctl, c)
	}
	fmt.Fprintf(out, "  (docs/operations.md walks through an outage with them)\n")
}
