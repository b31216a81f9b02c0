package config_test

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/config"
)

// lookup turns a map into a lookupEnv function.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// parse runs config.Parse on a fresh FlagSet.
func parse(args []string, env map[string]string) (config.Config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return config.Parse(fs, args, lookup(env))
}

// problems returns the *config.SettingError values joined in err.
func problems(t *testing.T, err error) []*config.SettingError {
	t.Helper()
	require.Error(t, err)
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*config.SettingError, 0, len(errs))
	for _, e := range errs {
		var se *config.SettingError
		require.ErrorAs(t, e, &se, "every problem is a *SettingError: %v", e)
		out = append(out, se)
	}
	return out
}

func varsOf(errs []*config.SettingError) []string {
	vars := make([]string, len(errs))
	for i, e := range errs {
		vars[i] = e.Var
	}
	return vars
}

func flagOf(envVar string) string {
	return "--" + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(envVar, "PAYSTREAM_"), "_", "-"))
}

// tempFile creates a readable file and returns its path.
func tempFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte("-----BEGIN SOMETHING-----\n"), 0o600))
	return p
}

// valid returns the defaults with the one required setting filled in.
func valid() config.Config {
	c := config.Default()
	c.GatewayURL = "fake"
	return c
}

func TestDefault(t *testing.T) {
	t.Parallel()

	want := config.Config{
		NATSURLs:               []string{"nats://127.0.0.1:4222"},
		DatabaseURL:            "postgres://postgres@127.0.0.1:5432/paystream?sslmode=disable",
		GatewayTimeout:         10 * time.Second,
		Concurrency:            64,
		MaxDeliver:             10,
		AckWait:                30 * time.Second,
		RetryBackoff:           500 * time.Millisecond,
		RetryBackoffMax:        30 * time.Second,
		Lease:                  30 * time.Second,
		RateLimit:              0,
		RateBurst:              1,
		BreakerFailures:        5,
		BreakerOpenTimeout:     30 * time.Second,
		MaxAmountMinor:         100_000_000,
		HTTPAddr:               ":8080",
		ShutdownTimeout:        30 * time.Second,
		LogLevel:               "info",
		LogFormat:              "json",
		Stream:                 "PAYMENTS",
		ResultsStream:          "PAYMENT_RESULTS",
		DLQStream:              "PAYMENTS_DLQ",
		Consumer:               "payment-workers",
		SubjectPrefix:          "payments",
		Provision:              true,
		StreamReplicas:         1,
		StreamMaxAge:           168 * time.Hour,
		DuplicateWindow:        2 * time.Minute,
		SweepInterval:          30 * time.Second,
		SweepGrace:             5 * time.Minute,
		ReplayHorizon:          168 * time.Hour,
		Retention:              2160 * time.Hour,
		RetentionInterval:      10 * time.Minute,
		RetentionBatch:         1000,
		RetentionPause:         100 * time.Millisecond,
		BatchSize:              128,
		BatchWait:              500 * time.Microsecond,
		GatewayConcurrencyMode: "fixed",
		FleetBreaker:           true,
		FleetInterval:          time.Second,
		FairLookahead:          32,
		RiskTimeout:            time.Second,
	}
	require.Equal(t, want, config.Default())

	t.Run("DefaultsMissOnlyTheGatewayURL", func(t *testing.T) {
		t.Parallel()
		errs := problems(t, config.Default().Validate())
		require.Equal(t, []string{"PAYSTREAM_GATEWAY_URL"}, varsOf(errs))
		require.Contains(t, errs[0].Error(), "PAYSTREAM_GATEWAY_URL (--gateway-url): required")

		_, err := parse(nil, nil)
		require.Equal(t, []string{"PAYSTREAM_GATEWAY_URL"}, varsOf(problems(t, err)))
	})

	t.Run("DefaultsPlusGatewayAreValid", func(t *testing.T) {
		t.Parallel()
		require.NoError(t, valid().Validate())
	})

	t.Run("DefaultDoesNotShareSlices", func(t *testing.T) {
		t.Parallel()
		a := config.Default()
		a.NATSURLs[0] = "nats://changed:4222"
		require.Equal(t, "nats://127.0.0.1:4222", config.Default().NATSURLs[0])
	})
}

