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
// With --scenarios it runs the scenarios named instead (default
// "main,outbox", the two above): "infra" is every infrastructure scenario —
// Postgres failover, network faults through toxiproxy, a full JetStream
// store, Postgres out of connections — and "ci" their CI-sized subset
// (--list names them). Each prints its own line:
//
//	chaos-<name> payments=… messages=… lost=0 double_charged=0 false_failed=0 stuck=0 unknown=0 wrong_dead_letters=0 fault=… recover=… worker_exits=… duration=… … not_ready="…"
//
// It exits 1 when any invariant fails — lost, double_charged, stuck,
// false_failed and unknown among them (the working directory with every
// process's log is kept then, and printed). See docs/reliability.md.
//
// Usage (after make build nats-server, which make chaos runs):
//
//	chaos [--bin bin] [--payments 20000] [--load-duration 45s] [--min-kills 10] [--runs 1] [--seed N] [--outbox-payments 5000] [--scenarios main,outbox] [--list]
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

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/internal/testenv/chaos"
)

// errInvariants marks a scenario whose invariants failed.
var errInvariants = errors.New("invariants failed")

func main() {
	// The network-fault scenarios run toxiproxy in this process; its toxics
	// log through zerolog's global logger at trace level.
	zerolog.SetGlobalLevel(zerolog.InfoLevel)
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
	scenarios := fs.String("scenarios", "main,outbox,gateways", "comma-separated scenarios: main, outbox, gateways, the infrastructure ones (-list), infra for all of those, ci for the CI subset")
	list := fs.Bool("list", false, "list the infrastructure scenarios and exit")
	outboxPayments := fs.Int("outbox-payments", 5000, "transactions of the outbox scenario, run after the others (0 skips it)")
	gatewaysPayments := fs.Int("gateways-payments", 2000, "payments of the two-gateway failover scenario (0 skips it)")
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
	if *list {
		for _, sc := range chaos.Scenarios() {
			ci := ""
			if sc.CI {
				ci = " [ci]"
			}
			fmt.Fprintf(stdout, "%-20s %s%s\n", sc.Name, sc.Doc, ci)
		}
		return nil
	}
	names := chaos.ScenarioNames(*scenarios)
	for _, n := range names {
		if _, ok := chaos.LookupScenario(n); !ok && n != "main" && n != "outbox" && n != "gateways" {
			return fmt.Errorf("unknown scenario %q (see -list)", n)
		}
	}
	var failed []string
	for _, n := range names {
		var err error
		switch n {
		case "main":
			err = runMain(ctx, cfg, *runs, stdout)
		case "outbox":
			err = runOutbox(ctx, cfg, *outboxPayments, stdout)
		case "gateways":
			err = runGateways(ctx, cfg, *gatewaysPayments, stdout)
		default:
			err = runInfra(ctx, n, cfg, stdout)
		}
		if err != nil {
			// A broken invariant does not stop the other scenarios; a run
			// that could not be carried out does.
			if !errors.Is(err, errInvariants) {
				return err
			}
			fmt.Fprintln(stdout, "  FAILED:", n+":", err)
			failed = append(failed, n)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// runInfra runs one infrastructure scenario and prints its figure line.
func runInfra(ctx context.Context, name string, cfg chaos.Config, stdout io.Writer) error {
	res, err := chaos.RunInfra(ctx, name, chaos.InfraConfig{BinDir: cfg.BinDir, Seed: cfg.Seed, Out: stdout, KeepDir: cfg.KeepDir})
	if err != nil {
		return err
	}
	return report(stdout, "", res.FigureLine(), res.Problems, res.Dir, res.Seed)
}

// runMain runs the main suite runs times in a row.
func runMain(ctx context.Context, cfg chaos.Config, runs int, stdout io.Writer) error {
	seed := cfg.Seed
	for i := range runs {
		if seed != 0 {
			cfg.Seed = seed + int64(i)
		}
		res, err := chaos.Run(ctx, cfg)
		if err != nil {
			return err
		}
		if err := report(stdout, fmt.Sprintf("run %d of %d: ", i+1, runs), res.FigureLine(), res.Problems, res.Dir, res.Seed); err != nil {
			return err
		}
	}
	return nil
}

// runOutbox runs the outbox scenario (payments 0 skips it).
func runOutbox(ctx context.Context, cfg chaos.Config, payments int, stdout io.Writer) error {
	if payments <= 0 {
		return nil
	}
	res, err := chaos.RunOutbox(ctx, chaos.OutboxConfig{BinDir: cfg.BinDir, Payments: payments, Seed: cfg.Seed, Out: stdout})
	if err != nil {
		return err
	}
	return report(stdout, "outbox scenario: ", res.FigureLine(), res.Problems, res.Dir, res.Seed)
}

// runGateways runs the two-gateway failover scenario (payments 0 skips it).
func runGateways(ctx context.Context, cfg chaos.Config, payments int, stdout io.Writer) error {
	if payments <= 0 {
		return nil
	}
	res, err := chaos.RunGateways(ctx, chaos.GatewaysConfig{BinDir: cfg.BinDir, Payments: payments, Seed: cfg.Seed, Out: stdout})
	if err != nil {
		return err
	}
	return report(stdout, "", res.FigureLine(), res.Problems, res.Dir, res.Seed)
}

// report prints a scenario's figure line and, when invariants failed, each
// problem and where its logs are kept; it returns an error wrapping
// errInvariants then (prefix in front), nil otherwise.
func report(stdout io.Writer, prefix, figures string, problems []string, dir string, seed int64) error {
	fmt.Fprintln(stdout, figures)
	if len(problems) == 0 {
		return nil
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, "  FAILED:", p)
	}
	fmt.Fprintln(stdout, "  logs and stores kept in", dir)
	return fmt.Errorf("%s%w: %d (seed %d)", prefix, errInvariants, len(problems), seed)
}
