package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/internal/cmdwire"
	"github.com/paystream/paystream/natsconn"
	"github.com/paystream/paystream/publish/outbox"
)

// outboxUsage is the help of `publisher outbox`.
const outboxUsage = `Usage:
  publisher outbox migrate [flags]   create or update the outbox table in PAYSTREAM_DATABASE_URL
  publisher outbox relay [flags]     publish committed outbox rows to JetStream until SIGINT/SIGTERM
`

// migrateSettings are the config settings `outbox migrate` reads: the
// database of the upstream service that holds the outbox.
func migrateSettings() []string { return []string{"DATABASE_URL"} }

// relaySettings are the config settings `outbox relay` reads: the NATS
// connection and stream as the publisher reads them, the database as
// migrate does, the HTTP address of /metrics and /healthz, and the logging.
func relaySettings() []string {
	return append(config.NATSSettings(), "STREAM", "DATABASE_URL", "HTTP_ADDR", "LOG_LEVEL", "LOG_FORMAT")
}

// runOutbox runs `publisher outbox <migrate|relay> [flags]`.
func runOutbox(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, outboxUsage)
		return &usageError{errors.New("outbox: a subcommand is required: migrate or relay")}
	}
	switch args[0] {
	case "migrate":
		return outboxMigrate(ctx, args[1:], getenv, stderr)
	case "relay":
		return outboxRelay(ctx, args[1:], getenv, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, outboxUsage)
		return flag.ErrHelp
	default:
		fmt.Fprint(stderr, outboxUsage)
		return &usageError{fmt.Errorf("outbox: unknown subcommand %q", args[0])}
	}
}

// relayOptions are the parsed command line of `outbox relay`.
type relayOptions struct {
	cfg         config.Config
	batchSize   int
	concurrency int
}

// parseOutboxFlags parses the settings names and any flags add registers,
// returning every problem at once.
func parseOutboxFlags(name string, args []string, getenv func(string) string, stderr io.Writer, names []string, add func(*flag.FlagSet)) (config.Config, error) {
	fs := flag.NewFlagSet("publisher outbox "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if add != nil {
		add(fs)
	}
	cfg, err := config.ParseSettings(fs, args, lookupEnv(getenv), names...)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return cfg, err
	case err != nil:
		return cfg, &usageError{err}
	}
	if fs.NArg() > 0 {
		return cfg, &usageError{fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	return cfg, nil
}

// outboxMigrate applies the outbox migrations and exits.
func outboxMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseOutboxFlags("migrate", args, getenv, stderr, migrateSettings(), nil)
	if err != nil {
		return err
	}
	if err := outbox.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "outbox migrations applied")
	return nil
}

// outboxRelay runs the relay until ctx ends.
func outboxRelay(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	var o relayOptions
	cfg, err := parseOutboxFlags("relay", args, getenv, stderr, relaySettings(), func(fs *flag.FlagSet) {
		fs.IntVar(&o.batchSize, "relay-batch-size", outbox.DefaultBatchSize, "most outbox rows of one partition per transaction, 1–10000")
		fs.IntVar(&o.concurrency, "relay-concurrency", outbox.DefaultConcurrency, fmt.Sprintf("goroutines relaying partitions, 1–%d", outbox.Partitions))
	})
	if err != nil {
		return err
	}
	o.cfg = cfg
	var errs []error
	if o.batchSize < 1 || o.batchSize > 10000 {
		errs = append(errs, fmt.Errorf("--relay-batch-size %d: must be 1 to 10000", o.batchSize))
	}
	if o.concurrency < 1 || o.concurrency > outbox.Partitions {
		errs = append(errs, fmt.Errorf("--relay-concurrency %d: must be 1 to %d", o.concurrency, outbox.Partitions))
	}
	if len(errs) > 0 {
		return &usageError{errors.Join(errs...)}
	}
	log := newRelayLogger(cfg, stderr)
	tr, stopTracing, err := startTracing(ctx, getenv, "paystream-outbox-relay")
	if err != nil {
		return err
	}
	defer stopTracing()

	pool, err := openOutboxDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	nc, err := connectRelay(cfg, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	relay, err := outbox.NewRelay(outbox.RelayConfig{
		DB:             pool,
		JetStream:      js,
		Stream:         cfg.Stream,
		BatchSize:      o.batchSize,
		Concurrency:    o.concurrency,
		Logger:         &log,
		Registerer:     reg,
		TracerProvider: relayTracer(tr),
	})
	if err != nil {
		return &usageError{err} // --relay-batch-size or --relay-concurrency
	}
	return serveRelay(ctx, relay, pool, reg, cfg.HTTPAddr, log)
}

// serveRelay runs relay and, unless addr is empty, the HTTP server, until
// ctx ends or the server fails; then it stops both, waits for them, and
// returns the server's failure.
func serveRelay(ctx context.Context, relay *outbox.Relay, pool *pgxpool.Pool, reg *prometheus.Registry, addr string, log zerolog.Logger) error {
	var (
		wg  sync.WaitGroup
		srv *http.Server
		ln  net.Listener
	)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var srvErr error
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("listen on PAYSTREAM_HTTP_ADDR %s: %w", addr, err)
		}
		srv = &http.Server{Handler: relayRoutes(relay, pool, reg), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				// Without /healthz and /metrics the relay is blind: stop it.
				srvErr = fmt.Errorf("http server: %w", err)
				cancel(srvErr)
			}
		})
		log.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz")
	}
	err := relay.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	wg.Wait()
	return errors.Join(err, srvErr)
}

// relayRoutes serves /metrics and /healthz: 200 while the relay runs and
// the database answers, 503 with the reasons otherwise.
func relayRoutes(relay *outbox.Relay, pool *pgxpool.Pool, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		var errs []error
		if !relay.Running() {
			errs = append(errs, errors.New("relay not running"))
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := pool.Ping(ctx); err != nil {
			errs = append(errs, errors.New("database unreachable"))
		}
		if err := errors.Join(errs...); err != nil {
			http.Error(rw, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// openOutboxDB opens a small pool: the relay holds at most one connection
// per goroutine plus one for its metrics and one for /healthz.
func openOutboxDB(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, errors.New("parse PAYSTREAM_DATABASE_URL: invalid connection string")
	}
	if pcfg.MaxConns < outbox.Partitions+2 {
		pcfg.MaxConns = outbox.Partitions + 2
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}

// connectRelay connects as the worker does: it waits for NATS and
// reconnects for ever, so that rows wait in the outbox while NATS is away.
func connectRelay(cfg config.Config, log zerolog.Logger) (*nats.Conn, error) {
	o := cmdwire.NATSOptions(cfg, "paystream-outbox-relay")
	o.Logger = log
	return natsconn.Connect(o,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
	)
}

// newRelayLogger logs as the worker does.
func newRelayLogger(cfg config.Config, stderr io.Writer) zerolog.Logger {
	var out io.Writer = stderr
	if cfg.LogFormat == "console" {
		out = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}
	}
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}
