package config

import (
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
)

// EnvPrefix is the prefix of every environment variable: a setting <NAME> is
// read from PAYSTREAM_<NAME> and from the flag --<name> (lower case, dashes).
const EnvPrefix = "PAYSTREAM"

// Config is the configuration of a paystream worker process: one field per
// setting of docs/contract.md §8 and the extras the design needs. Each field's
// comment names its environment variable and flag, unit, default and special
// values. Default returns the defaults, Parse reads a Config from flags and
// environment, and Validate checks one.
//
// Config holds secrets (NATSPassword, NATSToken, passwords inside
// DatabaseURL, NATSURLs and GatewayURL): log Redacted, never the Config itself
// with %v. MarshalZerologObject redacts on its own. Secrets kept in files
// (NATSCreds, GatewayAPIKeyFile, the TLS keys) are held as paths only.
type Config struct {
	// NATSURLs are the NATS servers to connect to (PAYSTREAM_NATS_URL,
	// --nats-url: comma-separated). Each must be a nats://, tls://, ws:// or
	// wss:// URL with a host; it may carry user:password or a token. Default
	// [nats://127.0.0.1:4222].
	NATSURLs []string
	// NATSCreds is the path of a NATS credentials (.creds) file
	// (PAYSTREAM_NATS_CREDS, --nats-creds); it must exist and be readable.
	// Default "": none.
	NATSCreds string
	// NATSUser is the NATS user name (PAYSTREAM_NATS_USER, --nats-user).
	// Default "": none.
	NATSUser string
	// NATSPassword is the NATS password (PAYSTREAM_NATS_PASSWORD,
	// --nats-password); it needs NATSUser. Secret. Default "": none.
	NATSPassword string
	// NATSToken is the NATS authentication token (PAYSTREAM_NATS_TOKEN,
	// --nats-token). Secret. Default "": none.
	NATSToken string
	// NATSTLSCA is the path of a PEM file of CA certificates to verify the
	// NATS server with (PAYSTREAM_NATS_TLS_CA, --nats-tls-ca). Default "":
	// the system roots.
	NATSTLSCA string
	// NATSTLSCert is the path of a PEM client certificate for NATS
	// (PAYSTREAM_NATS_TLS_CERT, --nats-tls-cert); set together with
	// NATSTLSKey or not at all. Default "": none.
	NATSTLSCert string
	// NATSTLSKey is the path of the PEM private key of NATSTLSCert
	// (PAYSTREAM_NATS_TLS_KEY, --nats-tls-key). Default "": none.
	NATSTLSKey string

	// DatabaseURL is the Postgres connection string, URL or keyword/value
	// form, as pgxpool.ParseConfig accepts it (PAYSTREAM_DATABASE_URL,
	// --database-url). May hold a password. Default
	// postgres://postgres@127.0.0.1:5432/paystream?sslmode=disable.
	DatabaseURL string
	// MigrateDatabaseURL is the Postgres connection string that `worker
	// migrate` and `worker --migrate` apply the migrations with, as the
	// role that owns the schema (PAYSTREAM_MIGRATE_DATABASE_URL,
	// --migrate-database-url), so that the runtime role of DatabaseURL needs
	// no DDL rights (deploy/postgres/roles.sql). May hold a password.
	// Default "": DatabaseURL.
	MigrateDatabaseURL string
	// DBMaxConns is the size of the Postgres connection pool
	// (PAYSTREAM_DB_MAX_CONNS, --db-max-conns). 0, the default, means sized
	// to the work: the worker derives it from Concurrency (pgxpool's own
	// default, max(4, CPUs), is far too small for it).
	DBMaxConns int

	// GatewayURL is the base URL of the HTTP payment gateway, or "fake" for
	// the in-process fake gateway (PAYSTREAM_GATEWAY_URL, --gateway-url).
	// Required: Default leaves it empty and Validate reports it missing.
	GatewayURL string
	// GatewayName is the gateway's name recorded in rows and outcome events
	// (PAYSTREAM_GATEWAY_NAME, --gateway-name), at most 64 bytes. Default "":
	// Parse fills in "fake" for the fake gateway, else GatewayURL's host
	// (host:port).
	GatewayName string
	// GatewayTimeout bounds one gateway call (PAYSTREAM_GATEWAY_TIMEOUT,
	// --gateway-timeout). Must be > 0. Default 10s.
	GatewayTimeout time.Duration
	// GatewayAPIKeyFile is the path of a file holding the gateway API key
	// (PAYSTREAM_GATEWAY_API_KEY_FILE, --gateway-api-key-file), sent as
	// "Authorization: Bearer <key>" on every gateway call and read again
	// when the file changes, so that a key rotates without a restart. It
	// must be readable and not empty at start. The key itself never enters a
	// Config. Default "": no Authorization header.
	GatewayAPIKeyFile string
	// GatewayCAFile is the path of a PEM file of CA certificates that
	// verify the gateway's certificate (PAYSTREAM_GATEWAY_CA_FILE,
	// --gateway-ca-file); it needs an https GatewayURL. Default "": the
	// system roots. Verification is never turned off.
	GatewayCAFile string
	// GatewayTLSCert is the path of a PEM client certificate for a gateway
	// that requires mutual TLS (PAYSTREAM_GATEWAY_TLS_CERT,
	// --gateway-tls-cert); set together with GatewayTLSKey or not at all,
	// with an https GatewayURL. Default "": none.
	GatewayTLSCert string
	// GatewayTLSKey is the path of the PEM private key of GatewayTLSCert
	// (PAYSTREAM_GATEWAY_TLS_KEY, --gateway-tls-key). Default "": none.
	GatewayTLSKey string

	// Concurrency is the number of payments in flight per worker process
	// (PAYSTREAM_CONCURRENCY, --concurrency), 1 to 4096. Default 64.
	Concurrency int
	// MaxDeliver is the number of deliveries of a message, the first one
	// included, before it is dead-lettered as exhausted
	// (PAYSTREAM_MAX_DELIVER, --max-deliver), 2 to 1000. Default 10.
	MaxDeliver int
	// AckWait is the JetStream ack wait of the consumer (PAYSTREAM_ACK_WAIT,
	// --ack-wait): at least 1s and longer than GatewayTimeout, so that an
	// in-progress heartbeat can keep the message during a call. Default 30s.
	AckWait time.Duration
	// RetryBackoff is the base delay of the retry backoff
	// (PAYSTREAM_RETRY_BACKOFF, --retry-backoff). Must be > 0. Default 500ms.
	RetryBackoff time.Duration
	// RetryBackoffMax caps the retry backoff (PAYSTREAM_RETRY_BACKOFF_MAX,
	// --retry-backoff-max); at least RetryBackoff. Default 30s.
	RetryBackoffMax time.Duration
	// Lease is the claim lease on an idempotency key (PAYSTREAM_LEASE,
	// --lease); it must exceed GatewayTimeout by more than 2s. Default 30s.
	Lease time.Duration
	// RateLimit is the number of gateway calls per second per process
	// (PAYSTREAM_RATE_LIMIT, --rate-limit), ≥ 0. 0, the default, means
	// unlimited.
	RateLimit float64
	// RateBurst is the burst of the rate limiter (PAYSTREAM_RATE_BURST,
	// --rate-burst), ≥ 1. Default 1.
	RateBurst int
	// BreakerFailures is the number of consecutive gateway failures that
	// open the circuit breaker (PAYSTREAM_BREAKER_FAILURES,
	// --breaker-failures), 1 to 4294967295. Default 5.
	BreakerFailures int
	// BreakerOpenTimeout is how long the breaker stays open before it lets a
	// probe through (PAYSTREAM_BREAKER_OPEN_TIMEOUT, --breaker-open-timeout).
	// Must be > 0. Default 30s.
	BreakerOpenTimeout time.Duration
	// MaxAmountMinor is the largest accepted amount_minor, in minor units
	// (PAYSTREAM_MAX_AMOUNT_MINOR, --max-amount-minor). Must be > 0. Default
	// 100000000.
	MaxAmountMinor int64
	// HTTPAddr is the host:port serving /metrics, /healthz and /readyz
	// (PAYSTREAM_HTTP_ADDR, --http-addr). Empty disables the server; since an
	// empty environment variable counts as unset, disable it with the flag
	// --http-addr= . Default ":8080".
	HTTPAddr string
	// ShutdownTimeout is how long a draining worker waits for in-flight work
	// before it cancels it (PAYSTREAM_SHUTDOWN_TIMEOUT, --shutdown-timeout).
	// Must be > 0. Default 30s.
	ShutdownTimeout time.Duration
	// LogLevel is the zerolog level: debug, info, warn or error
	// (PAYSTREAM_LOG_LEVEL, --log-level). Default info.
	LogLevel string
	// LogFormat is json or console (PAYSTREAM_LOG_FORMAT, --log-format).
	// Default json.
	LogFormat string

	// WorkerID identifies this process as lease owner and in logs
	// (PAYSTREAM_WORKER_ID, --worker-id): free text of at most 64 bytes
	// without control characters. Default "": the worker derives one from
	// host name and process id.
	WorkerID string
	// Stream is the JetStream stream of payment requests (PAYSTREAM_STREAM,
	// --stream). Default PAYMENTS.
	Stream string
	// ResultsStream is the stream of outcome events
	// (PAYSTREAM_RESULTS_STREAM, --results-stream). Default PAYMENT_RESULTS.
	ResultsStream string
	// DLQStream is the stream of dead letters (PAYSTREAM_DLQ_STREAM,
	// --dlq-stream). Default PAYMENTS_DLQ. The three stream names must
	// differ.
	DLQStream string
	// Consumer is the name of the durable pull consumer shared by all
	// workers (PAYSTREAM_CONSUMER, --consumer). Default payment-workers.
	Consumer string
	// SubjectPrefix is the first subject token(s) (PAYSTREAM_SUBJECT_PREFIX,
	// --subject-prefix): requests are <prefix>.requests.>, outcomes
	// <prefix>.results.<status>, dead letters <prefix>.dlq.<reason>. One or
	// more dot-separated tokens without wildcards or spaces. Default
	// payments.
	SubjectPrefix string
	// Provision makes the worker create or update the streams and the
	// consumer at start (PAYSTREAM_PROVISION, --provision). Default true.
	Provision bool
	// StreamReplicas is the replica count of the three streams and the
	// consumer (PAYSTREAM_STREAM_REPLICAS, --stream-replicas), 1 to 5: 1 on a
	// single server, 3 on a cluster. Provisioning sets it, so every worker of
	// a fleet must agree. Default 1.
	StreamReplicas int
	// MaxAckPending is the consumer's MaxAckPending
	// (PAYSTREAM_MAX_ACK_PENDING, --max-ack-pending), ≥ 0. 0, the default,
	// means derived by the worker.
	MaxAckPending int
	// StreamMaxAge is the retention by age of the request and results
	// streams (PAYSTREAM_STREAM_MAX_AGE, --stream-max-age); the dead-letter
	// stream has no age limit. Must be > 0. Default 168h (7 days).
	StreamMaxAge time.Duration
	// DuplicateWindow is the Nats-Msg-Id de-duplication window of the
	// request and results streams (PAYSTREAM_DUPLICATE_WINDOW,
	// --duplicate-window): at least 2m (docs/contract.md §3) and at most
	// StreamMaxAge. Default 2m.
	DuplicateWindow time.Duration
	// SweepInterval is how often a worker tries to run the sweeper that
	// rescues abandoned rows (PAYSTREAM_SWEEP_INTERVAL, --sweep-interval).
	// Must be > 0. Default 30s.
	SweepInterval time.Duration
	// SweepGrace is how long a lease must have been expired before the
	// sweeper rescues its row (PAYSTREAM_SWEEP_GRACE, --sweep-grace), ≥ 0.
	// A released lease (a retry waiting for its redelivery) counts as
	// expired, so keep the grace above the longest retry delay
	// (RETRY_BACKOFF_MAX, BREAKER_OPEN_TIMEOUT, a gateway's Retry-After) or
	// waiting payments are re-published as duplicates. Default 5m. 0 means
	// the default: the worker sweeps with 5m (a sweep needs a grace, which
	// also spaces the re-publishing of one row).
	SweepGrace time.Duration
	// ReplayHorizon is how old a dead letter may be for paystreamctl dlq
	// replay to re-publish it (PAYSTREAM_REPLAY_HORIZON, --replay-horizon),
	// > 0; every retention period is at least this long, so that a replayed
	// dead letter still finds its payment's row. Default 168h (7 days).
	ReplayHorizon time.Duration
	// Retention is how long final rows are kept (PAYSTREAM_RETENTION,
	// --retention): at least 48h, longer than StreamMaxAge and at least
	// ReplayHorizon, so that a redelivery or replay still finds its row
	// (docs/contract.md §11.5); KeepForever (-1) keeps them for ever. It is
	// the period of every status whose own period below is 0. Default
	// 2160h (90 days).
	Retention time.Duration
	// RetentionSucceeded, RetentionDeclined and RetentionFailed are the
	// periods of one status (PAYSTREAM_RETENTION_SUCCEEDED, …), with the
	// rules of Retention; 0, the default, means Retention; KeepForever
	// keeps the status's rows for ever. Use RetentionFor.
	RetentionSucceeded time.Duration
	RetentionDeclined  time.Duration
	RetentionFailed    time.Duration
	// RetentionInterval is how often the fleet runs retention, one worker
	// at a time (PAYSTREAM_RETENTION_INTERVAL), > 0. Default 10m.
	RetentionInterval time.Duration
	// RetentionBatch is how many rows one retention statement deletes
	// (PAYSTREAM_RETENTION_BATCH), 1 to 100,000. Default 1000.
	RetentionBatch int
	// RetentionPause is the pause between two retention batches
	// (PAYSTREAM_RETENTION_PAUSE), 0 to 1m. Default 100ms.
	RetentionPause time.Duration
	// FakeLatency is the fake gateway's delay per call
	// (PAYSTREAM_FAKE_LATENCY, --fake-latency), ≥ 0. Default 0.
	FakeLatency time.Duration
	// FakeFailureRate is the fraction of fake gateway calls that fail like a
	// 5xx (PAYSTREAM_FAKE_FAILURE_RATE, --fake-failure-rate), 0 to 1.
	// Default 0.
	FakeFailureRate float64
	// FakeDeclineRate is the fraction of fake gateway calls declined on top
	// of the amounts ending in 13 (PAYSTREAM_FAKE_DECLINE_RATE,
	// --fake-decline-rate), 0 to 1. Default 0.
	FakeDeclineRate float64
	// BatchSize is the largest number of claims or records per database
	// round trip (PAYSTREAM_BATCH_SIZE, --batch-size), 1 to 1024. Default
	// 128.
	BatchSize int
	// BatchWait is how long a database batch that is not full waits for
	// the round trip of its kind in flight before it is sent beside it
	// (PAYSTREAM_BATCH_WAIT, --batch-wait), 0 to 50ms. Default 500µs. A
	// batch goes at once when no round trip of its kind is in flight, and
	// otherwise gathers requests until the round trip is back, or until
	// it has run longer than BatchWait and 4× the average (see
	// store.BatcherConfig.MaxWait).
	BatchWait time.Duration
	// Migrate makes the worker apply pending migrations at start
	// (PAYSTREAM_MIGRATE, --migrate). Default false.
	Migrate bool
	// Pprof also serves Go's /debug/pprof profiles on HTTPAddr
	// (PAYSTREAM_PPROF, --pprof), for profiling a running worker; keep the
	// address private. Default false.
	Pprof bool
	// GatewayBudget is the gateway's fleet-wide budget in calls per second
	// (PAYSTREAM_GATEWAY_BUDGET, --gateway-budget), shared by the workers
	// through NATS KV; RateLimit still caps each process. 0, the default,
	// means none.
	GatewayBudget float64
	// GatewayConcurrency bounds the payments in flight per worker for the
	// gateway (PAYSTREAM_GATEWAY_CONCURRENCY, --gateway-concurrency), 0 to
	// 4096; the ceiling of the adaptive limit. 0, the default, leaves
	// Concurrency alone to bound them.
	GatewayConcurrency int
	// GatewayConcurrencyMode is fixed (the default) or aimd: adaptive
	// between 1 and GatewayConcurrency, or Concurrency when that is 0
	// (PAYSTREAM_GATEWAY_CONCURRENCY_MODE, --gateway-concurrency-mode).
	GatewayConcurrencyMode string
	// FleetBreaker shares breaker votes through NATS KV
	// (PAYSTREAM_FLEET_BREAKER, --fleet-breaker): the gateway is down for
	// the fleet when a majority of the live workers say so, and one worker
	// at a time probes. Default true.
	FleetBreaker bool
	// FleetInterval is how often a worker refreshes its budget share and
	// breaker vote (PAYSTREAM_FLEET_INTERVAL, --fleet-interval), 50ms to
	// 1m; a dead worker's share is free after three. Default 1s.
	FleetInterval time.Duration
	// FairLookahead is how many messages a worker fetches beyond its free
	// slots, holding them (with their InProgress heartbeat running) so that
	// slots go fairly to merchants (PAYSTREAM_FAIR_LOOKAHEAD,
	// --fair-lookahead), 0 to 4096. 0 pulls only into free slots. Default 32.
	FairLookahead int
	// Gateways names several gateways (PAYSTREAM_GATEWAYS, --gateways):
	// comma-separated `name=url[;weight=N][;budget=R][;merchants=a|b][;currencies=EUR|GBP]`
	// entries (ParseGateways; GatewaySpecs gives them parsed). Empty, the
	// default, means the one gateway of GatewayURL.
	Gateways string
	// RiskChecks are the base URLs of replicas of a risk service, asked all
	// at once before each charge, the first answer winning
	// (PAYSTREAM_RISK_CHECKS, --risk-checks): http(s), at most 8, no
	// repeats. Empty, the default, is no risk check. An addition beyond the
	// shared contract (issue 14; docs/fleet.md, "Fan-out only where it is
	// safe").
	RiskChecks []string
	// RiskTimeout bounds that check (PAYSTREAM_RISK_TIMEOUT,
	// --risk-timeout), 10ms to 10s and under a third of Lease. Default 1s.
	RiskTimeout time.Duration
}

