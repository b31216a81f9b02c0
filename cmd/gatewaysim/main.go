// Command gatewaysim runs the payment gateway simulator (package
// gateway/sim): an HTTP server speaking docs/contract.md §5 that honours
// Idempotency-Key, with configurable latency, declines, errors, rate
// limiting, hangs and lost responses, and a count of real charges for tests.
//
// Endpoints: POST /v1/charges, GET /v1/charges?idempotency_key= (the
// lookup of docs/contract.md §5), POST /v1/risk (a side-effect-free risk
// check: deny for an amount ending in 66, else allow), GET /v1/stats, GET and PUT /v1/config
// (change the simulated faults at run time, and spare_lookups, which has no
// flag), POST /v1/charges/lookup (what the simulator recorded per
// idempotency key), GET /metrics, GET /healthz. See package gateway/sim.
//
// With --keys-file the gateway API requires "Authorization: Bearer <key>"
// with a key listed in the file (one per line, every one accepted; "revoked
// <key>" lines are refused with 403), read again when the file changes. With
// --tls-cert and --tls-key it serves HTTPS, and with --tls-client-ca it also
// requires a client certificate signed by that CA (mutual TLS).
//
// Every flag has an environment variable: GATEWAYSIM_ plus the flag name in
// upper case with - as _ (--error-rate → GATEWAYSIM_ERROR_RATE). Flags win.
// SIGINT or SIGTERM shut the server down gracefully.
//
// `gatewaysim healthcheck [flags]` reads the same flags and variables and
// GETs /healthz of the server they configure on this host: exit 0 when it
// answers 200, 1 otherwise (a container healthcheck for images without a
// shell or an HTTP client).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/cmdwire"
)

const envPrefix = "GATEWAYSIM_"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		run = healthcheck
		os.Args = os.Args[1:]
	}
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gatewaysim:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	addr            string
	sim             sim.Config
	logFormat       string
	logLevel        string
	shutdownTimeout time.Duration
	keysFile        string
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	maxInFlight     int
	meterWindow     time.Duration
}

// parse reads flags from args, then fills every flag not given from its
// GATEWAYSIM_* environment variable, and validates the result, reporting
// every problem at once.
func parse(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("gatewaysim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8099", "listen address host:port")
	fs.DurationVar(&o.sim.Latency, "latency", 0, "latency of a key's first request")
	fs.DurationVar(&o.sim.LatencyJitter, "latency-jitter", 0, "extra random latency in [0, jitter)")
	fs.Float64Var(&o.sim.DeclineRate, "decline-rate", 0, "fraction of charges declined (insufficient_funds) besides amounts ending in 13")
	fs.Float64Var(&o.sim.ErrorRate, "error-rate", 0, "fraction answered 503 without charging")
	fs.Float64Var(&o.sim.RateLimitRate, "rate-limit-rate", 0, "fraction answered 429 with Retry-After")
	fs.Float64Var(&o.sim.TimeoutRate, "timeout-rate", 0, "fraction that hang until the client gives up (at most --hang-for)")
	fs.Float64Var(&o.sim.LostResponseRate, "lost-response-rate", 0, "fraction charged and then answered 500")
	fs.DurationVar(&o.sim.RetryAfter, "retry-after", sim.DefaultRetryAfter, "Retry-After of 429 answers")
	fs.DurationVar(&o.sim.HangFor, "hang-for", sim.DefaultHangFor, "longest hang of a simulated timeout")
	fs.Int64Var(&o.sim.Seed, "seed", 0, "random seed (0: random)")
	fs.IntVar(&o.sim.MaxKeys, "max-keys", 0, "completed idempotency keys remembered (0: 1048576, negative: no limit)")
	fs.IntVar(&o.sim.MaxCharges, "max-charges", 0, "charges that lookups still find (0: 4194304, about 100 bytes each; negative: no limit; never fewer than --max-keys)")
	fs.DurationVar(&o.sim.RiskLatency, "risk-latency", 0, "latency of every risk check (POST /v1/risk)")
	fs.Float64Var(&o.sim.RiskErrorRate, "risk-error-rate", 0, "fraction of risk checks answered 503")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for requests in flight")
	fs.StringVar(&o.keysFile, "keys-file", "", "file of accepted API keys, one per line (\"revoked <key>\" lines get 403), read again when it changes; empty: no key required")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM server certificate: serve HTTPS (needs --tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM CA file: require client certificates it signed (mutual TLS; needs --tls-cert)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 0, "answer 429 rate_limited (Retry-After: 0) to a charge that would make more than this many charges in flight, a gateway whose capacity is a concurrency (0: no limit); GET /v1/meter counts charges per second")
	fs.DurationVar(&o.meterWindow, "meter-window", sim.DefaultMeterWindow, "how far back GET /v1/meter's per-second counts go; older seconds are forgotten (at least 1s)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	var problems []error
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				problems = append(problems, fmt.Errorf("%s (--%s): %w", env, f.Name, err))
			}
		}
	})
	if err := o.sim.Validate(); err != nil {
		problems = append(problems, err)
	}
	if o.logFormat != "json" && o.logFormat != "console" {
		problems = append(problems, fmt.Errorf("log format must be json or console, got %q", o.logFormat))
	}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		problems = append(problems, fmt.Errorf("invalid log level %q", o.logLevel))
	}
	if o.shutdownTimeout <= 0 {
		problems = append(problems, fmt.Errorf("shutdown timeout must be positive, got %s", o.shutdownTimeout))
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		problems = append(problems, errors.New("--tls-cert and --tls-key go together"))
	}
	if o.maxInFlight < 0 {
		problems = append(problems, fmt.Errorf("--max-in-flight must not be negative, got %d", o.maxInFlight))
	}
	if o.meterWindow < time.Second {
		problems = append(problems, fmt.Errorf("--meter-window must be at least 1s, got %s", o.meterWindow))
	}
	if o.tlsClientCA != "" && o.tlsCert == "" {
		problems = append(problems, errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
	}
	if len(problems) > 0 {
		return o, fmt.Errorf("invalid settings:\n%w", errors.Join(problems...))
	}
	return o, nil
}

