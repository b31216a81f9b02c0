package processing_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	defaults := processing.Config{
		Owner:              "w",
		Lease:              30 * time.Second,
		MaxDeliver:         10,
		RetryBackoff:       500 * time.Millisecond,
		RetryBackoffMax:    30 * time.Second,
		RateBurst:          1,
		BreakerFailures:    5,
		BreakerOpenTimeout: 30 * time.Second,
	}
	tests := []struct {
		name string
		in   processing.Config
		want processing.Config
	}{
		{name: "zero value", in: processing.Config{Owner: "w"}, want: defaults},
		{name: "negative values", in: processing.Config{Owner: "w", Lease: -1, MaxDeliver: -1, RetryBackoff: -1,
			RetryBackoffMax: -1, RateBurst: -1, BreakerOpenTimeout: -1}, want: defaults},
		{name: "set values are kept", in: processing.Config{Owner: "w", Lease: time.Minute, MaxDeliver: 3,
			RetryBackoff: time.Second, RetryBackoffMax: time.Minute, RateLimit: 2.5, RateBurst: 4,
			BreakerFailures: 9, BreakerOpenTimeout: time.Second, Limits: payment.Limits{MaxAmountMinor: 7}},
			want: processing.Config{Owner: "w", Lease: time.Minute, MaxDeliver: 3,
				RetryBackoff: time.Second, RetryBackoffMax: time.Minute, RateLimit: 2.5, RateBurst: 4,
				BreakerFailures: 9, BreakerOpenTimeout: time.Second, Limits: payment.Limits{MaxAmountMinor: 7}}},
		{name: "cap below the base is raised to it", in: processing.Config{Owner: "w", RetryBackoff: time.Minute, RetryBackoffMax: time.Second},
			want: func() processing.Config {
				c := defaults
				c.RetryBackoff, c.RetryBackoffMax = time.Minute, time.Minute
				return c
			}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.in.WithDefaults())
		})
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