// SettingError is one problem with one setting. Parse and Validate return
// them joined with errors.Join, one per faulty setting, in declaration order.
type SettingError struct {
	// Var is the environment variable, e.g. PAYSTREAM_ACK_WAIT.
	Var string
	// Flag is the flag, e.g. --ack-wait.
	Flag string
	// Err says what is wrong. It never contains a secret.
	Err error
}

// Error returns e.g. "PAYSTREAM_CONCURRENCY (--concurrency): must be between
// 1 and 4096, got 0".
func (e *SettingError) Error() string { return fmt.Sprintf("%s (%s): %v", e.Var, e.Flag, e.Err) }

// Unwrap returns e.Err.
func (e *SettingError) Unwrap() error { return e.Err }

// Default returns the default configuration. It does not validate:
// GatewayURL, which has no default, is empty.
func Default() Config {
	var c Config
	for _, s := range c.settings() {
		s.value.reset()
	}
	return c
}

// Vars returns the names of the environment variables of all settings, in
// declaration order.
func Vars() []string {
	var c Config
	settings := c.settings()
	vars := make([]string, len(settings))
	for i, s := range settings {
		vars[i] = envVar(s.name)
	}
	return vars
}

// Parse registers every setting as a flag on fs, parses args (without the
// program name) and the environment, and returns the validated Config.
//
// Flags win over the environment, and the environment over defaults. An
// environment variable that is unset or empty leaves the setting alone;
// lookupEnv is os.LookupEnv in production and nil means no environment.
// Unknown PAYSTREAM_* variables are ignored; unknown flags are an error.
// fs may hold the caller's own flags, registered before the call (a flag
// named like a setting panics, as flag.FlagSet.Var does), and positional
// arguments are left in fs.Args(). With -h or --help the error wraps
// flag.ErrHelp.
//
// Invalid settings, including values that do not parse, yield one error that
// lists every problem (one *SettingError per setting, joined with
// errors.Join); the Config is then the zero value. On success an empty
// GatewayName is filled in (see Config.GatewayName).
func Parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) (Config, error) {
	c, err := parse(fs, args, lookupEnv, nil)
	if err != nil {
		return Config{}, err
	}
	if c.GatewayName == "" {
		c.GatewayName = defaultGatewayName(c.GatewayURL)
	}
	return c, nil
}

