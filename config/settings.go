package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/risk/riskhttp"
)

// setting is one row of the table from which defaults, flags, environment
// variables, Vars, validation and logging all derive.
type setting struct {
	name  string    // after PAYSTREAM_, e.g. ACK_WAIT; the flag is ack-wait
	usage string    // flag usage, without the env var (added at registration)
	value flagValue // bound to one Config field; holds the default
	rules []rule    // checked in order; the first that fails is reported
}

// error wraps err with the setting's names.
func (s setting) error(err error) error {
	return &SettingError{Var: envVar(s.name), Flag: "--" + flagName(s.name), Err: err}
}

// rule is one check of a setting's value.
type rule struct {
	// deps are the other settings fn reads; fn is skipped when one of them
	// did not parse.
	deps []string
	fn   func() error
}

// Bounds of some settings, named where a message or a doc repeats them.
const (
	leaseMargin        = 2 * time.Second
	minDuplicateWindow = 2 * time.Minute
	minRetention       = 48 * time.Hour
	maxNameLen         = 64  // GatewayName, WorkerID
	maxJetStreamName   = 255 // stream and consumer names
)

// settings binds the table to c's fields. Building it does not change c;
// calling reset on every value sets the defaults.
func (c *Config) settings() []setting {
	return []setting{
		{
			name:  "NATS_URL",
			usage: "NATS server URLs, comma-separated (nats://, tls://, ws:// or wss://)",
			value: newList(&c.NATSURLs, []string{"nats://127.0.0.1:4222"}),
			rules: []rule{{fn: func() error { return checkNATSURLs(c.NATSURLs) }}},
		},
		{
			name:  "NATS_CREDS",
			usage: "NATS credentials file",
			value: newString(&c.NATSCreds, ""),
			rules: []rule{{fn: readableFile(&c.NATSCreds)}},
		},
		{
			name:  "NATS_USER",
			usage: "NATS user",
			value: newString(&c.NATSUser, ""),
		},
		{
			name:  "NATS_PASSWORD",
			usage: "NATS password (secret)",
			value: newString(&c.NATSPassword, ""),
			rules: []rule{{fn: func() error {
				if c.NATSPassword != "" && c.NATSUser == "" {
					return fmt.Errorf("needs %s", ref("NATS_USER"))
				}
				return nil
			}}},
		},
		{
			name:  "NATS_TOKEN",
			usage: "NATS authentication token (secret)",
			value: newString(&c.NATSToken, ""),
		},
		{
			name:  "NATS_TLS_CA",
			usage: "PEM file of CA certificates for the NATS server",
			value: newString(&c.NATSTLSCA, ""),
			rules: []rule{{fn: readableFile(&c.NATSTLSCA)}},
		},
		{
			name:  "NATS_TLS_CERT",
			usage: "PEM client certificate for NATS; needs --nats-tls-key",
			value: newString(&c.NATSTLSCert, ""),
			rules: []rule{
				{fn: func() error {
					if c.NATSTLSCert == "" && c.NATSTLSKey != "" {
						return fmt.Errorf("required when %s is set", ref("NATS_TLS_KEY"))
					}
					return nil
				}},
				{fn: readableFile(&c.NATSTLSCert)},
			},
		},
		{
			name:  "NATS_TLS_KEY",
			usage: "PEM private key of the NATS client certificate",
			value: newString(&c.NATSTLSKey, ""),
			rules: []rule{
				{fn: func() error {
					if c.NATSTLSKey == "" && c.NATSTLSCert != "" {
						return fmt.Errorf("required when %s is set", ref("NATS_TLS_CERT"))
					}
					return nil
				}},
				{fn: readableFile(&c.NATSTLSKey)},
			},
		},
		{
			name:  "DATABASE_URL",
			usage: "Postgres connection string (URL or keyword/value)",
			value: newString(&c.DatabaseURL, "postgres://postgres@127.0.0.1:5432/paystream?sslmode=disable"),
			rules: []rule{{fn: func() error { return checkDatabaseURL(c.DatabaseURL) }}},
		},
		{
			name:  "MIGRATE_DATABASE_URL",
			usage: "Postgres connection string of the schema owner that migrations run as; empty = DATABASE_URL",
			value: newString(&c.MigrateDatabaseURL, ""),
			rules: []rule{{fn: func() error {
				if c.MigrateDatabaseURL == "" {
					return nil
				}
				return checkDatabaseURL(c.MigrateDatabaseURL)
			}}},
		},
		{
			name:  "DB_MAX_CONNS",
			usage: "Postgres connection pool size; 0 = sized to the work",
			value: newInt(&c.DBMaxConns, 0),
			rules: []rule{{fn: between(&c.DBMaxConns, 0, math.MaxInt32)}},
		},
		{
			name:  "GATEWAY_URL",
			usage: `payment gateway base URL, or "fake" for the in-process fake gateway (required)`,
			value: newString(&c.GatewayURL, ""),
			rules: []rule{{fn: func() error { return checkGatewayURLOrList(c.GatewayURL, c.Gateways) }}},
		},
		{
			name:  "GATEWAY_NAME",
			usage: "gateway name recorded in rows; empty = fake or the gateway URL's host",
			value: newString(&c.GatewayName, ""),
			rules: []rule{{fn: text(&c.GatewayName)}},
		},
		{
			name:  "GATEWAY_TIMEOUT",
			usage: "timeout of one gateway call",
			value: newDuration(&c.GatewayTimeout, 10*time.Second),
			rules: []rule{{fn: positive(&c.GatewayTimeout)}},
		},
		{
			name:  "GATEWAY_API_KEY_FILE",
			usage: "file holding the gateway API key, sent as Authorization: Bearer and read again when it changes",
			value: newString(&c.GatewayAPIKeyFile, ""),
			rules: []rule{{fn: readableFile(&c.GatewayAPIKeyFile)}, {fn: holdsText(&c.GatewayAPIKeyFile)}},
		},
		{
			name:  "GATEWAY_CA_FILE",
			usage: "PEM file of CA certificates that verify the gateway (https); default the system roots",
			value: newString(&c.GatewayCAFile, ""),
			rules: []rule{
				{fn: readableFile(&c.GatewayCAFile)},
				{deps: []string{"GATEWAY_URL", "GATEWAYS"}, fn: needsHTTPS(&c.GatewayCAFile, c)},
			},
		},
		{
			name:  "GATEWAY_TLS_CERT",
			usage: "PEM client certificate for the gateway (mutual TLS); needs --gateway-tls-key",
			value: newString(&c.GatewayTLSCert, ""),
			rules: []rule{
				{fn: func() error {
					if c.GatewayTLSCert == "" && c.GatewayTLSKey != "" {
						return fmt.Errorf("required when %s is set", ref("GATEWAY_TLS_KEY"))
					}
					return nil
				}},
				{fn: readableFile(&c.GatewayTLSCert)},
				{deps: []string{"GATEWAY_URL", "GATEWAYS"}, fn: needsHTTPS(&c.GatewayTLSCert, c)},
			},
		},
		{
			name:  "GATEWAY_TLS_KEY",
			usage: "PEM private key of the gateway client certificate",
			value: newString(&c.GatewayTLSKey, ""),
			rules: []rule{
				{fn: func() error {
					if c.GatewayTLSKey == "" && c.GatewayTLSCert != "" {
						return fmt.Errorf("required when %s is set", ref("GATEWAY_TLS_CERT"))
					}
					return nil
				}},
				{fn: readableFile(&c.GatewayTLSKey)},
			},
		},
		{
			name:  "CONCURRENCY",
			usage: "payments in flight per worker process",
			value: newInt(&c.Concurrency, 64),
			rules: []rule{{fn: between(&c.Concurrency, 1, 4096)}},
		},
		{
			name:  "MAX_DELIVER",
			usage: "deliveries before a message is dead-lettered",
			value: newInt(&c.MaxDeliver, 10),
			rules: []rule{{fn: between(&c.MaxDeliver, 2, 1000)}},
		},
		{
			name:  "ACK_WAIT",
			usage: "JetStream ack wait; longer than the gateway timeout",
			value: newDuration(&c.AckWait, 30*time.Second),
			rules: []rule{
				{fn: atLeast(&c.AckWait, time.Second)},
				{deps: []string{"GATEWAY_TIMEOUT"}, fn: func() error {
					if c.AckWait <= c.GatewayTimeout {
						return fmt.Errorf("must be longer than %s so that an in-progress heartbeat can keep the message, got %v with a gateway timeout of %v",
							ref("GATEWAY_TIMEOUT"), c.AckWait, c.GatewayTimeout)
					}
					return nil
				}},
			},
		},
		{
			name:  "RETRY_BACKOFF",
			usage: "base delay of the retry backoff",
			value: newDuration(&c.RetryBackoff, 500*time.Millisecond),
			rules: []rule{{fn: positive(&c.RetryBackoff)}},
		},
		{
			name:  "RETRY_BACKOFF_MAX",
			usage: "largest retry delay",
			value: newDuration(&c.RetryBackoffMax, 30*time.Second),
			rules: []rule{{deps: []string{"RETRY_BACKOFF"}, fn: func() error {
				if c.RetryBackoffMax < c.RetryBackoff {
					return fmt.Errorf("must be at least %s, got %v with a backoff of %v",
						ref("RETRY_BACKOFF"), c.RetryBackoffMax, c.RetryBackoff)
				}
				return nil
			}}},
		},
		{
			name:  "LEASE",
			usage: "claim lease on an idempotency key; longer than the gateway timeout plus 2s",
			value: newDuration(&c.Lease, 30*time.Second),
			rules: []rule{{deps: []string{"GATEWAY_TIMEOUT"}, fn: func() error {
				if c.Lease <= c.GatewayTimeout+leaseMargin {
					return fmt.Errorf("must be longer than %s plus a %v margin, got %v with a gateway timeout of %v",
						ref("GATEWAY_TIMEOUT"), leaseMargin, c.Lease, c.GatewayTimeout)
				}
				return nil
			}}},
		},
		{
			name:  "RATE_LIMIT",
			usage: "gateway calls per second per process; 0 = unlimited",
			value: newFloat(&c.RateLimit, 0),
			rules: []rule{{fn: atLeast(&c.RateLimit, 0)}},
		},
		{
			name:  "RATE_BURST",
			usage: "burst of the gateway rate limiter",
			value: newInt(&c.RateBurst, 1),
			rules: []rule{{fn: atLeast(&c.RateBurst, 1)}},
		},
		{
			name:  "BREAKER_FAILURES",
			usage: "consecutive gateway failures that open the circuit breaker",
			value: newInt(&c.BreakerFailures, 5),
			rules: []rule{{fn: between(&c.BreakerFailures, 1, int(min(math.MaxUint32, math.MaxInt)))}},
		},
		{
			name:  "BREAKER_OPEN_TIMEOUT",
			usage: "how long the circuit breaker stays open",
			value: newDuration(&c.BreakerOpenTimeout, 30*time.Second),
			rules: []rule{{fn: positive(&c.BreakerOpenTimeout)}},
		},
		{
			name:  "MAX_AMOUNT_MINOR",
			usage: "largest accepted amount_minor, in minor units",
			value: newInt64(&c.MaxAmountMinor, payment.DefaultMaxAmountMinor),
			rules: []rule{{fn: positive(&c.MaxAmountMinor)}},
		},
		{
			name:  "HTTP_ADDR",
			usage: "host:port of /metrics, /healthz and /readyz; empty disables",
			value: newString(&c.HTTPAddr, ":8080"),
			rules: []rule{{fn: func() error { return checkHostPort(c.HTTPAddr) }}},
		},
		{
			name:  "SHUTDOWN_TIMEOUT",
			usage: "how long a draining worker waits for in-flight work",
			value: newDuration(&c.ShutdownTimeout, 30*time.Second),
			rules: []rule{{fn: positive(&c.ShutdownTimeout)}},
		},
		{
			name:  "LOG_LEVEL",
			usage: "log level: debug, info, warn or error",
			value: newString(&c.LogLevel, "info"),
			rules: []rule{{fn: oneOf(&c.LogLevel, "debug", "info", "warn", "error")}},
		},
		{
			name:  "LOG_FORMAT",
			usage: "log format: json or console",
			value: newString(&c.LogFormat, "json"),
			rules: []rule{{fn: oneOf(&c.LogFormat, "json", "console")}},
		},
		{
			name:  "WORKER_ID",
			usage: "worker identity (lease owner, logs); empty = host name and process id",
			value: newString(&c.WorkerID, ""),
			rules: []rule{{fn: text(&c.WorkerID)}},
		},
		{
			name:  "STREAM",
			usage: "JetStream stream of payment requests",
			value: newString(&c.Stream, contract.Stream),
			rules: []rule{{fn: jetStreamName(&c.Stream)}},
		},
		{
			name:  "RESULTS_STREAM",
			usage: "JetStream stream of outcome events",
			value: newString(&c.ResultsStream, contract.ResultsStream),
			rules: []rule{
				{fn: jetStreamName(&c.ResultsStream)},
				{fn: differs(&c.ResultsStream, "STREAM", &c.Stream)},
			},
		},
		{
			name:  "DLQ_STREAM",
			usage: "JetStream stream of dead letters",
			value: newString(&c.DLQStream, contract.DLQStream),
			rules: []rule{
				{fn: jetStreamName(&c.DLQStream)},
				{fn: differs(&c.DLQStream, "STREAM", &c.Stream)},
				{fn: differs(&c.DLQStream, "RESULTS_STREAM", &c.ResultsStream)},
			},
		},
		{
			name:  "CONSUMER",
			usage: "durable pull consumer shared by all workers",
			value: newString(&c.Consumer, contract.Consumer),
			rules: []rule{{fn: jetStreamName(&c.Consumer)}},
		},
		{
			name:  "SUBJECT_PREFIX",
			usage: "subject prefix: <prefix>.requests.>, <prefix>.results.>, <prefix>.dlq.>",
			value: newString(&c.SubjectPrefix, contract.SubjectPrefix),
			rules: []rule{{fn: func() error { return checkSubjectPrefix(c.SubjectPrefix) }}},
		},
		{
			name:  "PROVISION",
			usage: "create or update the streams and the consumer at start",
			value: newBool(&c.Provision, true),
		},
		{
			name:  "STREAM_REPLICAS",
			usage: "replicas of the streams and the consumer: 1 on a single server, 3 on a cluster",
			value: newInt(&c.StreamReplicas, 1),
			rules: []rule{{fn: between(&c.StreamReplicas, 1, 5)}},
		},
		{
			name:  "MAX_ACK_PENDING",
			usage: "consumer MaxAckPending; 0 = derived by the worker",
			value: newInt(&c.MaxAckPending, 0),
			rules: []rule{{fn: atLeast(&c.MaxAckPending, 0)}},
		},
		{
			name:  "STREAM_MAX_AGE",
			usage: "retention by age of the request and results streams",
			value: newDuration(&c.StreamMaxAge, 7*24*time.Hour),
			rules: []rule{{fn: positive(&c.StreamMaxAge)}},
		},
		{
			name:  "DUPLICATE_WINDOW",
			usage: "Nats-Msg-Id de-duplication window of the request and results streams",
			value: newDuration(&c.DuplicateWindow, minDuplicateWindow),
			rules: []rule{
				{fn: atLeast(&c.DuplicateWindow, minDuplicateWindow)},
				{deps: []string{"STREAM_MAX_AGE"}, fn: func() error {
					if c.DuplicateWindow > c.StreamMaxAge {
						return fmt.Errorf("must not exceed %s, got %v with a max age of %v",
							ref("STREAM_MAX_AGE"), c.DuplicateWindow, c.StreamMaxAge)
					}
					return nil
				}},
			},
		},
		{
			name:  "SWEEP_INTERVAL",
			usage: "how often a worker tries to sweep abandoned rows",
			value: newDuration(&c.SweepInterval, 30*time.Second),
			rules: []rule{{fn: positive(&c.SweepInterval)}},
		},
		{
			name:  "SWEEP_GRACE",
			usage: "how long a lease must have expired before its row is swept",
			value: newDuration(&c.SweepGrace, 5*time.Minute),
			rules: []rule{
				{fn: atLeast(&c.SweepGrace, 0)},
				// A released lease is held until its retry is due, and the
				// nak brings the redelivery at most a backoff after that: a
				// shorter grace re-publishes payments that merely wait.
				{deps: []string{"RETRY_BACKOFF_MAX"}, fn: func() error {
					grace := c.SweepGrace
					if grace == 0 { // the worker sweeps with the default grace then
						grace = Default().SweepGrace
					}
					if grace < c.RetryBackoffMax {
						return fmt.Errorf("%s must be at least %s (%s)", grace, ref("RETRY_BACKOFF_MAX"), c.RetryBackoffMax)
					}
					return nil
				}},
			},
		},
		{
			name:  "REPLAY_HORIZON",
			usage: "how old a dead letter may be for paystreamctl dlq replay; every retention period is at least this long",
			value: newDuration(&c.ReplayHorizon, 168*time.Hour),
			rules: []rule{{fn: positive(&c.ReplayHorizon)}},
		},
		c.retentionSetting("RETENTION", "how long final payment rows are kept (-1: for ever); longer than the stream max age",
			&c.Retention, 90*24*time.Hour),
		c.retentionSetting("RETENTION_SUCCEEDED", "how long succeeded rows are kept (-1: for ever); 0: as --retention",
			&c.RetentionSucceeded, 0),
		c.retentionSetting("RETENTION_DECLINED", "how long declined rows are kept (-1: for ever); 0: as --retention",
			&c.RetentionDeclined, 0),
		c.retentionSetting("RETENTION_FAILED", "how long failed rows are kept (-1: for ever); 0: as --retention",
			&c.RetentionFailed, 0),
		{
			name:  "RETENTION_INTERVAL",
			usage: "how often the fleet runs retention (one worker at a time)",
			value: newDuration(&c.RetentionInterval, 10*time.Minute),
			rules: []rule{{fn: positive(&c.RetentionInterval)}},
		},
		{
			name:  "RETENTION_BATCH",
			usage: "rows deleted per retention statement",
			value: newInt(&c.RetentionBatch, 1000),
			rules: []rule{{fn: between(&c.RetentionBatch, 1, 100_000)}},
		},
		{
			name:  "RETENTION_PAUSE",
			usage: "pause between two retention batches",
			value: newDuration(&c.RetentionPause, 100*time.Millisecond),
			rules: []rule{{fn: between(&c.RetentionPause, 0, time.Minute)}},
		},
		{
			name:  "FAKE_LATENCY",
			usage: "fake gateway: delay per call",
			value: newDuration(&c.FakeLatency, 0),
			rules: []rule{{fn: atLeast(&c.FakeLatency, 0)}},
		},
		{
			name:  "FAKE_FAILURE_RATE",
			usage: "fake gateway: fraction of calls failing like a 5xx, 0 to 1",
			value: newFloat(&c.FakeFailureRate, 0),
			rules: []rule{{fn: between(&c.FakeFailureRate, 0, 1)}},
		},
		{
			name:  "FAKE_DECLINE_RATE",
			usage: "fake gateway: fraction of calls declined, 0 to 1",
			value: newFloat(&c.FakeDeclineRate, 0),
			rules: []rule{{fn: between(&c.FakeDeclineRate, 0, 1)}},
		},
		{
			name:  "BATCH_SIZE",
			usage: "largest number of claims or records per database round trip",
			value: newInt(&c.BatchSize, 128),
			rules: []rule{{fn: between(&c.BatchSize, 1, 1024)}},
		},
		{
			name:  "BATCH_WAIT",
			usage: "the least time a database round trip in flight holds back a batch of its kind that is not full (at least 4× the average round trip, too)",
			value: newDuration(&c.BatchWait, 500*time.Microsecond),
			rules: []rule{{fn: between(&c.BatchWait, 0, 50*time.Millisecond)}},
		},
		{
			name:  "MIGRATE",
			usage: "apply pending database migrations at start",
			value: newBool(&c.Migrate, false),
		},
		{
			name:  "PPROF",
			usage: "also serve Go's /debug/pprof profiles on the HTTP address (never expose it publicly)",
			value: newBool(&c.Pprof, false),
		},
		{
			name:  "GATEWAY_BUDGET",
			usage: "fleet-wide gateway calls per second, shared by the workers through NATS KV; 0 = no fleet budget",
			value: newFloat(&c.GatewayBudget, 0),
			rules: []rule{{fn: atLeast(&c.GatewayBudget, 0)}},
		},
		{
			name:  "GATEWAY_CONCURRENCY",
			usage: "payments in flight per worker for the gateway (the adaptive limit's ceiling); 0 = PAYSTREAM_CONCURRENCY alone bounds them",
			value: newInt(&c.GatewayConcurrency, 0),
			rules: []rule{{fn: between(&c.GatewayConcurrency, 0, 4096)}},
		},
		{
			name:  "GATEWAY_CONCURRENCY_MODE",
			usage: "fixed: the gateway concurrency as set; aimd: adaptive between 1 and it (or PAYSTREAM_CONCURRENCY when 0)",
			value: newString(&c.GatewayConcurrencyMode, "fixed"),
			rules: []rule{{fn: oneOf(&c.GatewayConcurrencyMode, "fixed", "aimd")}},
		},
		{
			name:  "FLEET_BREAKER",
			usage: "share breaker votes through NATS KV: the gateway is down for the fleet when a majority of workers say so, and one worker probes",
			value: newBool(&c.FleetBreaker, true),
		},
		{
			name:  "FLEET_INTERVAL",
			usage: "how often a worker refreshes its budget share and breaker vote; a dead worker's share is free after three",
			value: newDuration(&c.FleetInterval, time.Second),
			rules: []rule{{fn: between(&c.FleetInterval, 50*time.Millisecond, time.Minute)}},
		},
		{
			name:  "GATEWAYS",
			usage: "several gateways instead of PAYSTREAM_GATEWAY_URL: name=url[;weight=N][;budget=R][;merchants=m1|m2][;currencies=EUR|GBP], comma-separated (docs/contract.md §5)",
			value: newString(&c.Gateways, ""),
			rules: []rule{{deps: []string{"GATEWAY_BUDGET"}, fn: func() error {
				if c.Gateways == "" {
					return nil
				}
				if c.GatewayName != "" {
					return fmt.Errorf("names the gateways: unset %s", ref("GATEWAY_NAME"))
				}
				_, err := ParseGateways(c.Gateways, c.GatewayBudget)
				return err
			}}},
		},
		{
			name:  "RISK_CHECKS",
			usage: "base URLs of replicas of a risk service asked, all at once, before each charge (first answer wins; deny records the payment failed risk_denied); empty = no risk check",
			value: newList(&c.RiskChecks, nil),
			rules: []rule{{fn: func() error { return checkRiskURLs(c.RiskChecks) }}},
		},
		{
			name:  "RISK_TIMEOUT",
			usage: "how long the risk check before a charge may take; with no answer by then the delivery is retried",
			value: newDuration(&c.RiskTimeout, time.Second),
			rules: []rule{
				{fn: between(&c.RiskTimeout, 10*time.Millisecond, 10*time.Second)},
				{deps: []string{"LEASE"}, fn: func() error {
					if c.RiskTimeout >= c.Lease/3 {
						return fmt.Errorf("must be less than a third of %s, got %v with a lease of %v", ref("LEASE"), c.RiskTimeout, c.Lease)
					}
					return nil
				}},
			},
		},
		{
			name:  "FAIR_LOOKAHEAD",
			usage: "messages fetched beyond the free slots and handed to slots fairly by merchant; 0 = pull only into free slots",
			value: newInt(&c.FairLookahead, 32),
			rules: []rule{{fn: between(&c.FairLookahead, 0, 4096)}},
		},
	}
}

