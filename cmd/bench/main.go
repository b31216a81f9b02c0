// Command bench is paystream's end-to-end benchmark (make bench). It starts a
// real NATS server and Postgres, fills the payments table with final rows so
// that index growth is part of the picture, then for each scenario publishes
// N payments and measures worker processes draining them:
//
//   - payments/s from the first delivery to the last outcome recorded and
//     acked, with the in-process fake gateway at 0 ms and at 20 ms, for one
//     worker process and for two;
//   - in the same run, the baseline: raw JetStream fetch-and-ack of the same
//     messages with no processing, and the ratio paystream / baseline;
//   - p50/p99 end-to-end latency (publish to outcome event) at half the
//     measured maximum rate;
//   - peak RSS per worker process.
//
// It prints one table and a last line
// "bench payments_per_s=… baseline_per_s=… ratio=… p99_ms=… rss_mb=…".
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
	n            int
	prefill      int
	binDir       string
	databaseURL  string
	concurrency  int
	concurrency2 int // with the 20 ms gateway
	skipTwo      bool
	profile      string
	batchSize    int
}

func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := options{}
	defN := 100_000
	if v := getenv("BENCH_N"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("BENCH_N: want a positive integer, got %q", v)
		}
		defN = n
	}
	fs.IntVar(&o.n, "n", defN, "payments per scenario (env BENCH_N)")
	fs.IntVar(&o.prefill, "prefill", 1_000_000, "final rows in the payments table before the first scenario")
	fs.StringVar(&o.binDir, "bin", "bin", "directory with the worker and nats-server binaries")
	fs.StringVar(&o.databaseURL, "database-url", getenv("PAYSTREAM_DATABASE_URL"), "Postgres to use instead of a throwaway cluster (its payments table is used as is)")
	fs.IntVar(&o.concurrency, "concurrency", 512, "PAYSTREAM_CONCURRENCY of the workers with the 0 ms gateway")
	fs.IntVar(&o.concurrency2, "concurrency-slow", 2048, "PAYSTREAM_CONCURRENCY of the workers with the 20 ms gateway")
	fs.BoolVar(&o.skipTwo, "skip-two", false, "skip the two-worker scenarios")
	fs.IntVar(&o.batchSize, "batch-size", 0, "PAYSTREAM_BATCH_SIZE of the workers (0: the worker's default)")
	fs.StringVar(&o.profile, "profile", "", "write a 2s CPU profile of the first worker of the first scenario to this file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.n <= 0 || o.prefill < 0 || o.concurrency <= 0 || o.concurrency2 <= 0 {
		return o, errors.New("-n, -concurrency and -concurrency-slow must be positive, -prefill not negative")
	}
	return o, nil
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
	res, err := b.runAll(ctx)
	if err != nil {
		return err
	}
	res.print(stdout)
	return nil
}

// since formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }
