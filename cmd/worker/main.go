// Command worker processes payment requests from NATS JetStream: it pulls
// them with the shared durable consumer, claims each idempotency key in
// Postgres, charges the gateway, records the outcome and acknowledges.
//
// Usage:
//
//	worker [flags]            run until SIGINT/SIGTERM, then drain and exit 0
//	worker --migrate [flags]  apply pending migrations, then run
//	worker migrate [flags]    apply pending migrations and exit
//	worker healthcheck [flags] GET /readyz of this configuration's
//	                          PAYSTREAM_HTTP_ADDR; exit 0 when it answers
//	                          200, 1 otherwise (a container healthcheck for
//	                          images without a shell or an HTTP client)
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

	"github.com/paystream/paystream/internal/cmdwire"
)

func main() {
	applyGCDefault(os.LookupEnv)
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
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], lookupEnv, stdout, stderr)
	}
	w, err := newWorker(ctx, args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	return w.run(ctx)
}

// healthcheck reads the same flags and settings as the worker and asks the
// worker serving PAYSTREAM_HTTP_ADDR on this host whether it is ready
// (GET /readyz). It prints the answer and returns an error unless it is
// 200: the image has no shell and no HTTP client, so the container
// healthcheck runs `worker healthcheck`.
func healthcheck(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	if cfg.HTTPAddr == "" {
		return errors.New("healthcheck: PAYSTREAM_HTTP_ADDR is empty: the worker serves no /readyz")
	}
	return cmdwire.Probe(ctx, cfg.HTTPAddr, "/readyz", stdout)
}