// retentionSetting is a retention period: a duration, -1 (KeepForever)
// keeping rows for ever, or, when def is 0, 0 meaning "as RETENTION". A
// period is at least 48h, longer than STREAM_MAX_AGE (a redelivery must
// find its row) and at least REPLAY_HORIZON (so must a replay).
func (c *Config) retentionSetting(name, usage string, p *time.Duration, def time.Duration) setting {
	return setting{
		name:  name,
		usage: usage,
		value: newRetention(p, def),
		rules: []rule{
			{fn: func() error {
				if *p < 0 && *p != KeepForever {
					return fmt.Errorf("must be a duration or -1 (for ever), got %v", *p)
				}
				if *p == 0 && def != 0 {
					return fmt.Errorf("must be a duration or -1 (for ever), got 0")
				}
				if *p > 0 && *p < minRetention {
					return fmt.Errorf("must be at least %v, got %v", minRetention, *p)
				}
				return nil
			}},
			{deps: []string{"STREAM_MAX_AGE"}, fn: func() error {
				if *p > 0 && *p <= c.StreamMaxAge {
					return fmt.Errorf("must be longer than %s, got %v with a max age of %v",
						ref("STREAM_MAX_AGE"), *p, c.StreamMaxAge)
				}
				return nil
			}},
			{deps: []string{"REPLAY_HORIZON"}, fn: func() error {
				if *p > 0 && *p < c.ReplayHorizon {
					return fmt.Errorf("must be at least %s, got %v with a horizon of %v",
						ref("REPLAY_HORIZON"), *p, c.ReplayHorizon)
				}
				return nil
			}},
		},
	}
}

