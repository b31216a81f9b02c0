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
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
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
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(ctx, args[1:], lookupEnv, stdout, stderr)
	}
	w, err := newWorker(ctx, args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	return w.run(ctx)
}

// healthcheckTimeout bounds the whole probe; container healthchecks give a
// probe a few seconds (docker-compose.yml: timeout 3s).
const healthcheckTimeout = 2 * time.Second

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
	return probe(ctx, "http://"+localAddr(cfg.HTTPAddr)+"/readyz", stdout)
}

// localAddr turns a listen address into one to dial on this host: an
// empty or unspecified host becomes the loopback address.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// probe GETs url within healthcheckTimeout, copies the start of the answer
// to out and fails unless the status is 200.
func probe(ctx context.Context, url string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(out, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s", url, resp.Status)
	}
	return nil
}