// run serves the simulator until ctx ends, then shuts down gracefully and
// returns nil. Logs go to stderr; stdout is unused.
func run(ctx context.Context, args []string, getenv func(string) string, _, stderr io.Writer) error {
	o, err := parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}

	var out io.Writer = stderr
	if o.logFormat == "console" {
		out = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.RFC3339}
	}
	level, _ := zerolog.ParseLevel(o.logLevel) // validated by parse
	logger := zerolog.New(out).Level(level).With().Timestamp().Logger()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	simulator := sim.New(o.sim, logger, reg)
	if o.keysFile != "" {
		keys, err := sim.OpenKeysFile(o.keysFile, logger, nil)
		if err != nil {
			return fmt.Errorf("--keys-file: %w", err)
		}
		simulator.RequireKeys(keys)
	}
	tlsCfg, err := serverTLS(o)
	if err != nil {
		return err
	}

	// The meter counts charges per second (GET /v1/meter) and, with
	// --max-in-flight, refuses charges above that many in flight.
	meter := sim.NewMeter(simulator)
	meter.SetMaxConcurrent(o.maxInFlight)
	meter.SetWindow(o.meterWindow)
	mux := http.NewServeMux()
	mux.Handle("/v1/", meter)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	cfg := simulator.Config()
	logger.Info().Str("addr", ln.Addr().String()).
		Dur("latency", cfg.Latency).Dur("latency_jitter", cfg.LatencyJitter).
		Float64("decline_rate", cfg.DeclineRate).Float64("error_rate", cfg.ErrorRate).
		Float64("rate_limit_rate", cfg.RateLimitRate).Float64("timeout_rate", cfg.TimeoutRate).
		Float64("lost_response_rate", cfg.LostResponseRate).
		Bool("tls", tlsCfg != nil).Bool("client_certs_required", o.tlsClientCA != "").
		Bool("api_keys_required", o.keysFile != "").Int("max_in_flight", o.maxInFlight).
		Msg("gatewaysim listening")

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info().Msg("gatewaysim shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests still running (a long simulated hang, say): cut them off.
		logger.Warn().Err(err).Msg("graceful shutdown timed out; closing connections")
		_ = srv.Close()
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	st := simulator.Stats()
	logger.Info().Int64("real_charges", st.Charges).Int("distinct_keys", st.Keys).
		Int("double_charged", len(st.DoubleCharged)).Int64("in_flight_conflicts", st.InFlightConflicts).
		Int64("lookups", st.Lookups).Int64("unauthorized", st.Unauthorized).Int64("forbidden", st.Forbidden).
		Msg("gatewaysim stopped")
	return nil
}

// serverTLS is the TLS configuration of --tls-cert, --tls-key and
// --tls-client-ca, or nil without them.
func serverTLS(o options) (*tls.Config, error) {
	if o.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if o.tlsClientCA != "" {
		pem, err := os.ReadFile(o.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", o.tlsClientCA)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// healthcheck parses args and the environment as run does and GETs /healthz
// of the server that configuration listens on, dialling the loopback
// address for an unspecified host. It returns an error unless the answer is
// 200.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		return fmt.Errorf("healthcheck: listen address %q: %w", o.addr, err)
	}
	return cmdwire.Probe(ctx, o.addr, "/healthz", stdout)
}
