// Command chaos runs paystream's fault-injection suite (package
// internal/testenv/chaos) against real processes and prints one figure
// line:
//
//	chaos payments=… messages=… kills=… restarts=… worker_restarts=… lost=0 double_charged=0 stuck=0 wrong_dead_letters=0 exhausted=… duration=… freezes=… in_flight_conflicts=… false_failed=0 unknown=0
//
// and then runs the transactional outbox's scenario (relays killed with
// SIGKILL while an upstream enqueues inside its transactions, some rolled
// back), printing its own line:
//
//	chaos-outbox committed=… rolled_back=… relay_kills=… published=… lost=0 extra=0 out_of_order=0 unprocessed=0 left=0 duration=…
//
// It exits 1 when any invariant fails — lost, double_charged, stuck,
// false_failed and unknown among them (the working directory with every
// process's log is kept then, and printed). See docs/reliability.md.
//
// Usage (after make build nats-server, which make chaos runs):
//
//	chaos [--bin bin] [--payments 20000] [--load-duration 45s] [--min-kills 10] [--runs 1] [--seed N] [--outbox-payments 5000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/paystream/paystream/internal/testenv/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "chaos:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg chaos.Config
	fs.StringVar(&cfg.BinDir, "bin", "bin", "directory of the worker, gatewaysim, publisher and nats-server binaries")
	fs.IntVar(&cfg.Payments, "payments", 20_000, "distinct valid payments (duplicates, conflicts and invalid messages come on top)")
	fs.DurationVar(&cfg.LoadDuration, "load-duration", 0, "how long publishing takes; the faults are spread over it (default 45s)")
	fs.IntVar(&cfg.MinKills, "min-kills", 10, "least number of kill -9 of a worker")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the load and the chaos (default: random)")
	fs.BoolVar(&cfg.KeepDir, "keep", false, "keep the working directory (logs, stores) even when the run passes")
	runs := fs.Int("runs", 1, "runs in a row; stops at the first failure")
	outboxPayments := fs.Int("outbox-payments", 5000, "transactions of the outbox scenario, run after the others (0 skips it)")
	gatewaysPayments := fs.Int("gateways-payments", 2000, "payments of the two-gateway failover scenario, run last (0 skips it)")
	fs.Func("set", "`NAME=VALUE` worker setting over the suite's (repeatable), e.g. PAYSTREAM_MAX_DELIVER=5", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(k, "PAYSTREAM_") {
			return errors.New("want PAYSTREAM_NAME=VALUE")
		}
		if cfg.WorkerEnv == nil {
			cfg.WorkerEnv = map[string]string{}
		}
		cfg.WorkerEnv[k] = v
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.Out = stdout
	seed := cfg.Seed
	for i := range *runs {
		if seed != 0 {
			cfg.Seed = seed + int64(i)
		}
		res, err := chaos.Run(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, res.FigureLine())
		if !res.OK() {
			for _, p := range res.Problems {
				fmt.Fprintln(stdout, "  FAILED:", p)
			}
			fmt.Fprintln(stdout, "  logs and stores kept in", res.Dir)
			return fmt.Errorf("run %d of %d: %d invariants failed (seed %d)", i+1, *runs, len(res.Problems), res.Seed)
		}
	}
	if *outboxPayments > 0 {
		if err := runOutbox(ctx, cfg.BinDir, *outboxPayments, seed, stdout); err != nil {
			return err
		}
	}
	if *gatewaysPayments > 0 {
		return runGateways(ctx, cfg.BinDir, *gatewaysPayments, seed, stdout)
	}
	return nil
}

// runOutbox runs the transactional outbox's scenario.
func runOutbox(ctx context.Context, binDir string, payments int, seed int64, stdout io.Writer) error {
	res, err := chaos.RunOutbox(ctx, chaos.OutboxConfig{BinDir: binDir, Payments: payments, Seed: seed, Out: stdout})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.FigureLine())
	if !res.OK() {
		for _, p := range res.Problems {
			fmt.Fprintln(stdout, "  FAILED:", p)
		}
		fmt.Fprintln(stdout, "  logs and stores kept in", res.Dir)
		return fmt.Errorf("outbox scenario: %d invariants failed (seed %d)", len(res.Problems), res.Seed)
	}
	return nil
}

// runGateways runs the two-gateway failover scenario.
func runGateways(ctx context.Context, binDir string, payments int, seed int64, stdout io.Writer) error {
	res, err := chaos.RunGateways(ctx, chaos.GatewaysConfig{BinDir: binDir, Payments: payments, Seed: seed, Out: stdout})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.FigureLine())
	if !res.OK() {
		for _, p := range res.Problems {
			fmt.Fprintln(stdout, "  FAILED:", p)
		}
		fmt.Fprintln(stdout, "  logs and stores kept in", res.Dir)
		return fmt.Errorf("gateways scenario: %d invariants failed (seed %d)", len(res.Problems), res.Seed)
	}
	return nil
}
