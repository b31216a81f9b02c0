// Command bench is paystream's end-to-end benchmark (make bench). It starts a
// real NATS server (JetStream file store) and Postgres with production
// durability (fsync, synchronous_commit and full_page_writes on), fills the
// payments table with final rows, then measures, each line on N payments:
//
//   - paystream: worker processes with the in-process fake gateway at 0 ms
//     (tuned concurrency, and the worker's defaults) and at 20 ms, timed
//     from the first claim to the last outcome recorded and acked;
//   - in the same run, on the same messages, raw JetStream fetch-and-ack
//     (pulls of 256, the worker's largest, and the best of other sizes) and
//     the floor: fetch a batch, one INSERT and one UPDATE of payments, ack;
//     and the contract floor: the floor plus the records the contract asks
//     of every payment (an attempt row, an outcome event stored before the
//     ack);
//   - again with JetStream's sync_interval: always (with both floors), and
//     (-fsync-off) with Postgres's durability off, with its own floor;
//   - per payment: CPU µs of the worker, nats-server and Postgres (from
//     /proc), WAL bytes, commits, HOT updates of payments, allocations;
//   - p50/p99 end-to-end latency (publish to outcome event) at half the
//     measured maximum rate; peak RSS per worker; publishing throughput;
//   - optionally (-tracing) the 0 ms line again with the worker recording
//     every span and exporting it over OTLP/HTTP to a sink in the benchmark;
//   - optionally (-grow) paystream and the floor again on a bigger table.
//
// With -ab-bin or -ab-env it prints no table: it compares two variants of the
// worker on the 0 ms line, in pairs of runs (ab.go), and ends with a line
// "bench_ab pairs=… ratio_per_s=… ratio_worker_us=… …".
//
// It prints one table and a last line
// "bench payments_per_s=… floor_per_s=… ratio_floor=… cpu_us_per_payment=… p99_ms=… …".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

// options are the benchmark's settings.
type options struct {
	n              int
	prefill        int
	binDir         string
	databaseURL    string
	concurrency    int
	concurrency2   int // with the 20 ms gateway
	two            bool
	fsyncOff       bool
	grow           int
	statements     bool
	profile        string
	profileSeconds int
	profileLine    string // the first paystream line whose name holds it is profiled
	batchSize      int
	tracing        bool
	latencyAt      []float64 // extra end-to-end latency points, payments/s
	// The A/B comparison (ab.go): B's worker binary and extra environment,
	// and how many pairs of runs.
	abBin     string
	abEnv     map[string]string
	abPairs   int
	abLatency time.Duration
}

// ab reports whether the options ask for the A/B comparison.
func (o options) ab() bool { return o.abBin != "" || len(o.abEnv) > 0 }

// abFixedEnv are the worker variables -ab-env may not set, and why: the
// stack's addresses, and what the benchmark relies on to run and measure
// a line. Settings (PAYSTREAM_CONCURRENCY, PAYSTREAM_BATCH_WAIT, …) may
// differ between the sides: that is what the comparison is for.
var abFixedEnv = map[string]string{
	"PAYSTREAM_NATS_URL":     "the stack's NATS",
	"PAYSTREAM_DATABASE_URL": "the stack's Postgres",
	"PAYSTREAM_HTTP_ADDR":    "the metrics the benchmark reads",
	"PAYSTREAM_WORKER_ID":    "one per run",
	"PAYSTREAM_GATEWAY_URL":  "the in-process fake gateway",
	"PAYSTREAM_FAKE_LATENCY": "both sides' gateway: use -ab-latency",
	"PAYSTREAM_PPROF":        "-profile",
	"OTEL_SDK_DISABLED":      "tracing stays off",
}

// checkABFlags refuses flags that mean nothing in the mode chosen: the
// A/B comparison's without -ab-bin or -ab-env, the table's with them (the
// comparison runs no other line). It resolves -ab-bin, so that a wrong
// path fails before the stack starts.
func checkABFlags(fs *flag.FlagSet, o *options) error {
	abOnly := map[string]bool{"ab-pairs": true, "ab-latency": true}
	tableOnly := map[string]bool{"two": true, "tracing": true, "grow": true, "fsync-off": true,
		"latency-at": true, "concurrency-slow": true}
	var wrong []string
	fs.Visit(func(f *flag.Flag) {
		if (!o.ab() && abOnly[f.Name]) || (o.ab() && tableOnly[f.Name]) {
			wrong = append(wrong, "-"+f.Name)
		}
	})
	if o.ab() && o.grow > 0 {
		wrong = append(wrong, "BENCH_GROW")
	}
	switch {
	case len(wrong) > 0 && o.ab():
		return fmt.Errorf("%s: not with the A/B comparison, which runs only the 0 ms line (or -ab-latency's)", strings.Join(wrong, ", "))
	case len(wrong) > 0:
		return fmt.Errorf("%s: only with the A/B comparison (-ab-bin or -ab-env)", strings.Join(wrong, ", "))
	}
	if o.abBin != "" {
		bin, err := abWorkerBin(o.abBin)
		if err != nil {
			return err
		}
		o.abBin = bin
	}
	return nil
}

func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := options{}
	defN, err := envInt(getenv, "BENCH_N", 20_000)
	if err != nil {
		return o, err
	}
	defPrefill, err := envInt(getenv, "BENCH_PREFILL", 100_000)
	if err != nil {
		return o, err
	}
	defGrow, err := envInt(getenv, "BENCH_GROW", 0)
	if err != nil {
		return o, err
	}
	fs.IntVar(&o.n, "n", defN, "payments per line (env BENCH_N)")
	fs.IntVar(&o.prefill, "prefill", defPrefill, "final rows in the payments table before the first line (env BENCH_PREFILL)")
	fs.IntVar(&o.grow, "grow", defGrow, "after the other lines, fill the table to this many final rows and measure paystream and the floor again; 0: skip (env BENCH_GROW)")
	fs.StringVar(&o.binDir, "bin", "bin", "directory with the worker and nats-server binaries")
	fs.StringVar(&o.databaseURL, "database-url", getenv("PAYSTREAM_DATABASE_URL"), "Postgres to use instead of a throwaway cluster (its payments table is used as is)")
	fs.IntVar(&o.concurrency, "concurrency", 512, "PAYSTREAM_CONCURRENCY of the workers with the 0 ms gateway")
	fs.IntVar(&o.concurrency2, "concurrency-slow", 2048, "PAYSTREAM_CONCURRENCY of the workers with the 20 ms gateway")
	fs.BoolVar(&o.two, "two", false, "add the two-worker lines")
	fs.BoolVar(&o.fsyncOff, "fsync-off", false, "add a paystream line and a floor line with Postgres fsync, synchronous_commit and full_page_writes off, for comparison")
	fs.BoolVar(&o.statements, "pg-stat-statements", false, "load pg_stat_statements and print each paystream and floor line's statements per payment")
	fs.BoolVar(&o.tracing, "tracing", false, "add the 0 ms line with tracing on: every span recorded (OTEL_TRACES_SAMPLER=always_on) and exported over OTLP/HTTP to a sink in the benchmark, reported as a ratio to the headline")
	fs.IntVar(&o.batchSize, "batch-size", 0, "PAYSTREAM_BATCH_SIZE of the workers (0: the worker's default)")
	fs.StringVar(&o.profile, "profile", "", "write a CPU profile of the worker of the first line (or of -profile-line's) to this file")
	fs.StringVar(&o.profileLine, "profile-line", "", "with -profile: profile the first paystream line whose name contains this (\"20ms\", \"defaults\"); empty: the first line")
	fs.IntVar(&o.profileSeconds, "profile-seconds", 2, "length of the -profile CPU profile; keep it shorter than the line (FILE.allocs gets the allocations profile after it)")
	fs.Func("latency-at", "comma-separated payments/s at which to measure the end-to-end latency too (besides half the maximum)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || r <= 0 {
				return fmt.Errorf("not a positive rate: %q", f)
			}
			o.latencyAt = append(o.latencyAt, r)
		}
		return nil
	})
	fs.StringVar(&o.abBin, "ab-bin", "", "A/B comparison instead of the table: B runs this worker binary (a file, or a directory holding worker); A runs -bin's")
	fs.Func("ab-env", "A/B comparison instead of the table: add NAME=VALUE to B's worker environment (repeatable; PAYSTREAM_* settings too, over the benchmark's own, but not the stack's addresses)", func(v string) error {
		name, value, ok := strings.Cut(v, "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("want NAME=VALUE, got %q", v)
		}
		if why, fixed := abFixedEnv[name]; fixed {
			return fmt.Errorf("%s is the benchmark's to set (%s)", name, why)
		}
		if o.abEnv == nil {
			o.abEnv = map[string]string{}
		}
		o.abEnv[name] = value
		return nil
	})
	fs.DurationVar(&o.abLatency, "ab-latency", 0, "A/B comparison: the fake gateway's latency on both sides (with -concurrency as the line's)")
	fs.IntVar(&o.abPairs, "ab-pairs", 4, "A/B comparison: pairs of runs of the 0 ms line, in the order A B, B A, A B, …")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.abPairs <= 0 || o.abLatency < 0 {
		return o, errors.New("-ab-pairs must be positive, -ab-latency not negative")
	}
	if err := checkABFlags(fs, &o); err != nil {
		return o, err
	}
	if o.n <= 0 || o.prefill < 0 || o.grow < 0 || o.concurrency <= 0 || o.concurrency2 <= 0 || o.profileSeconds <= 0 {
		return o, errors.New("-n, -concurrency, -concurrency-slow and -profile-seconds must be positive, -prefill and -grow not negative")
	}
	return o, nil
}

// envInt reads an integer default from the environment: positive for
// BENCH_N, not negative for the others.
func envInt(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || (n == 0 && name == "BENCH_N") {
		return 0, fmt.Errorf("%s: want a non-negative integer (BENCH_N: positive), got %q", name, v)
	}
	return n, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	b, err := newBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	if o.ab() {
		// The runs done so far are printed even when a later one fails
		// or the comparison is interrupted.
		ab, err := b.runAB(ctx)
		if len(ab.runs) > 0 {
			ab.print(stdout)
		}
		return err
	}
	res, err := b.runAll(ctx)
	if err != nil {
		return err
	}
	res.print(stdout)
	return nil
}

// since formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