// TestParseEachSetting sets each setting alone, once from the environment
// and once from its flag, and checks the one field that changes.
func TestParseEachSetting(t *testing.T) {
	t.Parallel()

	creds := tempFile(t, "user.creds")
	ca := tempFile(t, "ca.pem")
	cert := tempFile(t, "cert.pem")
	key := tempFile(t, "key.pem")

	tests := []struct {
		envVar string
		value  string
		extra  map[string]string // other settings the value needs
		want   func(*config.Config)
	}{
		{"PAYSTREAM_NATS_URL", "nats://a:4222, tls://b:4443", nil, func(c *config.Config) {
			c.NATSURLs = []string{"nats://a:4222", "tls://b:4443"}
		}},
		{"PAYSTREAM_NATS_CREDS", creds, nil, func(c *config.Config) { c.NATSCreds = creds }},
		{"PAYSTREAM_NATS_USER", "alice", nil, func(c *config.Config) { c.NATSUser = "alice" }},
		{"PAYSTREAM_NATS_PASSWORD", "pw", map[string]string{"PAYSTREAM_NATS_USER": "alice"}, func(c *config.Config) {
			c.NATSUser, c.NATSPassword = "alice", "pw"
		}},
		{"PAYSTREAM_NATS_TOKEN", "tok", nil, func(c *config.Config) { c.NATSToken = "tok" }},
		{"PAYSTREAM_NATS_TLS_CA", ca, nil, func(c *config.Config) { c.NATSTLSCA = ca }},
		{"PAYSTREAM_NATS_TLS_CERT", cert, map[string]string{"PAYSTREAM_NATS_TLS_KEY": key}, func(c *config.Config) {
			c.NATSTLSCert, c.NATSTLSKey = cert, key
		}},
		{"PAYSTREAM_NATS_TLS_KEY", key, map[string]string{"PAYSTREAM_NATS_TLS_CERT": cert}, func(c *config.Config) {
			c.NATSTLSCert, c.NATSTLSKey = cert, key
		}},
		{"PAYSTREAM_DATABASE_URL", "postgres://u@db:5433/x", nil, func(c *config.Config) { c.DatabaseURL = "postgres://u@db:5433/x" }},
		{"PAYSTREAM_MIGRATE_DATABASE_URL", "postgres://owner@db:5433/x", nil, func(c *config.Config) { c.MigrateDatabaseURL = "postgres://owner@db:5433/x" }},
		{"PAYSTREAM_DB_MAX_CONNS", "20", nil, func(c *config.Config) { c.DBMaxConns = 20 }},
		{"PAYSTREAM_GATEWAY_URL", "http://gw:8090", nil, func(c *config.Config) {
			c.GatewayURL, c.GatewayName = "http://gw:8090", "gw:8090"
		}},
		{"PAYSTREAM_GATEWAY_NAME", "acme", nil, func(c *config.Config) { c.GatewayName = "acme" }},
		{"PAYSTREAM_GATEWAY_TIMEOUT", "5s", nil, func(c *config.Config) { c.GatewayTimeout = 5 * time.Second }},
		{"PAYSTREAM_GATEWAY_API_KEY_FILE", key, nil, func(c *config.Config) { c.GatewayAPIKeyFile = key }},
		{"PAYSTREAM_GATEWAY_CA_FILE", ca, map[string]string{"PAYSTREAM_GATEWAY_URL": "https://gw:8443"}, func(c *config.Config) {
			c.GatewayURL, c.GatewayName, c.GatewayCAFile = "https://gw:8443", "gw:8443", ca
		}},
		{"PAYSTREAM_GATEWAY_TLS_CERT", cert, map[string]string{"PAYSTREAM_GATEWAY_TLS_KEY": key, "PAYSTREAM_GATEWAY_URL": "https://gw:8443"},
			func(c *config.Config) {
				c.GatewayURL, c.GatewayName, c.GatewayTLSCert, c.GatewayTLSKey = "https://gw:8443", "gw:8443", cert, key
			}},
		{"PAYSTREAM_GATEWAY_TLS_KEY", key, map[string]string{"PAYSTREAM_GATEWAY_TLS_CERT": cert, "PAYSTREAM_GATEWAY_URL": "https://gw:8443"},
			func(c *config.Config) {
				c.GatewayURL, c.GatewayName, c.GatewayTLSCert, c.GatewayTLSKey = "https://gw:8443", "gw:8443", cert, key
			}},
		{"PAYSTREAM_CONCURRENCY", "8", nil, func(c *config.Config) { c.Concurrency = 8 }},
		{"PAYSTREAM_MAX_DELIVER", "3", nil, func(c *config.Config) { c.MaxDeliver = 3 }},
		{"PAYSTREAM_ACK_WAIT", "45s", nil, func(c *config.Config) { c.AckWait = 45 * time.Second }},
		{"PAYSTREAM_RETRY_BACKOFF", "1s", nil, func(c *config.Config) { c.RetryBackoff = time.Second }},
		{"PAYSTREAM_RETRY_BACKOFF_MAX", "1m", nil, func(c *config.Config) { c.RetryBackoffMax = time.Minute }},
		{"PAYSTREAM_LEASE", "40s", nil, func(c *config.Config) { c.Lease = 40 * time.Second }},
		{"PAYSTREAM_RATE_LIMIT", "12.5", nil, func(c *config.Config) { c.RateLimit = 12.5 }},
		{"PAYSTREAM_RATE_BURST", "4", nil, func(c *config.Config) { c.RateBurst = 4 }},
		{"PAYSTREAM_BREAKER_FAILURES", "7", nil, func(c *config.Config) { c.BreakerFailures = 7 }},
		{"PAYSTREAM_BREAKER_OPEN_TIMEOUT", "1m", nil, func(c *config.Config) { c.BreakerOpenTimeout = time.Minute }},
		{"PAYSTREAM_MAX_AMOUNT_MINOR", "5000000000", nil, func(c *config.Config) { c.MaxAmountMinor = 5_000_000_000 }},
		{"PAYSTREAM_HTTP_ADDR", "127.0.0.1:9090", nil, func(c *config.Config) { c.HTTPAddr = "127.0.0.1:9090" }},
		{"PAYSTREAM_SHUTDOWN_TIMEOUT", "45s", nil, func(c *config.Config) { c.ShutdownTimeout = 45 * time.Second }},
		{"PAYSTREAM_LOG_LEVEL", "debug", nil, func(c *config.Config) { c.LogLevel = "debug" }},
		{"PAYSTREAM_LOG_FORMAT", "console", nil, func(c *config.Config) { c.LogFormat = "console" }},
		{"PAYSTREAM_WORKER_ID", "w-1", nil, func(c *config.Config) { c.WorkerID = "w-1" }},
		{"PAYSTREAM_STREAM", "P2", nil, func(c *config.Config) { c.Stream = "P2" }},
		{"PAYSTREAM_RESULTS_STREAM", "R2", nil, func(c *config.Config) { c.ResultsStream = "R2" }},
		{"PAYSTREAM_DLQ_STREAM", "D2", nil, func(c *config.Config) { c.DLQStream = "D2" }},
		{"PAYSTREAM_CONSUMER", "c2", nil, func(c *config.Config) { c.Consumer = "c2" }},
		{"PAYSTREAM_SUBJECT_PREFIX", "acme.pay", nil, func(c *config.Config) { c.SubjectPrefix = "acme.pay" }},
		{"PAYSTREAM_PROVISION", "false", nil, func(c *config.Config) { c.Provision = false }},
		{"PAYSTREAM_MAX_ACK_PENDING", "256", nil, func(c *config.Config) { c.MaxAckPending = 256 }},
		{"PAYSTREAM_STREAM_REPLICAS", "3", nil, func(c *config.Config) { c.StreamReplicas = 3 }},
		{"PAYSTREAM_STREAM_MAX_AGE", "24h", nil, func(c *config.Config) { c.StreamMaxAge = 24 * time.Hour }},
		{"PAYSTREAM_DUPLICATE_WINDOW", "5m", nil, func(c *config.Config) { c.DuplicateWindow = 5 * time.Minute }},
		{"PAYSTREAM_SWEEP_INTERVAL", "10s", nil, func(c *config.Config) { c.SweepInterval = 10 * time.Second }},
		{"PAYSTREAM_SWEEP_GRACE", "0s", nil, func(c *config.Config) { c.SweepGrace = 0 }},
		{"PAYSTREAM_REPLAY_HORIZON", "72h", nil, func(c *config.Config) { c.ReplayHorizon = 72 * time.Hour }},
		{"PAYSTREAM_RETENTION", "720h", nil, func(c *config.Config) { c.Retention = 720 * time.Hour }},
		{"PAYSTREAM_RETENTION_SUCCEEDED", "-1", nil, func(c *config.Config) { c.RetentionSucceeded = config.KeepForever }},
		{"PAYSTREAM_RETENTION_DECLINED", "240h", nil, func(c *config.Config) { c.RetentionDeclined = 240 * time.Hour }},
		{"PAYSTREAM_RETENTION_FAILED", "4320h", nil, func(c *config.Config) { c.RetentionFailed = 4320 * time.Hour }},
		{"PAYSTREAM_RETENTION_INTERVAL", "1h", nil, func(c *config.Config) { c.RetentionInterval = time.Hour }},
		{"PAYSTREAM_RETENTION_BATCH", "50", nil, func(c *config.Config) { c.RetentionBatch = 50 }},
		{"PAYSTREAM_RETENTION_PAUSE", "1s", nil, func(c *config.Config) { c.RetentionPause = time.Second }},
		{"PAYSTREAM_FAKE_LATENCY", "25ms", nil, func(c *config.Config) { c.FakeLatency = 25 * time.Millisecond }},
		{"PAYSTREAM_FAKE_FAILURE_RATE", "0.1", nil, func(c *config.Config) { c.FakeFailureRate = 0.1 }},
		{"PAYSTREAM_FAKE_DECLINE_RATE", "0.2", nil, func(c *config.Config) { c.FakeDeclineRate = 0.2 }},
		{"PAYSTREAM_BATCH_SIZE", "16", nil, func(c *config.Config) { c.BatchSize = 16 }},
		{"PAYSTREAM_BATCH_WAIT", "2ms", nil, func(c *config.Config) { c.BatchWait = 2 * time.Millisecond }},
		{"PAYSTREAM_MIGRATE", "true", nil, func(c *config.Config) { c.Migrate = true }},
		{"PAYSTREAM_PPROF", "true", nil, func(c *config.Config) { c.Pprof = true }},
		{"PAYSTREAM_GATEWAY_BUDGET", "120", nil, func(c *config.Config) { c.GatewayBudget = 120 }},
		{"PAYSTREAM_GATEWAY_CONCURRENCY", "16", nil, func(c *config.Config) { c.GatewayConcurrency = 16 }},
		{"PAYSTREAM_GATEWAY_CONCURRENCY_MODE", "aimd", nil, func(c *config.Config) { c.GatewayConcurrencyMode = "aimd" }},
		{"PAYSTREAM_FLEET_BREAKER", "false", nil, func(c *config.Config) { c.FleetBreaker = false }},
		{"PAYSTREAM_FLEET_INTERVAL", "250ms", nil, func(c *config.Config) { c.FleetInterval = 250 * time.Millisecond }},
		{"PAYSTREAM_FAIR_LOOKAHEAD", "0", nil, func(c *config.Config) { c.FairLookahead = 0 }},
		{"PAYSTREAM_RISK_CHECKS", "http://risk-a:8099, https://risk-b", nil, func(c *config.Config) {
			c.RiskChecks = []string{"http://risk-a:8099", "https://risk-b"}
		}},
		{"PAYSTREAM_RISK_TIMEOUT", "250ms", nil, func(c *config.Config) { c.RiskTimeout = 250 * time.Millisecond }},
		{"PAYSTREAM_GATEWAYS", "a=http://a:8090;weight=3;currencies=EUR,b=fake;weight=0", map[string]string{"PAYSTREAM_GATEWAY_URL": ""},
			func(c *config.Config) {
				c.Gateways, c.GatewayURL, c.GatewayName = "a=http://a:8090;weight=3;currencies=EUR,b=fake;weight=0", "", ""
			}},
	}

	t.Run("CoversEverySetting", func(t *testing.T) {
		t.Parallel()
		var covered []string
		for _, tt := range tests {
			covered = append(covered, tt.envVar)
		}
		require.ElementsMatch(t, config.Vars(), covered)
	})

	for _, tt := range tests {
		want := valid()
		want.GatewayName = "fake"
		tt.want(&want)

		t.Run("Env/"+tt.envVar, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"PAYSTREAM_GATEWAY_URL": "fake", tt.envVar: tt.value}
			for k, v := range tt.extra {
				env[k] = v
			}
			got, err := parse(nil, env)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})

		t.Run("Flag/"+tt.envVar, func(t *testing.T) {
			t.Parallel()
			args := []string{"--gateway-url=fake", flagOf(tt.envVar) + "=" + tt.value}
			for k, v := range tt.extra {
				args = append(args, flagOf(k)+"="+v)
			}
			if tt.envVar == "PAYSTREAM_GATEWAY_URL" {
				args = args[1:]
			}
			got, err := parse(args, nil)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
}

func TestParseLayering(t *testing.T) {
	t.Parallel()

	t.Run("FlagsWinOverEnv", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{
			"PAYSTREAM_GATEWAY_URL": "fake",
			"PAYSTREAM_CONCURRENCY": "8",
			"PAYSTREAM_MAX_DELIVER": "4",
			"PAYSTREAM_ACK_WAIT":    "45s",
			"PAYSTREAM_NATS_URL":    "nats://env:4222",
			"PAYSTREAM_MIGRATE":     "false",
		}
		got, err := parse([]string{
			"--concurrency", "16",
			"--max-deliver=10", // the default value, still chosen over the environment
			"--nats-url=nats://flag1:4222,nats://flag2:4222",
			"--migrate",
		}, env)
		require.NoError(t, err)
		require.Equal(t, 16, got.Concurrency)
		require.Equal(t, 10, got.MaxDeliver)
		require.Equal(t, []string{"nats://flag1:4222", "nats://flag2:4222"}, got.NATSURLs)
		require.True(t, got.Migrate)
		require.Equal(t, 45*time.Second, got.AckWait, "the environment still sets what no flag set")
	})

	t.Run("BadEnvIgnoredWhenFlagSet", func(t *testing.T) {
		t.Parallel()
		got, err := parse([]string{"--ack-wait=40s"}, map[string]string{
			"PAYSTREAM_GATEWAY_URL": "fake",
			"PAYSTREAM_ACK_WAIT":    "abc",
		})
		require.NoError(t, err)
		require.Equal(t, 40*time.Second, got.AckWait)
	})

	t.Run("EmptyEnvIsUnset", func(t *testing.T) {
		t.Parallel()
		got, err := parse(nil, map[string]string{
			"PAYSTREAM_GATEWAY_URL": "fake",
			"PAYSTREAM_CONCURRENCY": "",
			"PAYSTREAM_HTTP_ADDR":   "",
		})
		require.NoError(t, err)
		require.Equal(t, 64, got.Concurrency)
		require.Equal(t, ":8080", got.HTTPAddr)
	})

	t.Run("EmptyFlagDisablesHTTP", func(t *testing.T) {
		t.Parallel()
		got, err := parse([]string{"--gateway-url=fake", "--http-addr="}, nil)
		require.NoError(t, err)
		require.Empty(t, got.HTTPAddr)
	})

	t.Run("UnknownEnvIgnored", func(t *testing.T) {
		t.Parallel()
		_, err := parse(nil, map[string]string{
			"PAYSTREAM_GATEWAY_URL":            "fake",
			config.EnvPrefix + "_NO_SUCH_NAME": "1",
		})
		require.NoError(t, err)
	})

	t.Run("UnknownFlagIsAnError", func(t *testing.T) {
		t.Parallel()
		_, err := parse([]string{"--gateway-url=fake", "--no-such-flag=1"}, nil)
		require.ErrorContains(t, err, "no-such-flag")
	})

	t.Run("Help", func(t *testing.T) {
		t.Parallel()
		_, err := parse([]string{"-h"}, nil)
		require.ErrorIs(t, err, flag.ErrHelp)
	})

	t.Run("NilLookupEnv", func(t *testing.T) {
		t.Parallel()
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		got, err := config.Parse(fs, []string{"--gateway-url=fake"}, nil)
		require.NoError(t, err)
		require.Equal(t, 64, got.Concurrency)
	})

	t.Run("CallerFlagsAndPositionalArgs", func(t *testing.T) {
		t.Parallel()
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		own := fs.String("own", "", "a flag of the caller")
		got, err := config.Parse(fs, []string{"--own=x", "--concurrency=2", "migrate", "extra"},
			lookup(map[string]string{"PAYSTREAM_GATEWAY_URL": "fake"}))
		require.NoError(t, err)
		require.Equal(t, 2, got.Concurrency)
		require.Equal(t, "x", *own)
		require.Equal(t, []string{"migrate", "extra"}, fs.Args())
	})

	t.Run("UsageNamesTheEnvVar", func(t *testing.T) {
		t.Parallel()
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		_, _ = config.Parse(fs, nil, nil)
		f := fs.Lookup("ack-wait")
		require.NotNil(t, f)
		require.Contains(t, f.Usage, "PAYSTREAM_ACK_WAIT")
		require.Equal(t, "30s", f.DefValue)
		require.Equal(t, "true", fs.Lookup("provision").DefValue)
	})
}

