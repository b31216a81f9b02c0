package processing_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		tweak func(*processing.Config)
		want  []string // one problem each; none means valid
	}{
		{name: "the tests' configuration", tweak: func(*processing.Config) {}},
		{name: "no rate limit and a cap equal to the base", tweak: func(c *processing.Config) {
			c.RateLimit, c.RetryBackoffMax = 0, c.RetryBackoff
		}},
		{name: "zero value: no defaults", tweak: func(c *processing.Config) { *c = processing.Config{} },
			want: []string{"owner: required", "lease 0s: must be greater than 0", "max deliver 0: must be at least 1",
				"retry backoff 0s: must be greater than 0", "rate burst 0: must be at least 1", "breaker failures 0: must be at least 1",
				"breaker open timeout 0s: must be greater than 0"}},
		{name: "negative values", tweak: func(c *processing.Config) {
			c.Lease, c.MaxDeliver, c.RetryBackoff, c.RateLimit, c.RateBurst, c.BreakerOpenTimeout = -1, -1, -1, -1, -1, -1
		}, want: []string{"lease -1ns: must be greater than 0", "max deliver -1: must be at least 1",
			"retry backoff -1ns: must be greater than 0", "rate limit -1: must not be negative",
			"rate burst -1: must be at least 1", "breaker open timeout -1ns: must be greater than 0"}},
		{name: "cap below the base", tweak: func(c *processing.Config) { c.RetryBackoff, c.RetryBackoffMax = time.Minute, time.Second },
			want: []string{"retry backoff max 1s: must be at least the retry backoff, 1m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			tt.tweak(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Len(t, strings.Split(err.Error(), "\n"), len(tt.want), "one line per problem: %v", err)
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
		})
	}

	t.Run("New panics with the problems", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig()
		cfg.Lease = 0
		m := telemetry.New(prometheus.NewRegistry())
		require.PanicsWithValue(t, "processing.New: invalid Config: lease 0s: must be greater than 0", func() {
			processing.New(cfg, &fakeClaims{}, newFakeGateway(), zerolog.Nop(), m)
		})
	})
}

func TestSweeperConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, testSweeperConfig().Validate())
	require.NoError(t, processing.SweeperConfig{Interval: time.Second, Grace: time.Second, LookupTimeout: time.Second}.Validate(), "limit and retention may be 0")

	err := processing.SweeperConfig{}.Validate()
	require.EqualError(t, err, "interval 0s: must be greater than 0\ngrace 0s: must be greater than 0\nlookup timeout 0s: must be greater than 0")
	err = processing.SweeperConfig{Interval: -1, Grace: -1, Limit: -1, RetentionInterval: -1}.Validate()
	for _, w := range []string{"interval -1ns: must be greater than 0", "grace -1ns: must be greater than 0",
		"limit -1: must not be negative", "retention interval -1ns: must not be negative"} {
		require.ErrorContains(t, err, w)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	cause := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "permanent", err: &processing.PermanentError{Reason: payment.ReasonConflict, Err: cause}, want: "conflict: boom"},
		{name: "retryable", err: &processing.RetryableError{Err: cause}, want: "retryable: boom"},
		{name: "retryable after", err: &processing.RetryableError{After: 2 * time.Second, Err: cause}, want: "retryable (not before 2s): boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.EqualError(t, tt.err, tt.want)
			require.ErrorIs(t, tt.err, cause)
		})
	}
}