// ParseSettings is Parse for a program other than the worker that shares
// some of its settings, such as the publisher, which connects to the same
// NATS: it registers, reads and validates only the settings named, each by
// its name after the PAYSTREAM_ prefix ("NATS_URL", "STREAM"; NATSSettings
// names the NATS connection's). Flags, environment and errors follow Parse's
// rules, so the program accepts the worker's flags and environment variables
// for those settings and reports their problems in the same words. The
// other fields of the Config hold their defaults, unchecked, and
// GatewayName is left as it is. A name that is no setting panics (a wiring
// bug).
func ParseSettings(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool), names ...string) (Config, error) {
	if names == nil {
		names = []string{} // nil would mean every setting
	}
	return parse(fs, args, lookupEnv, names)
}

// NATSSettings returns the names of the settings of the connection to NATS:
// every setting named NATS_… (NATS_URL, NATS_CREDS, NATS_USER,
// NATS_PASSWORD, NATS_TOKEN, NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY), in
// declaration order. A program that connects to NATS reads them with
// ParseSettings.
func NATSSettings() []string {
	var c Config
	var names []string
	for _, s := range c.settings() {
		if strings.HasPrefix(s.name, "NATS_") {
			names = append(names, s.name)
		}
	}
	return names
}

// parse implements Parse and ParseSettings: it reads and validates the
// settings named in only, or every setting when only is nil, and leaves the
// other fields at their defaults.
func parse(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool), only []string) (Config, error) {
	var c Config
	all := c.settings()
	for _, s := range all {
		s.value.reset()
	}
	settings := all
	if only != nil {
		settings = pick(all, only)
	}
	for _, s := range settings {
		fs.Var(s.value, flagName(s.name), s.usage+" (env "+envVar(s.name)+")")
	}

	// ff v3 reads environment variables only through os.Getenv
	// (WithEnvVarPrefix), which would ignore lookupEnv and let the process
	// environment leak into every caller and test. Its config-file hook
	// gives the layering we need instead: it runs after the command line and
	// skips the flags that the command line set. So the environment is our
	// "config file parser": it ignores the file (ff insists on opening one;
	// the root of an empty embed.FS serves without touching the disk) and
	// sets each setting from lookupEnv.
	err := ff.Parse(fs, args,
		ff.WithFilesystem(embed.FS{}),
		ff.WithConfigFile("."),
		ff.WithConfigFileParser(func(_ io.Reader, set func(name, value string) error) error {
			if lookupEnv == nil {
				return nil
			}
			for _, s := range settings {
				if v, ok := lookupEnv(envVar(s.name)); ok && v != "" {
					if err := set(flagName(s.name), v); err != nil {
						return fmt.Errorf("set %s: %w", envVar(s.name), err)
					}
				}
			}
			return nil
		}),
	)
	if err != nil {
		return Config{}, err
	}

	broken := map[string]bool{}
	for _, s := range settings {
		if s.value.parseError() != nil {
			broken[s.name] = true
		}
	}
	if err := check(settings, broken); err != nil {
		return Config{}, err
	}
	return c, nil
}