func TestParseReportsEveryProblem(t *testing.T) {
	t.Parallel()

	env := map[string]string{
		// PAYSTREAM_GATEWAY_URL missing
		"PAYSTREAM_CONCURRENCY":    "0",
		"PAYSTREAM_MAX_DELIVER":    "1",
		"PAYSTREAM_ACK_WAIT":       "abc",
		"PAYSTREAM_RATE_LIMIT":     "-1",
		"PAYSTREAM_HTTP_ADDR":      "nope",
		"PAYSTREAM_LOG_LEVEL":      "verbose",
		"PAYSTREAM_SUBJECT_PREFIX": "payments.>",
		"PAYSTREAM_BATCH_WAIT":     "1s",
	}
	_, err := parse([]string{"--batch-size=0"}, env)
	errs := problems(t, err)

	// Declaration order, one problem per setting.
	require.Equal(t, []string{
		"PAYSTREAM_GATEWAY_URL",
		"PAYSTREAM_CONCURRENCY",
		"PAYSTREAM_MAX_DELIVER",
		"PAYSTREAM_ACK_WAIT",
		"PAYSTREAM_RATE_LIMIT",
		"PAYSTREAM_HTTP_ADDR",
		"PAYSTREAM_LOG_LEVEL",
		"PAYSTREAM_SUBJECT_PREFIX",
		"PAYSTREAM_BATCH_SIZE",
		"PAYSTREAM_BATCH_WAIT",
	}, varsOf(errs))

	msg := err.Error()
	for _, e := range errs {
		require.Equal(t, flagOf(e.Var), e.Flag)
		require.Contains(t, msg, e.Var+" ("+e.Flag+"): ")
	}
	require.Contains(t, msg, "PAYSTREAM_CONCURRENCY (--concurrency): must be between 1 and 4096, got 0")
	require.Contains(t, msg, `PAYSTREAM_ACK_WAIT (--ack-wait): cannot parse "abc" as a duration`)
	require.Contains(t, msg, "PAYSTREAM_BATCH_SIZE (--batch-size): must be between 1 and 1024, got 0")
	require.Len(t, strings.Split(msg, "\n"), len(errs), "one line per problem")
}

