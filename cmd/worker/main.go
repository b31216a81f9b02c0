// Command worker processes payment requests from NATS JetStream: it pulls
// them with the shared durable consumer, claims each idempotency key in
// Postgres, charges the gateway, records the outcome and acknowledges.
//
// Usage:
//
//	worker [flags]            run until SIGINT/SIGTERM, then drain and exit 0
//	worker --migrate [flags]  apply pending migrations, then run
//	worker migrate [flags]    apply pending migrations and exit
//
// Every flag has a PAYSTREAM_* environment variable; flags win.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "worker:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run is the whole program; main only supplies the process's context,
// arguments, environment and streams.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "migrate" {
		return migrateOnly(ctx, args[1:], lookupEnv, stderr)
	}
	w, err := newWorker(ctx, args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	return w.run(ctx)
}