// pick returns the settings named, in declaration order; it panics on a name
// that is no setting.
func pick(settings []setting, names []string) []setting {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []setting
	for _, s := range settings {
		if want[s.name] {
			out = append(out, s)
			delete(want, s.name)
		}
	}
	if len(want) > 0 {
		panic(fmt.Sprintf("config.ParseSettings: no such settings: %q", slices.Sorted(maps.Keys(want))))
	}
	return out
}

// Validate checks c and returns nil or one error listing every problem: one
// *SettingError per faulty setting, in declaration order, joined with
// errors.Join. It reads the files named by NATSCreds and the TLS settings to
// check that they exist and are readable.
func (c Config) Validate() error {
	return check(c.settings(), nil)
}

// check reports parse errors and rule violations of settings. A rule that
// reads a setting in broken (one whose input did not parse, so its field
// holds a value nobody chose) is skipped.
func check(settings []setting, broken map[string]bool) error {
	var errs []error
	for _, s := range settings {
		if err := s.value.parseError(); err != nil {
			errs = append(errs, s.error(err))
			continue
		}
	rules:
		for _, r := range s.rules {
			for _, d := range r.deps {
				if broken[d] {
					continue rules
				}
			}
			if err := r.fn(); err != nil {
				errs = append(errs, s.error(err))
				break // one problem per setting
			}
		}
	}
	return errors.Join(errs...)
}