func TestParseUnparseable(t *testing.T) {
	t.Parallel()

	tests := []struct {
		envVar  string
		value   string
		wantMsg string
	}{
		{"PAYSTREAM_ACK_WAIT", "abc", `cannot parse "abc" as a duration`},
		{"PAYSTREAM_LEASE", "30", `cannot parse "30" as a duration`},
		{"PAYSTREAM_CONCURRENCY", "1.5", `cannot parse "1.5" as an integer`},
		{"PAYSTREAM_CONCURRENCY", "99999999999999999999", "value out of range"},
		{"PAYSTREAM_MAX_AMOUNT_MINOR", "1e9", `cannot parse "1e9" as an integer`},
		{"PAYSTREAM_RATE_LIMIT", "fast", `cannot parse "fast" as a number`},
		{"PAYSTREAM_RATE_LIMIT", "NaN", `cannot parse "NaN" as a finite number`},
		{"PAYSTREAM_FAKE_FAILURE_RATE", "+Inf", `cannot parse "+Inf" as a finite number`},
		{"PAYSTREAM_PROVISION", "maybe", `cannot parse "maybe" as a boolean`},
	}
	for _, tt := range tests {
		for _, viaFlag := range []bool{false, true} {
			name := "Env/" + tt.envVar + "=" + tt.value
			if viaFlag {
				name = "Flag/" + tt.envVar + "=" + tt.value
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				// Another problem after the bad value is still reported.
				env := map[string]string{"PAYSTREAM_GATEWAY_URL": "fake", "PAYSTREAM_BATCH_SIZE": "2000"}
				var args []string
				if viaFlag {
					args = []string{flagOf(tt.envVar) + "=" + tt.value}
				} else {
					env[tt.envVar] = tt.value
				}
				_, err := parse(args, env)
				errs := problems(t, err)
				require.Equal(t, []string{tt.envVar, "PAYSTREAM_BATCH_SIZE"}, varsOf(errs))
				require.Contains(t, errs[0].Error(), tt.envVar+" ("+flagOf(tt.envVar)+"): ")
				require.Contains(t, errs[0].Error(), tt.wantMsg)
			})
		}
	}

	t.Run("CrossRulesOnAnUnparseableSettingAreSkipped", func(t *testing.T) {
		t.Parallel()
		// LEASE=5s would fail against the default gateway timeout, but the
		// timeout the operator meant is unknown.
		_, err := parse(nil, map[string]string{
			"PAYSTREAM_GATEWAY_URL":     "fake",
			"PAYSTREAM_GATEWAY_TIMEOUT": "ten seconds",
			"PAYSTREAM_LEASE":           "5s",
			"PAYSTREAM_ACK_WAIT":        "500ms",
		})
		require.Equal(t, []string{"PAYSTREAM_GATEWAY_TIMEOUT", "PAYSTREAM_ACK_WAIT"}, varsOf(problems(t, err)))
		require.ErrorContains(t, err, "PAYSTREAM_ACK_WAIT (--ack-wait): must be at least 1s, got 500ms")
	})

	t.Run("LaterGoodFlagReplacesBadOne", func(t *testing.T) {
		t.Parallel()
		got, err := parse([]string{"--gateway-url=fake", "--concurrency=x", "--concurrency=3"}, nil)
		require.NoError(t, err)
		require.Equal(t, 3, got.Concurrency)
	})
}