func between[T cmp.Ordered](p *T, lo, hi T) func() error {
	return func() error {
		if *p < lo || *p > hi {
			return fmt.Errorf("must be between %v and %v, got %v", lo, hi, *p)
		}
		return nil
	}
}

func atLeast[T cmp.Ordered](p *T, lo T) func() error {
	return func() error {
		if *p < lo {
			return fmt.Errorf("must be at least %v, got %v", lo, *p)
		}
		return nil
	}
}

func positive[T cmp.Ordered](p *T) func() error {
	return func() error {
		var zero T
		if *p <= zero {
			return fmt.Errorf("must be greater than 0, got %v", *p)
		}
		return nil
	}
}

func oneOf(p *string, allowed ...string) func() error {
	return func() error {
		for _, a := range allowed {
			if *p == a {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, ", "), *p)
	}
}

// text accepts free text of at most maxNameLen bytes without control
// characters (it ends up in Postgres text columns, which refuse NUL, and in
// logs).
func text(p *string) func() error {
	return func() error {
		if len(*p) > maxNameLen {
			return fmt.Errorf("must be at most %d bytes, got %d", maxNameLen, len(*p))
		}
		if strings.ContainsFunc(*p, unicode.IsControl) {
			return errors.New("must not contain control characters")
		}
		return nil
	}
}

