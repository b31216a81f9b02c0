package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"strings"
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
	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/cmdwire"
	"github.com/paystream/paystream/natsconn"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// worker is one wired worker process.
type worker struct {
	cfg      config.Config
	log      zerolog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream // on nc; the consumer, heartbeat and gauges share it
	ncClosed chan struct{}
	pool     *pgxpool.Pool
	store    *store.Store
	batcher  *store.Batcher
	cons     *consumer.Consumer
	gw       processing.Gateway
	proc     *processing.Processor
	sweeper  *processing.Sweeper
	recon    *processing.Reconciler
	beat     *fleet.Beater
	coord    *fleet.Coordinator   // nil without a budget and a fleet breaker
	coords   []*fleet.Coordinator // those of PAYSTREAM_GATEWAYS after the first
	gauges   *fleetGauges
	http     *http.Server
	listener net.Listener
	closeGW  func()
	dbGate   *dbGate
	tracing  *telemetry.Tracing // nil: tracing off (cmd/worker/tracing.go)
}

func parseConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (config.Config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, err := config.Parse(fs, args, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return cfg, errUsage
	}
	if err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

func newLogger(cfg config.Config, stderr io.Writer) zerolog.Logger {
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

func migrateOnly(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	// migrate needs no gateway; let the usual validation pass without one.
	env := func(k string) (string, bool) {
		if k == "PAYSTREAM_GATEWAY_URL" {
			if v, ok := lookupEnv(k); ok && v != "" {
				return v, ok
			}
			return "fake", true
		}
		return lookupEnv(k)
	}
	cfg, err := parseConfig(args, env, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if err := store.Migrate(ctx, migrateURL(cfg)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	log.Info().Msg("migrations applied")
	return nil
}

// newWorker wires a worker, one step after the other; when a step fails,
// what the earlier ones opened is closed.
func newWorker(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (w *worker, err error) {
	cfg, log, err := loadConfig(args, lookupEnv, stderr)
	if err != nil {
		return nil, err
	}
	w = &worker{cfg: cfg, log: log}
	// "return nil, err" sets w to nil before this runs: close the worker
	// being built, not the named result.
	partial := w
	defer func() {
		if err != nil {
			partial.close()
		}
	}()

	if err := w.setupTracing(ctx, lookupEnv); err != nil {
		return nil, err
	}
	if err := w.migrate(ctx); err != nil {
		return nil, err
	}
	if err := w.openDatabase(ctx); err != nil {
		return nil, err
	}
	if err := w.connectNATS(); err != nil {
		return nil, err
	}
	reg, m := newMetrics()
	proc, err := w.newProcessor(m)
	if err != nil {
		return nil, err
	}
	if err := w.newConsumer(ctx, proc, m); err != nil {
		return nil, err
	}
	w.newSweeper(m)
	w.newGatewayFleet()
	w.newExtraGatewayFleets()
	w.newHeartbeat(reg)
	w.newFleetGauges(reg)
	if err := w.listenHTTP(reg); err != nil {
		return nil, err
	}
	return w, nil
}

// loadConfig parses the configuration, derives the worker ID when none is
// set, and returns the logger of every part, having logged the
// configuration (redacted).
func loadConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (config.Config, zerolog.Logger, error) {
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		return cfg, zerolog.Nop(), err
	}
	if cfg.WorkerID == "" {
		cfg.WorkerID = defaultWorkerID()
	}
	log := newLogger(cfg, stderr).With().Str("worker_id", cfg.WorkerID).Logger()
	log.Info().EmbedObject(cfg).Str("gogc", gogcLabel()).Msg("starting worker")
	return cfg, log, nil
}

// migrate applies pending migrations when PAYSTREAM_MIGRATE asks for it.
func (w *worker) migrate(ctx context.Context) error {
	if !w.cfg.Migrate {
		return nil
	}
	if err := store.Migrate(ctx, migrateURL(w.cfg)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	w.log.Info().Msg("migrations applied")
	return nil
}

// migrateURL is the connection string migrations run with: the schema
// owner's PAYSTREAM_MIGRATE_DATABASE_URL when set, else the runtime
// PAYSTREAM_DATABASE_URL.
func migrateURL(cfg config.Config) string {
	if cfg.MigrateDatabaseURL != "" {
		return cfg.MigrateDatabaseURL
	}
	return cfg.DatabaseURL
}

// openDatabase opens the connection pool and waits until Postgres answers.
func (w *worker) openDatabase(ctx context.Context) (err error) {
	pcfg, err := pgxpool.ParseConfig(w.cfg.DatabaseURL)
	if err != nil {
		return errors.New("parse PAYSTREAM_DATABASE_URL: invalid connection string")
	}
	pcfg.MaxConns = int32(w.cfg.DBMaxConns)
	if pcfg.MaxConns == 0 {
		// The batcher needs a few connections per kind of statement; the
		// rest serve sweeps, readiness and bursts.
		pcfg.MaxConns = int32(16 + w.cfg.Concurrency/32)
	}
	// Open connections up front so that the first payments do not pay for
	// connection set-up.
	pcfg.MinConns = min(pcfg.MaxConns, 8)
	w.tracePool(pcfg)
	if w.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("database pool: %w", err)
	}
	return retryUntil(ctx, w.log, "connect to the database", w.pool.Ping)
}

// connectNATS connects with reconnects for ever: a service waits for NATS
// however long it takes to come (back). w.ncClosed is closed when the
// connection is.
func (w *worker) connectNATS() (err error) {
	closed := make(chan struct{})
	w.ncClosed = closed
	o := cmdwire.NATSOptions(w.cfg, "paystream-worker "+w.cfg.WorkerID)
	o.Logger = w.log
	o.ClosedFunc = func() { close(closed) }
	// Hundreds of handlers publish and ack at once: one write for many
	// (docs/performance-history.md, eighth round).
	o.CoalesceWrites = true
	w.nc, err = natsconn.Connect(o,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(8<<20),
		nats.DrainTimeout(10*time.Second),
	)
	if err != nil {
		return err
	}
	if w.js, err = jetstream.New(w.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// newMetrics returns the registry that /metrics serves, holding the Go and
// process collectors and paystream's metrics.
func newMetrics() (*prometheus.Registry, *telemetry.Metrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg, telemetry.New(reg)
}

// newProcessor builds the gateway client, the batching store and the
// processor on them.
func (w *worker) newProcessor(m *telemetry.Metrics) (*processing.Processor, error) {
	routes, closeGWs, err := newRoutes(w.cfg, w.log, w.tracing)
	if err != nil {
		return nil, err
	}
	fan, closeRisk, err := newRisk(w.cfg)
	if err != nil {
		closeGWs()
		return nil, err
	}
	w.closeGW = func() {
		closeGWs()
		closeRisk()
	}
	w.gw = routes[0].Gateway
	w.store = store.New(w.pool)
	w.batcher = store.NewBatcher(w.store, store.BatcherConfig{MaxBatch: w.cfg.BatchSize, MaxWait: w.cfg.BatchWait})
	pcfg := processingConfig(w.cfg)
	pcfg.Tracing = w.tracing
	w.proc = processing.NewRouted(pcfg, w.batcher, routes, w.log, m)
	if fan != nil {
		w.proc.WithRisk(fan)
		w.log.Info().Int("providers", len(w.cfg.RiskChecks)).Dur("timeout", fan.Timeout()).
			Msg("risk check before each charge: first answer of the providers wins")
	}
	return w.proc, nil
}

// newConsumer provisions the streams and the consumer (unless
// PAYSTREAM_PROVISION is off) and builds the consumer that feeds proc.
func (w *worker) newConsumer(ctx context.Context, proc consumer.Processor, m *telemetry.Metrics) error {
	ccfg := consumerConfig(w.cfg)
	ccfg.Tracing = w.tracing
	if w.cfg.Provision {
		if err := provision(ctx, w.js, ccfg, w.log); err != nil {
			return err
		}
	}
	w.dbGate = newDBGate(proc, w.pool.Ping, w.log)
	w.cons = consumer.New(w.js, ccfg, w.dbGate, w.log, m)
	return nil
}

// newSweeper builds the sweeper — it finds stuck rows in the store and
// re-publishes them through the consumer, or settles those that no longer
// validate — and the reconciler, which settles unknown rows by lookup.
func (w *worker) newSweeper(m *telemetry.Metrics) {
	st := w.store
	retention := processing.NewRetention(retentionConfig(w.cfg, w.cfg.WorkerID), st, w.log, m)
	w.sweeper = processing.NewSweeper(sweeperConfig(w.cfg), processing.SweeperDeps{
		FindFunc:      st.SweepStuck,
		RepublishFunc: w.cons.Republish,
		RetainFunc: func(ctx context.Context) error {
			_, err := retention.Run(ctx, false)
			return err
		},
		SettleFunc:     st.Settle,
		DeadLetterFunc: w.cons.PublishDeadLetter,
		AnnounceFunc:   w.cons.PublishOutcome,
		LookupFunc:     w.gw.Lookup,
		LookupAtFunc:   w.proc.LookupAt,
	}, w.log, m)
	w.recon = processing.NewReconciler(reconcilerConfig(w.cfg), st, w.gw, w.cons.PublishOutcome, w.log, m).
		WithGateways(w.proc)
}

// listenHTTP listens on PAYSTREAM_HTTP_ADDR, unless it is empty, for the
// server of /metrics, /healthz and /readyz that run starts.
func (w *worker) listenHTTP(reg *prometheus.Registry) (err error) {
	if w.cfg.HTTPAddr == "" {
		return nil
	}
	if w.listener, err = net.Listen("tcp", w.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen on PAYSTREAM_HTTP_ADDR %s: %w", w.cfg.HTTPAddr, err)
	}
	w.http = &http.Server{Handler: w.routes(reg), ReadHeaderTimeout: 5 * time.Second}
	return nil
}

// processingConfig is the processor's part of cfg.
func processingConfig(cfg config.Config) processing.Config {
	return processing.Config{
		Owner:               cfg.WorkerID,
		Lease:               cfg.Lease,
		MaxDeliver:          cfg.MaxDeliver,
		RetryBackoff:        cfg.RetryBackoff,
		RetryBackoffMax:     cfg.RetryBackoffMax,
		RateLimit:           cfg.RateLimit,
		RateBurst:           cfg.RateBurst,
		BreakerFailures:     uint32(cfg.BreakerFailures),
		BreakerOpenTimeout:  cfg.BreakerOpenTimeout,
		Limits:              limits(cfg),
		GatewayConcurrency:  cmdwire.GuardConfig(cfg, "").Concurrency,
		AdaptiveConcurrency: cmdwire.GuardConfig(cfg, "").Adaptive,
	}
}

// consumerConfig is the consumer's part of cfg.
func consumerConfig(cfg config.Config) consumer.Config {
	return consumer.Config{
		Stream:          cfg.Stream,
		ResultsStream:   cfg.ResultsStream,
		DLQStream:       cfg.DLQStream,
		Consumer:        cfg.Consumer,
		SubjectPrefix:   cfg.SubjectPrefix,
		Replicas:        cfg.StreamReplicas,
		Concurrency:     cfg.Concurrency,
		MaxDeliver:      cfg.MaxDeliver,
		AckWait:         cfg.AckWait,
		MaxAckPending:   cfg.MaxAckPending,
		StreamMaxAge:    cfg.StreamMaxAge,
		DuplicateWindow: cfg.DuplicateWindow,
		ShutdownTimeout: cfg.ShutdownTimeout,
		RetryBackoff:    cfg.RetryBackoff,
		RetryBackoffMax: cfg.RetryBackoffMax,
		Lookahead:       cfg.FairLookahead,
	}
}

// reconcilerConfig is the reconciler's part of cfg: it runs with the
// sweeper's interval, and asks again after a failed lookup with backoff from
// that interval up to the sweep grace.
func reconcilerConfig(cfg config.Config) processing.ReconcilerConfig {
	s := sweeperConfig(cfg)
	return processing.ReconcilerConfig{Interval: s.Interval, Limit: processing.DefaultSweepLimit,
		BackoffBase: s.Interval, BackoffMax: max(s.Grace, s.Interval), LookupTimeout: cfg.GatewayTimeout}
}

// limits are the request limits of cfg.
func limits(cfg config.Config) payment.Limits {
	return payment.Limits{MaxAmountMinor: cfg.MaxAmountMinor, SubjectPrefix: cfg.SubjectPrefix}
}

// sweeperConfig is the sweeper's part of cfg. A SweepGrace of 0 means the
// default grace (see config.Config.SweepGrace): a sweep needs one.
func sweeperConfig(cfg config.Config) processing.SweeperConfig {
	grace := cfg.SweepGrace
	if grace == 0 {
		grace = config.Default().SweepGrace
	}
	return processing.SweeperConfig{Interval: cfg.SweepInterval, Grace: grace, RetentionInterval: cfg.RetentionInterval,
		Limits: limits(cfg), LookupTimeout: cfg.GatewayTimeout}
}

// retentionConfig is the retention part of cfg, run by owner: the period
// of each final status (KeepForever, negative, keeps it for ever).
func retentionConfig(cfg config.Config, owner string) processing.RetentionConfig {
	periods := map[payment.Status]time.Duration{}
	for _, st := range []payment.Status{payment.StatusSucceeded, payment.StatusDeclined, payment.StatusFailed} {
		periods[st] = cfg.RetentionFor(string(st))
	}
	return processing.RetentionConfig{Periods: periods, Batch: cfg.RetentionBatch, Pause: cfg.RetentionPause, Owner: owner}
}

// provision creates the streams and consumer, waiting for NATS if it is not
// reachable yet.
func provision(ctx context.Context, js jetstream.JetStream, ccfg consumer.Config, log zerolog.Logger) error {
	return retryUntil(ctx, log, "provision streams and consumer", func(ctx context.Context) error {
		return consumer.Provision(ctx, js, ccfg)
	})
}

// retryUntil runs op (10s at most each time) until it succeeds, logging each
// failure, with backoff; when ctx ends it returns the last error. Start-up
// waits this way for a dependency that is still coming up.
func retryUntil(ctx context.Context, log zerolog.Logger, what string, op func(context.Context) error) error {
	for i := uint64(1); ; i++ {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := op(octx)
		cancel()
		if err == nil {
			return nil
		}
		log.Warn().Err(err).Msg(what + ": retrying")
		t := time.NewTimer(processing.Backoff(200*time.Millisecond, 5*time.Second, min(i, 30)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, err)
		case <-t.C:
		}
	}
}

// newGateway returns the fake gateway, or the HTTP client with the API key
// file and TLS files of cfg. A key file or TLS file that cannot be used stops
// the start, naming its setting (never the key).
func newGateway(cfg config.Config, log zerolog.Logger, tr *telemetry.Tracing) (processing.Gateway, error) {
	if cfg.GatewayURL == config.FakeGateway {
		return gateway.NewFake(gateway.FakeConfig{
			Latency:     cfg.FakeLatency,
			FailureRate: cfg.FakeFailureRate,
			DeclineRate: cfg.FakeDeclineRate,
		}), nil
	}
	hcfg := gateway.HTTPConfig{BaseURL: cfg.GatewayURL, Timeout: cfg.GatewayTimeout, Name: cfg.GatewayName, Tracing: tr}
	if cfg.GatewayAPIKeyFile != "" {
		key, err := gateway.OpenKeyFile(gateway.KeyFileConfig{Path: cfg.GatewayAPIKeyFile,
			Logger: log.With().Str("component", "gateway").Logger()})
		if err != nil {
			return nil, fmt.Errorf("PAYSTREAM_GATEWAY_API_KEY_FILE: %w", err)
		}
		hcfg.APIKey = key
		if u, err := url.Parse(cfg.GatewayURL); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
			log.Warn().Str("gateway", hcfg.Name).Msg("the gateway API key goes over plain http: use an https:// PAYSTREAM_GATEWAY_URL")
		}
	}
	if strings.HasPrefix(cfg.GatewayURL, "https://") {
		tlsCfg, err := gateway.TLSFiles{CA: cfg.GatewayCAFile, Cert: cfg.GatewayTLSCert, Key: cfg.GatewayTLSKey}.Config()
		if err != nil {
			return nil, fmt.Errorf("PAYSTREAM_GATEWAY_CA_FILE, PAYSTREAM_GATEWAY_TLS_CERT, PAYSTREAM_GATEWAY_TLS_KEY: %w", err)
		}
		hcfg.TLS = tlsCfg
	}
	gw, err := gateway.NewHTTP(hcfg)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return gw, nil
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil {
		host = "worker"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// routes serves /healthz, /readyz and /metrics.
func (w *worker) routes(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		if err := w.ready(r.Context()); err != nil {
			http.Error(rw, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(rw, "ready\n")
	})
	// OpenMetrics when the scraper asks for it: the latency histograms'
	// exemplars (trace ids) are only exposed in that format.
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	if w.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ready reports whether NATS is connected, the database reachable and the
// consumer bound and pulling (see dependencies).
func (w *worker) ready(ctx context.Context) error {
	return w.readyFrom(w.dependencies(ctx))
}

// readyFrom is ready on checks already made.
func (w *worker) readyFrom(deps []depCheck) error {
	var errs []error
	for _, d := range deps {
		if d.err != nil && d.name != depGateway {
			errs = append(errs, d.err)
		}
	}
	if err := w.proc.Ready(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// run runs the worker until ctx ends, then drains and releases everything.
// Order matters: the consumer drains while the batcher still records; the
// batcher, sweeper and HTTP server stop after it; NATS drains last but one,
// and the pool closes last.
func (w *worker) run(ctx context.Context) error {
	defer w.close()
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()

	// runCtx ends with ctx or when NATS closes for good (below); everything
	// but the batcher and the heartbeat, which outlive the drain, stops with
	// it, so that wg.Wait returns in both cases.
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Go(func() {
		if err := w.batcher.Run(bgCtx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("batcher: %w", err)
		}
	})
	wg.Go(func() { _ = w.sweeper.Run(runCtx) })
	wg.Go(func() { _ = w.recon.Run(runCtx) })
	wg.Go(func() { _ = w.beat.Run(bgCtx) }) // beats while draining; deletes its record at the end
	if w.coord != nil {
		wg.Go(func() { _ = w.coord.Run(bgCtx) }) // holds the share while draining; frees it at the end
	}
	for _, c := range w.coords {
		wg.Go(func() { _ = c.Run(bgCtx) })
	}
	wg.Go(func() { w.gauges.run(runCtx) })
	wg.Go(func() { w.dbGate.run(runCtx) })
	if w.http != nil {
		wg.Go(func() {
			if err := w.http.Serve(w.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http server: %w", err)
			}
		})
		w.log.Info().Str("addr", w.listener.Addr().String()).Msg("serving /metrics, /healthz, /readyz")
	}
	w.log.Info().Int("concurrency", w.cfg.Concurrency).Msg("worker running")

	// A connection that nats.go gives up on (it closes after repeated
	// authorization errors) never comes back: stop, so that the process
	// supervisor restarts the worker, rather than idle while looking healthy.
	wg.Go(func() {
		select {
		case <-w.ncClosed:
			err := errors.New("nats connection closed")
			if last := w.nc.LastError(); last != nil {
				err = fmt.Errorf("%w: %w", err, last)
			}
			stopRun(err)
		case <-runCtx.Done():
		}
	})
	err := w.cons.Run(runCtx)
	if cause := context.Cause(runCtx); ctx.Err() == nil && cause != nil {
		err = errors.Join(err, cause)
		w.log.Error().Err(cause).Msg("stopping")
	}
	stopRun(nil)
	w.log.Info().Msg("consumer stopped; shutting down")

	if w.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = w.http.Shutdown(sctx)
		cancel()
	}
	stopBg()
	wg.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	w.log.Info().Msg("worker stopped")
	return err
}

// close releases connections; it is safe on a partly built worker.
func (w *worker) close() {
	if w.nc != nil {
		// Drain flushes pending acks and publishes, then closes; the drain
		// timeout bounds it.
		if err := w.nc.Drain(); err != nil {
			w.nc.Close()
		}
		<-w.ncClosed
		w.nc = nil
	}
	if w.listener != nil {
		_ = w.listener.Close() // already closed by Shutdown when it served
	}
	if w.closeGW != nil {
		w.closeGW()
	}
	if w.pool != nil {
		w.pool.Close()
		w.pool = nil
	}
	w.flushTraces()
}