func TestValidate(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	cert := tempFile(t, "cert.pem")
	key := tempFile(t, "key.pem")
	missing := filepath.Join(dir, "missing.creds")
	emptyFile := filepath.Join(dir, "empty.key")
	require.NoError(t, os.WriteFile(emptyFile, []byte(" \n"), 0o600))

	tests := []struct {
		name    string
		mutate  func(*config.Config)
		wantVar string   // comma-separated variables with a problem; "" means valid
		wantMsg []string // substrings of the error
	}{
		{"LeaseEqualToTimeoutPlusMargin", func(c *config.Config) { c.Lease = 12 * time.Second }, "PAYSTREAM_LEASE",
			[]string{"PAYSTREAM_GATEWAY_TIMEOUT (--gateway-timeout)", "2s margin", "got 12s", "gateway timeout of 10s"}},
		{"LeaseShorterThanTimeout", func(c *config.Config) { c.GatewayTimeout, c.Lease = 20*time.Second, 19*time.Second }, "PAYSTREAM_LEASE",
			[]string{"PAYSTREAM_GATEWAY_TIMEOUT (--gateway-timeout)"}},
		{"LeaseJustLongEnough", func(c *config.Config) { c.Lease = 12*time.Second + time.Millisecond }, "", nil},
		{"AckWaitEqualToTimeout", func(c *config.Config) { c.AckWait = 10 * time.Second }, "PAYSTREAM_ACK_WAIT",
			[]string{"must be longer than PAYSTREAM_GATEWAY_TIMEOUT (--gateway-timeout)", "got 10s"}},
		{"AckWaitJustLongEnough", func(c *config.Config) { c.AckWait = 11 * time.Second }, "", nil},
		{"AckWaitUnderOneSecond", func(c *config.Config) { c.GatewayTimeout, c.AckWait = 100*time.Millisecond, 999*time.Millisecond },
			"PAYSTREAM_ACK_WAIT", []string{"must be at least 1s, got 999ms"}},
		{"GatewayTimeoutZero", func(c *config.Config) { c.GatewayTimeout = 0 }, "PAYSTREAM_GATEWAY_TIMEOUT", []string{"must be greater than 0, got 0s"}},
		{"TLSCertWithoutKey", func(c *config.Config) { c.NATSTLSCert = cert }, "PAYSTREAM_NATS_TLS_KEY",
			[]string{"required when PAYSTREAM_NATS_TLS_CERT (--nats-tls-cert) is set"}},
		{"TLSKeyWithoutCert", func(c *config.Config) { c.NATSTLSKey = key }, "PAYSTREAM_NATS_TLS_CERT",
			[]string{"required when PAYSTREAM_NATS_TLS_KEY (--nats-tls-key) is set"}},
		{"TLSCertAndKey", func(c *config.Config) { c.NATSTLSCert, c.NATSTLSKey = cert, key }, "", nil},
		{"TLSCertMissingFile", func(c *config.Config) { c.NATSTLSCert, c.NATSTLSKey = missing, key }, "PAYSTREAM_NATS_TLS_CERT",
			[]string{"cannot read file", "no such file"}},
		{"TLSCAMissingFile", func(c *config.Config) { c.NATSTLSCA = missing }, "PAYSTREAM_NATS_TLS_CA", []string{"cannot read file"}},
		{"GatewayAPIKeyFileMissing", func(c *config.Config) { c.GatewayAPIKeyFile = missing }, "PAYSTREAM_GATEWAY_API_KEY_FILE",
			[]string{"cannot read file", "missing.creds"}},
		{"GatewayAPIKeyFileEmpty", func(c *config.Config) { c.GatewayAPIKeyFile = emptyFile }, "PAYSTREAM_GATEWAY_API_KEY_FILE",
			[]string{"is empty"}},
		{"GatewayAPIKeyFile", func(c *config.Config) { c.GatewayAPIKeyFile = key }, "", nil},
		{"GatewayCAFileWithHTTP", func(c *config.Config) { c.GatewayURL, c.GatewayCAFile = "http://gw:80", cert }, "PAYSTREAM_GATEWAY_CA_FILE",
			[]string{`needs an https:// PAYSTREAM_GATEWAY_URL (--gateway-url), got scheme "http"`}},
		{"GatewayCAFileWithHTTPS", func(c *config.Config) { c.GatewayURL, c.GatewayCAFile = "https://gw", cert }, "", nil},
		{"GatewayCAFileMissing", func(c *config.Config) { c.GatewayURL, c.GatewayCAFile = "https://gw", missing }, "PAYSTREAM_GATEWAY_CA_FILE",
			[]string{"cannot read file"}},
		{"GatewayTLSCertWithoutKey", func(c *config.Config) { c.GatewayURL, c.GatewayTLSCert = "https://gw", cert }, "PAYSTREAM_GATEWAY_TLS_KEY",
			[]string{"required when PAYSTREAM_GATEWAY_TLS_CERT (--gateway-tls-cert) is set"}},
		{"GatewayTLSKeyWithoutCert", func(c *config.Config) { c.GatewayURL, c.GatewayTLSKey = "https://gw", key }, "PAYSTREAM_GATEWAY_TLS_CERT",
			[]string{"required when PAYSTREAM_GATEWAY_TLS_KEY (--gateway-tls-key) is set"}},
		{"GatewayTLSCertWithHTTP", func(c *config.Config) { c.GatewayURL, c.GatewayTLSCert, c.GatewayTLSKey = "http://gw", cert, key },
			"PAYSTREAM_GATEWAY_TLS_CERT", []string{"needs an https://"}},
		{"GatewayTLSCertAndKey", func(c *config.Config) { c.GatewayURL, c.GatewayTLSCert, c.GatewayTLSKey = "https://gw", cert, key }, "", nil},
		{"GatewaysCAFileWithHTTPS", func(c *config.Config) {
			c.GatewayURL, c.Gateways, c.GatewayCAFile = "", "a=https://a:8443,b=https://b:8443;weight=2", cert
		}, "", nil},
		{"GatewaysTLSCertWithOneHTTPS", func(c *config.Config) {
			c.GatewayURL, c.Gateways, c.GatewayTLSCert, c.GatewayTLSKey = "", "a=http://a:8080,b=https://b:8443", cert, key
		}, "", nil},
		{"GatewaysCAFileWithoutHTTPS", func(c *config.Config) {
			c.GatewayURL, c.Gateways, c.GatewayCAFile = "", "a=http://a:8080,b=fake", cert
		}, "PAYSTREAM_GATEWAY_CA_FILE", []string{"needs an https:// gateway in PAYSTREAM_GATEWAYS (--gateways), none has one"}},
		{"RiskChecksBad", func(c *config.Config) {
			c.RiskChecks = []string{"http://a:1", "ftp://u:secret@b", "http://a:1", ""}
		}, "PAYSTREAM_RISK_CHECKS", []string{"URL 2 of 4: risk url must not carry user info", "URL 3 of 4 is listed twice",
			"URL 4 of 4: risk url must be an absolute http:// or https:// URL"}},
		{"RiskTimeoutTooLong", func(c *config.Config) { c.RiskTimeout = 11 * time.Second }, "PAYSTREAM_RISK_TIMEOUT", []string{"got 11s"}},
		{"RiskTimeoutOverLease", func(c *config.Config) { c.RiskTimeout, c.Lease = 5*time.Second, 13*time.Second }, "PAYSTREAM_RISK_TIMEOUT",
			[]string{"less than a third of PAYSTREAM_LEASE (--lease)"}},
		{"CredsMissing", func(c *config.Config) { c.NATSCreds = missing }, "PAYSTREAM_NATS_CREDS", []string{"cannot read file", "missing.creds"}},
		{"CredsIsADirectory", func(c *config.Config) { c.NATSCreds = dir }, "PAYSTREAM_NATS_CREDS", []string{"is a directory"}},
		{"PasswordWithoutUser", func(c *config.Config) { c.NATSPassword = "pw" }, "PAYSTREAM_NATS_PASSWORD", []string{"needs PAYSTREAM_NATS_USER (--nats-user)"}},
		{"NATSURLs", func(c *config.Config) {
			c.NATSURLs = []string{"nats://a:4222", "tls://b", "ws://c:80", "wss://u:pw@d:443"}
		}, "", nil},
		{"NATSURLNoURLs", func(c *config.Config) { c.NATSURLs = nil }, "PAYSTREAM_NATS_URL", []string{"must not be empty"}},
		{"NATSURLBadScheme", func(c *config.Config) { c.NATSURLs = []string{"nats://a:4222", "http://u:secret@b:4222"} },
			"PAYSTREAM_NATS_URL", []string{"URL 2 of 2 (http://u:xxxxx@b:4222) must have scheme nats, tls, ws or wss"}},
		{"NATSURLNoScheme", func(c *config.Config) { c.NATSURLs = []string{"127.0.0.1:4222"} }, "PAYSTREAM_NATS_URL", []string{"URL 1 of 1"}},
		{"NATSURLNoHost", func(c *config.Config) { c.NATSURLs = []string{"nats://"} }, "PAYSTREAM_NATS_URL", []string{"has no host"}},
		{"NATSURLEmptyEntry", func(c *config.Config) { c.NATSURLs = []string{"nats://a:4222", ""} }, "PAYSTREAM_NATS_URL", []string{"URL 2 of 2 is empty"}},
		{"NATSURLUnparseable", func(c *config.Config) { c.NATSURLs = []string{"nats://u:secret@h:port"} }, "PAYSTREAM_NATS_URL",
			[]string{"URL 1 of 1 cannot be parsed"}},
		{"DatabaseURLKeywordValue", func(c *config.Config) { c.DatabaseURL = "host=db user=u password=secret dbname=p" }, "", nil},
		{"DatabaseURLEmpty", func(c *config.Config) { c.DatabaseURL = "" }, "PAYSTREAM_DATABASE_URL", []string{"must not be empty"}},
		{"DatabaseURLBadPort", func(c *config.Config) { c.DatabaseURL = "postgres://u:secret@h:notaport/db" }, "PAYSTREAM_DATABASE_URL",
			[]string{"cannot parse `postgres://u:xxxxx@h:notaport/db` as a Postgres connection string: invalid port"}},
		{"MigrateDatabaseURLEmptyIsDatabaseURL", func(c *config.Config) { c.MigrateDatabaseURL = "" }, "", nil},
		{"MigrateDatabaseURLBadPort", func(c *config.Config) { c.MigrateDatabaseURL = "postgres://owner:secret@h:notaport/db" }, "PAYSTREAM_MIGRATE_DATABASE_URL",
			[]string{"cannot parse `postgres://owner:xxxxx@h:notaport/db` as a Postgres connection string: invalid port"}},
		{"DBMaxConnsNegative", func(c *config.Config) { c.DBMaxConns = -1 }, "PAYSTREAM_DB_MAX_CONNS", []string{"got -1"}},
		{"GatewayURLHTTPS", func(c *config.Config) { c.GatewayURL = "https://gw.example.com/base" }, "", nil},
		{"GatewayURLFTP", func(c *config.Config) { c.GatewayURL = "ftp://gw" }, "PAYSTREAM_GATEWAY_URL", []string{`must be "fake" or an absolute http:// or https:// URL`}},
		{"GatewayURLRelative", func(c *config.Config) { c.GatewayURL = "gw:8080/x" }, "PAYSTREAM_GATEWAY_URL", []string{"absolute"}},
		{"GatewayURLNoHost", func(c *config.Config) { c.GatewayURL = "http:///x" }, "PAYSTREAM_GATEWAY_URL", []string{"absolute"}},
		{"GatewayNameTooLong", func(c *config.Config) { c.GatewayName = strings.Repeat("g", 65) }, "PAYSTREAM_GATEWAY_NAME", []string{"at most 64 bytes, got 65"}},
		{"WorkerIDControl", func(c *config.Config) { c.WorkerID = "w\x00" }, "PAYSTREAM_WORKER_ID", []string{"control characters"}},
		{"WorkerIDMaxLength", func(c *config.Config) { c.WorkerID = strings.Repeat("w", 64) }, "", nil},
		{"ConcurrencyTooHigh", func(c *config.Config) { c.Concurrency = 4097 }, "PAYSTREAM_CONCURRENCY", []string{"between 1 and 4096, got 4097"}},
		{"MaxDeliverTooHigh", func(c *config.Config) { c.MaxDeliver = 1001 }, "PAYSTREAM_MAX_DELIVER", []string{"between 2 and 1000"}},
		{"RetryBackoffZero", func(c *config.Config) { c.RetryBackoff = 0 }, "PAYSTREAM_RETRY_BACKOFF", []string{"greater than 0"}},
		{"RetryBackoffMaxBelowBase", func(c *config.Config) { c.RetryBackoff, c.RetryBackoffMax = 2*time.Second, time.Second },
			"PAYSTREAM_RETRY_BACKOFF_MAX", []string{"at least PAYSTREAM_RETRY_BACKOFF (--retry-backoff)"}},
		{"RateLimitNegative", func(c *config.Config) { c.RateLimit = -0.5 }, "PAYSTREAM_RATE_LIMIT", []string{"at least 0, got -0.5"}},
		{"RateBurstZero", func(c *config.Config) { c.RateBurst = 0 }, "PAYSTREAM_RATE_BURST", []string{"at least 1"}},
		{"BreakerFailuresZero", func(c *config.Config) { c.BreakerFailures = 0 }, "PAYSTREAM_BREAKER_FAILURES", []string{"between 1 and"}},
		{"BreakerOpenTimeoutZero", func(c *config.Config) { c.BreakerOpenTimeout = 0 }, "PAYSTREAM_BREAKER_OPEN_TIMEOUT", []string{"greater than 0"}},
		{"MaxAmountZero", func(c *config.Config) { c.MaxAmountMinor = 0 }, "PAYSTREAM_MAX_AMOUNT_MINOR", []string{"greater than 0"}},
		{"HTTPAddrEmpty", func(c *config.Config) { c.HTTPAddr = "" }, "", nil},
		{"HTTPAddrPortZero", func(c *config.Config) { c.HTTPAddr = "127.0.0.1:0" }, "", nil},
		{"HTTPAddrNoPort", func(c *config.Config) { c.HTTPAddr = "localhost" }, "PAYSTREAM_HTTP_ADDR", []string{"host:port"}},
		{"HTTPAddrBadPort", func(c *config.Config) { c.HTTPAddr = ":99999" }, "PAYSTREAM_HTTP_ADDR", []string{"0 to 65535"}},
		{"ShutdownTimeoutZero", func(c *config.Config) { c.ShutdownTimeout = 0 }, "PAYSTREAM_SHUTDOWN_TIMEOUT", []string{"greater than 0"}},
		{"LogLevelUpperCase", func(c *config.Config) { c.LogLevel = "INFO" }, "PAYSTREAM_LOG_LEVEL", []string{"one of debug, info, warn, error"}},
		{"LogFormatText", func(c *config.Config) { c.LogFormat = "text" }, "PAYSTREAM_LOG_FORMAT", []string{"one of json, console"}},
		{"StreamWithDot", func(c *config.Config) { c.Stream = "PAY.MENTS" }, "PAYSTREAM_STREAM", []string{"must not contain"}},
		{"StreamEmpty", func(c *config.Config) { c.Stream = "" }, "PAYSTREAM_STREAM", []string{"must not be empty"}},
		{"ResultsStreamSameAsStream", func(c *config.Config) { c.ResultsStream = "PAYMENTS" }, "PAYSTREAM_RESULTS_STREAM",
			[]string{"must differ from PAYSTREAM_STREAM (--stream)"}},
		{"DLQStreamSameAsResults", func(c *config.Config) { c.DLQStream = "PAYMENT_RESULTS" }, "PAYSTREAM_DLQ_STREAM",
			[]string{"must differ from PAYSTREAM_RESULTS_STREAM (--results-stream)"}},
		{"ConsumerWithSpace", func(c *config.Config) { c.Consumer = "payment workers" }, "PAYSTREAM_CONSUMER", []string{"whitespace"}},
		{"SubjectPrefixMultiToken", func(c *config.Config) { c.SubjectPrefix = "acme.payments" }, "", nil},
		{"SubjectPrefixWildcard", func(c *config.Config) { c.SubjectPrefix = "acme.*" }, "PAYSTREAM_SUBJECT_PREFIX", []string{"wildcards"}},
		{"SubjectPrefixEmptyToken", func(c *config.Config) { c.SubjectPrefix = "acme..pay" }, "PAYSTREAM_SUBJECT_PREFIX", []string{"non-empty"}},
		{"SubjectPrefixTrailingDot", func(c *config.Config) { c.SubjectPrefix = "payments." }, "PAYSTREAM_SUBJECT_PREFIX", []string{"non-empty"}},
		{"MaxAckPendingNegative", func(c *config.Config) { c.MaxAckPending = -1 }, "PAYSTREAM_MAX_ACK_PENDING", []string{"at least 0"}},
		{"StreamReplicasZero", func(c *config.Config) { c.StreamReplicas = 0 }, "PAYSTREAM_STREAM_REPLICAS", []string{"between 1 and 5"}},
		{"StreamMaxAgeZero", func(c *config.Config) { c.StreamMaxAge = 0 }, "PAYSTREAM_STREAM_MAX_AGE,PAYSTREAM_DUPLICATE_WINDOW",
			[]string{"PAYSTREAM_STREAM_MAX_AGE (--stream-max-age): must be greater than 0, got 0s", "must not exceed PAYSTREAM_STREAM_MAX_AGE"}},
		{"DuplicateWindowShort", func(c *config.Config) { c.DuplicateWindow = time.Minute }, "PAYSTREAM_DUPLICATE_WINDOW", []string{"at least 2m0s, got 1m0s"}},
		{"DuplicateWindowOverMaxAge", func(c *config.Config) { c.StreamMaxAge, c.DuplicateWindow = 5*time.Minute, 6*time.Minute },
			"PAYSTREAM_DUPLICATE_WINDOW", []string{"must not exceed PAYSTREAM_STREAM_MAX_AGE (--stream-max-age)"}},
		{"SweepIntervalZero", func(c *config.Config) { c.SweepInterval = 0 }, "PAYSTREAM_SWEEP_INTERVAL", []string{"greater than 0"}},
		{"SweepGraceNegative", func(c *config.Config) { c.SweepGrace = -time.Second }, "PAYSTREAM_SWEEP_GRACE", []string{"at least 0s"}},
		{"SweepGraceBelowBackoff", func(c *config.Config) { c.SweepGrace, c.RetryBackoffMax = 10*time.Second, time.Minute },
			"PAYSTREAM_SWEEP_GRACE", []string{"must be at least PAYSTREAM_RETRY_BACKOFF_MAX (--retry-backoff-max)"}},
		{"SweepGraceDefaultBelowBackoff", func(c *config.Config) { c.SweepGrace, c.RetryBackoffMax = 0, 10*time.Minute },
			"PAYSTREAM_SWEEP_GRACE", []string{"5m0s must be at least PAYSTREAM_RETRY_BACKOFF_MAX"}},
		{"RetentionShort", func(c *config.Config) { c.StreamMaxAge, c.Retention = time.Hour, 47*time.Hour }, "PAYSTREAM_RETENTION", []string{"at least 48h0m0s"}},
		{"RetentionNotOverMaxAge", func(c *config.Config) { c.StreamMaxAge = 2160 * time.Hour }, "PAYSTREAM_RETENTION",
			[]string{"must be longer than PAYSTREAM_STREAM_MAX_AGE (--stream-max-age)"}},
		{"RetentionForEver", func(c *config.Config) { c.Retention = config.KeepForever }, "", nil},
		{"RetentionNegative", func(c *config.Config) { c.Retention = -2 * time.Hour }, "PAYSTREAM_RETENTION", []string{"a duration or -1"}},
		{"RetentionBelowHorizon", func(c *config.Config) { c.ReplayHorizon = 2400 * time.Hour }, "PAYSTREAM_RETENTION",
			[]string{"must be at least PAYSTREAM_REPLAY_HORIZON (--replay-horizon)"}},
		{"RetentionFailedBelowHorizon", func(c *config.Config) { c.ReplayHorizon, c.RetentionFailed = 500*time.Hour, 200*time.Hour }, "PAYSTREAM_RETENTION_FAILED",
			[]string{"must be at least PAYSTREAM_REPLAY_HORIZON"}},
		{"RetentionSucceededNotOverMaxAge", func(c *config.Config) { c.RetentionSucceeded = 168 * time.Hour }, "PAYSTREAM_RETENTION_SUCCEEDED",
			[]string{"must be longer than PAYSTREAM_STREAM_MAX_AGE"}},
		{"RetentionDeclinedForEver", func(c *config.Config) { c.RetentionDeclined = config.KeepForever }, "", nil},
		{"ReplayHorizonZero", func(c *config.Config) { c.ReplayHorizon = 0 }, "PAYSTREAM_REPLAY_HORIZON", []string{"greater than 0"}},
		{"RetentionBatchZero", func(c *config.Config) { c.RetentionBatch = 0 }, "PAYSTREAM_RETENTION_BATCH", []string{"between 1 and 100000"}},
		{"RetentionPauseLong", func(c *config.Config) { c.RetentionPause = 2 * time.Minute }, "PAYSTREAM_RETENTION_PAUSE", []string{"between 0s and 1m0s"}},
		{"FakeLatencyNegative", func(c *config.Config) { c.FakeLatency = -time.Millisecond }, "PAYSTREAM_FAKE_LATENCY", []string{"at least 0s"}},
		{"FakeFailureRateOverOne", func(c *config.Config) { c.FakeFailureRate = 1.5 }, "PAYSTREAM_FAKE_FAILURE_RATE", []string{"between 0 and 1, got 1.5"}},
		{"FakeDeclineRateNegative", func(c *config.Config) { c.FakeDeclineRate = -0.1 }, "PAYSTREAM_FAKE_DECLINE_RATE", []string{"between 0 and 1"}},
		{"FakeRatesOne", func(c *config.Config) { c.FakeFailureRate, c.FakeDeclineRate = 1, 1 }, "", nil},
		{"BatchSizeTooBig", func(c *config.Config) { c.BatchSize = 1025 }, "PAYSTREAM_BATCH_SIZE", []string{"between 1 and 1024"}},
		{"BatchWaitTooLong", func(c *config.Config) { c.BatchWait = 51 * time.Millisecond }, "PAYSTREAM_BATCH_WAIT", []string{"between 0s and 50ms"}},
		{"BatchWaitZero", func(c *config.Config) { c.BatchWait = 0 }, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantVar == "" {
				require.NoError(t, err)
				return
			}
			errs := problems(t, err)
			wantVars := strings.Split(tt.wantVar, ",")
			require.Equal(t, wantVars, varsOf(errs))
			for _, v := range wantVars {
				require.Contains(t, err.Error(), v+" ("+flagOf(v)+"): ")
			}
			for _, m := range tt.wantMsg {
				require.Contains(t, err.Error(), m)
			}
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

func TestDatabaseURLErrorsHidePassword(t *testing.T) {
	t.Parallel()

	for _, dsn := range []string{
		"postgres://u:secret@h:notaport/db",
		"postgres://u:sec ret@h/db",
		"postgres://u:secret@h/db%zz",
		"postgres://u:sec@secret@h:x/db", // pgx itself leaks the part after the first '@'
		"postgres://u:s%zzsecret@h/db",
		"postgres://h/db?password=secret&port=x",
		"postgresql://u:secret@[::1/db",
		"host=h password=secret port=abc",
		"host=h password='se cret secret' port=x",
	} {
		t.Run(dsn, func(t *testing.T) {
			t.Parallel()
			c := valid()
			c.DatabaseURL = dsn
			err := c.Validate()
			require.Equal(t, []string{"PAYSTREAM_DATABASE_URL"}, varsOf(problems(t, err)))
			require.Contains(t, err.Error(), "as a Postgres connection string")
			require.NotContains(t, err.Error(), "secret")
			require.NotContains(t, err.Error(), "sec ret")
		})
	}
}

func TestGatewayNameDerived(t *testing.T) {
	t.Parallel()

	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PAYSTREAM_GATEWAY_URL": "fake"}, "fake"},
		{map[string]string{"PAYSTREAM_GATEWAY_URL": "http://gatewaysim:8090"}, "gatewaysim:8090"},
		{map[string]string{"PAYSTREAM_GATEWAY_URL": "https://api.example.com/v2"}, "api.example.com"},
		{map[string]string{"PAYSTREAM_GATEWAY_URL": "https://api.example.com", "PAYSTREAM_GATEWAY_NAME": "stripe"}, "stripe"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			got, err := parse(nil, tt.env)
			require.NoError(t, err)
			require.Equal(t, tt.want, got.GatewayName)
		})
	}
}

func TestVars(t *testing.T) {
	t.Parallel()

	vars := config.Vars()
	require.Len(t, vars, 70)
	require.Equal(t, "PAYSTREAM_NATS_URL", vars[0], "declaration order")
	seen := map[string]bool{}
	for _, v := range vars {
		require.Regexp(t, `^PAYSTREAM_[A-Z0-9_]+$`, v)
		require.False(t, seen[v], "duplicate %s", v)
		seen[v] = true
	}

	// Every PAYSTREAM_ name this package mentions, in code, docs or tests,
	// is a setting.
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	name := regexp.MustCompile(`PAYSTREAM_[A-Z0-9_]*[A-Z0-9]`)
	var used []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		used = append(used, name.FindAllString(string(b), -1)...)
	}
	slices.Sort(used)
	used = slices.Compact(used)
	require.Greater(t, len(used), 40)
	for _, u := range used {
		require.True(t, seen[u], "%s is used but not a setting", u)
	}

	// Every setting has a flag.
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	_, _ = config.Parse(fs, nil, nil)
	for _, v := range vars {
		require.NotNil(t, fs.Lookup(strings.TrimPrefix(flagOf(v), "--")), "flag of %s", v)
	}
}