// defaultGatewayName is "fake" for the fake gateway, else the URL's host.
func defaultGatewayName(gatewayURL string) string {
	if gatewayURL == FakeGateway {
		return FakeGateway
	}
	u, err := url.Parse(gatewayURL)
	if err != nil {
		return ""
	}
	return u.Host
}

// FakeGateway is the GatewayURL that selects the in-process fake gateway.
const FakeGateway = "fake"

// envVar returns the environment variable of setting name, e.g.
// PAYSTREAM_ACK_WAIT for ACK_WAIT.
func envVar(name string) string { return EnvPrefix + "_" + name }

// flagName returns the flag of setting name, e.g. ack-wait for ACK_WAIT.
// It is the inverse of ff's mapping from flag to environment variable.
func flagName(name string) string { return strings.ToLower(strings.ReplaceAll(name, "_", "-")) }

// ref names setting name in a message about another one, e.g.
// "PAYSTREAM_GATEWAY_TIMEOUT (--gateway-timeout)".
func ref(name string) string { return envVar(name) + " (--" + flagName(name) + ")" }

// KeepForever is the retention period (-1 in a setting) that keeps rows
// for ever.
const KeepForever time.Duration = -1

// RetentionFor returns the retention period of final rows of status
// ("succeeded", "declined" or "failed"): its own setting, or Retention when
// that is 0. KeepForever keeps them for ever.
func (c Config) RetentionFor(status string) time.Duration {
	var d time.Duration
	switch status {
	case "succeeded":
		d = c.RetentionSucceeded
	case "declined":
		d = c.RetentionDeclined
	case "failed":
		d = c.RetentionFailed
	}
	if d == 0 {
		return c.Retention
	}
	return d
}