// differs refuses *p when it equals the value of setting other at q.
func differs(p *string, other string, q *string) func() error {
	return func() error {
		if *p == *q {
			return fmt.Errorf("must differ from %s, both are %q", ref(other), *p)
		}
		return nil
	}
}

// jetStreamName checks a stream or consumer name as nats-server does: not
// empty, and no whitespace, '.', '*', '>', path separators or control
// characters.
func jetStreamName(p *string) func() error {
	return func() error {
		switch {
		case *p == "":
			return errors.New("must not be empty")
		case len(*p) > maxJetStreamName:
			return fmt.Errorf("must be at most %d bytes, got %d", maxJetStreamName, len(*p))
		case strings.ContainsFunc(*p, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(".*>/\\", r)
		}):
			return fmt.Errorf("must not contain whitespace, '.', '*', '>', '/' or '\\', got %q", *p)
		}
		return nil
	}
}

// readableFile accepts an empty path or the path of a regular file that can
// be opened for reading. The file's contents are never read into messages.
func readableFile(p *string) func() error {
	return func() error {
		if *p == "" {
			return nil
		}
		f, err := os.Open(*p)
		if err != nil {
			return fmt.Errorf("cannot read file: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("cannot read file: %w", err)
		}
		if st.IsDir() {
			return fmt.Errorf("%s is a directory, not a file", *p)
		}
		return nil
	}
}

// holdsText accepts an empty path or a file holding something besides
// whitespace. The contents never enter a message.
func holdsText(p *string) func() error {
	return func() error {
		if *p == "" {
			return nil
		}
		b, err := os.ReadFile(*p)
		if err != nil {
			return fmt.Errorf("cannot read file: %w", err)
		}
		if strings.TrimSpace(string(b)) == "" {
			return fmt.Errorf("%s is empty", *p)
		}
		return nil
	}
}

// needsHTTPS refuses a TLS file *p where no gateway would use it: for an
// http:// PAYSTREAM_GATEWAY_URL, or, when PAYSTREAM_GATEWAYS names the
// gateways, when none of them has an https:// URL (the TLS settings apply
// to every https one). The fake gateway ignores it.
func needsHTTPS(p *string, c *Config) func() error {
	return func() error {
		if *p == "" {
			return nil
		}
		if c.Gateways != "" {
			specs, err := ParseGateways(c.Gateways, c.GatewayBudget)
			if err != nil {
				return nil // PAYSTREAM_GATEWAYS reports it
			}
			for _, s := range specs {
				if strings.HasPrefix(s.URL, "https://") {
					return nil
				}
			}
			return fmt.Errorf("needs an https:// gateway in %s, none has one", ref("GATEWAYS"))
		}
		if c.GatewayURL == FakeGateway {
			return nil
		}
		if u, err := url.Parse(c.GatewayURL); err == nil && u.Scheme != "https" {
			return fmt.Errorf("needs an https:// %s, got scheme %q", ref("GATEWAY_URL"), u.Scheme)
		}
		return nil
	}
}

// checkNATSURLs accepts one or more URLs with scheme nats, tls, ws or wss and
// a host. Messages show a URL only redacted.
// maxRiskChecks bounds PAYSTREAM_RISK_CHECKS.
const maxRiskChecks = 8

// checkRiskURLs checks PAYSTREAM_RISK_CHECKS: at most maxRiskChecks
// distinct http(s) base URLs.
func checkRiskURLs(urls []string) error {
	if len(urls) > maxRiskChecks {
		return fmt.Errorf("at most %d risk services, got %d", maxRiskChecks, len(urls))
	}
	seen := map[string]bool{}
	var errs []error
	for i, u := range urls {
		if err := riskhttp.CheckURL(u); err != nil {
			errs = append(errs, fmt.Errorf("URL %d of %d: %w", i+1, len(urls), err))
		} else if seen[u] {
			errs = append(errs, fmt.Errorf("URL %d of %d is listed twice", i+1, len(urls)))
		}
		seen[u] = true
	}
	return errors.Join(errs...)
}

func checkNATSURLs(urls []string) error {
	if len(urls) == 0 {
		return errors.New("must not be empty")
	}
	var errs []string
	for i, raw := range urls {
		if raw == "" {
			errs = append(errs, fmt.Sprintf("URL %d of %d is empty", i+1, len(urls)))
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			// url.Error quotes the input, which may hold a password.
			errs = append(errs, fmt.Sprintf("URL %d of %d cannot be parsed as a URL", i+1, len(urls)))
			continue
		}
		switch {
		case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
			errs = append(errs, fmt.Sprintf("URL %d of %d (%s) must have scheme nats, tls, ws or wss", i+1, len(urls), redactNATSURL(raw)))
		case u.Host == "":
			errs = append(errs, fmt.Sprintf("URL %d of %d (%s) has no host", i+1, len(urls), redactNATSURL(raw)))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// checkDatabaseURL parses s with pgxpool.ParseConfig. pgx masks passwords in
// its errors only on a best-effort basis (it shows "ret" of the password
// "sec@ret" in postgres://u:sec@ret@h:x/db), so the message quotes s through
// redactDatabaseURL instead, and keeps only pgx's reason, scrubbed again.
func checkDatabaseURL(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	_, err := pgxpool.ParseConfig(s)
	if err == nil {
		return nil
	}
	reason := err.Error()
	// pgconn.ParseConfigError reads "cannot parse `<conn string>`: <reason>".
	if strings.HasPrefix(reason, "cannot parse `") {
		if i := strings.LastIndex(reason, "`: "); i >= 0 {
			reason = reason[i+len("`: "):]
		}
	}
	return fmt.Errorf("cannot parse `%s` as a Postgres connection string: %s",
		redactDatabaseURL(s), scrubDatabasePasswords(s, reason))
}

// checkGatewayURL accepts "fake" or an absolute http or https URL with a
// host.
func checkGatewayURL(s string) error {
	const want = `must be "fake" or an absolute http:// or https:// URL`
	if s == "" {
		return errors.New("required: " + want[len("must be "):])
	}
	if s == FakeGateway {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New(want)
	}
	return nil
}

// checkHostPort accepts "" or host:port with a numeric port.
func checkHostPort(s string) error {
	if s == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port such as :8080, got %q", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port must be a number from 0 to 65535, got %q", port)
	}
	return nil
}

// checkSubjectPrefix accepts one or more dot-separated NATS subject tokens
// without wildcards, whitespace or control characters.
func checkSubjectPrefix(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return fmt.Errorf("must be dot-separated non-empty subject tokens, got %q", s)
		}
		if strings.ContainsFunc(tok, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r) || r == '*' || r == '>'
		}) {
			return fmt.Errorf("must not contain wildcards, whitespace or control characters, got %q", s)
		}
	}
	return nil
}