func TestSettingErrorUnwrap(t *testing.T) {
	t.Parallel()

	inner := errors.New("boom")
	e := &config.SettingError{Var: "PAYSTREAM_CONCURRENCY", Flag: "--concurrency", Err: inner}
	require.ErrorIs(t, e, inner)
	require.Equal(t, "PAYSTREAM_CONCURRENCY (--concurrency): boom", e.Error())
}

// parseSettings runs config.ParseSettings on a fresh FlagSet that already
// holds one flag of the caller's, --count.
func parseSettings(args []string, env map[string]string, names ...string) (config.Config, *int, error) {
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	count := fs.Int("count", 1, "a flag of the caller")
	c, err := config.ParseSettings(fs, args, lookup(env), names...)
	return c, count, err
}

func TestParseSettings(t *testing.T) {
	t.Parallel()
	names := append(config.NATSSettings(), "STREAM", "SUBJECT_PREFIX")

	t.Run("NATSSettings", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []string{"NATS_URL", "NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN",
			"NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"}, config.NATSSettings())
	})

	t.Run("ReadsTheNamedSettingsLikeParse", func(t *testing.T) {
		t.Parallel()
		got, count, err := parseSettings([]string{"--nats-url=nats://a:4222, nats://b:4222", "--count=7", "--stream=ACME"},
			map[string]string{
				"PAYSTREAM_NATS_USER":      "u",
				"PAYSTREAM_NATS_PASSWORD":  "p",
				"PAYSTREAM_STREAM":         "IGNORED", // the flag wins
				"PAYSTREAM_SUBJECT_PREFIX": "acme.pay",
			}, names...)
		require.NoError(t, err)
		require.Equal(t, 7, *count)
		require.Equal(t, []string{"nats://a:4222", "nats://b:4222"}, got.NATSURLs)
		require.Equal(t, "u", got.NATSUser)
		require.Equal(t, "p", got.NATSPassword)
		require.Equal(t, "ACME", got.Stream)
		require.Equal(t, "acme.pay", got.SubjectPrefix)
	})

	t.Run("OtherSettingsKeepTheirDefaultsUnchecked", func(t *testing.T) {
		t.Parallel()
		got, _, err := parseSettings(nil, map[string]string{
			"PAYSTREAM_CONCURRENCY": "0",       // not read
			"PAYSTREAM_GATEWAY_URL": "nowhere", // not read
		}, names...)
		require.NoError(t, err, "the gateway URL, required by Parse, is no setting of this program")
		want := config.Default()
		require.Equal(t, want, got)
		require.Equal(t, 64, got.Concurrency)
	})

	t.Run("OtherSettingsAreNoFlags", func(t *testing.T) {
		t.Parallel()
		_, _, err := parseSettings([]string{"--concurrency=2"}, nil, names...)
		require.ErrorContains(t, err, "flag provided but not defined: -concurrency")
	})

	t.Run("ReportsEveryProblemOfTheNamedSettings", func(t *testing.T) {
		t.Parallel()
		_, _, err := parseSettings([]string{"--nats-url=http://x", "--nats-tls-cert=" + filepath.Join(t.TempDir(), "cert.pem")},
			map[string]string{"PAYSTREAM_NATS_PASSWORD": "p", "PAYSTREAM_SUBJECT_PREFIX": "a.>"}, names...)
		var vars []string
		for _, p := range problems(t, err) {
			vars = append(vars, p.Var)
		}
		require.Equal(t, []string{"PAYSTREAM_NATS_URL", "PAYSTREAM_NATS_PASSWORD", "PAYSTREAM_NATS_TLS_CERT",
			"PAYSTREAM_NATS_TLS_KEY", "PAYSTREAM_SUBJECT_PREFIX"}, vars)
		require.ErrorContains(t, err, "PAYSTREAM_SUBJECT_PREFIX (--subject-prefix): must not contain wildcards")
	})

	t.Run("NoNames", func(t *testing.T) {
		t.Parallel()
		got, count, err := parseSettings([]string{"--count=3"}, map[string]string{"PAYSTREAM_CONCURRENCY": "0"})
		require.NoError(t, err)
		require.Equal(t, 3, *count)
		require.Equal(t, config.Default(), got)
	})

	t.Run("UnknownNamePanics", func(t *testing.T) {
		t.Parallel()
		require.PanicsWithValue(t, `config.ParseSettings: no such settings: ["NATS_NKEY" "STREEM"]`, func() {
			_, _, _ = parseSettings(nil, nil, "STREAM", "STREEM", "NATS_NKEY")
		})
	})
}
