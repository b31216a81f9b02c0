// Command demo runs the whole paystream system on one machine — NATS with
// JetStream, Postgres (a throwaway cluster, or PAYSTREAM_DATABASE_URL), the
// gateway simulator and three workers, all real processes — publishes
// 20,000 payments with duplicates and invalid ones, waits until they
// settle, prints a summary and a verdict checked against the database, the
// streams and the simulator, and stops everything. It exits 1 when the
// verdict fails.
//
// With --dev it starts the same system and leaves it running, printing how
// to publish and inspect, until Ctrl-C.
//
// Usage (after make build nats-server, which make demo and make dev run):
//
//	demo [--dev] [--bin bin] [--count 20000] [--workers 3] [--seed N]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/paystream/paystream/internal/testenv/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg demo.Config
	dev := fs.Bool("dev", false, "start the stack and leave it running until Ctrl-C")
	upstream := fs.Bool("upstream", false, "the upstream demo: the outbox relay and the example order service (examples/orders)")
	fs.StringVar(&cfg.BinDir, "bin", "bin", "directory of the worker, gatewaysim, publisher and nats-server binaries")
	fs.StringVar(&cfg.Dir, "dir", "", "working directory for stores and logs (default: a temporary directory, removed at the end)")
	fs.IntVar(&cfg.Count, "count", demo.DefaultCount, "messages to publish")
	fs.Float64Var(&cfg.Duplicates, "duplicates", demo.DefaultDuplicates, "fraction of duplicate messages")
	fs.Float64Var(&cfg.Invalid, "invalid", demo.DefaultInvalid, "fraction of invalid messages")
	fs.IntVar(&cfg.Workers, "workers", demo.DefaultWorkers, "worker processes")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the load (default: random)")
	fs.DurationVar(&cfg.SettleTimeout, "settle-timeout", demo.DefaultSettleTimeout, "how long to wait for the work to drain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	cfg.DatabaseURL = getenv("PAYSTREAM_DATABASE_URL")
	cfg.Out = stdout
	switch {
	case *dev && *upstream:
		return errors.New("--dev and --upstream exclude each other")
	case *dev:
		return demo.Dev(ctx, cfg)
	case *upstream:
		return demo.Upstream(ctx, cfg)
	}
	return demo.Run(ctx, cfg)
}
