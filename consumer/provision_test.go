package consumer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/internal/testenv/defaults"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, defaults.Consumer().Validate())

	err := consumer.Config{}.Validate()
	want := []string{"stream: required", "results stream: required", "dlq stream: required", "consumer: required",
		"subject prefix: required", "replicas 0: must be at least 1", "concurrency 0: must be at least 1",
		"max deliver 0: must be at least 1", "ack wait 0s: must be greater than 0", "stream max age 0s: must be greater than 0",
		"duplicate window 0s: must be greater than 0", "shutdown timeout 0s: must be greater than 0",
		"retry backoff 0s: must be greater than 0"}
	require.Len(t, strings.Split(err.Error(), "\n"), len(want), "one line per problem: %v", err)
	for _, w := range want {
		require.ErrorContains(t, err, w)
	}

	c := defaults.Consumer()
	c.MaxAckPending, c.RetryBackoffMax, c.FetchMaxWait, c.MaxFetch = -1, c.RetryBackoff-1, -1, -1
	err = c.Validate()
	for _, w := range []string{"max ack pending -1", "retry backoff max 499.999999ms: must be at least the retry backoff, 500ms",
		"fetch max wait -1ns", "max fetch -1"} {
		require.ErrorContains(t, err, w)
	}

	err = consumer.Provision(t.Context(), nil, consumer.Config{})
	require.ErrorContains(t, err, "invalid consumer.Config: stream: required", "nothing is provisioned from an invalid Config")
}

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	t.Run("fills the consumer's own tuning only", func(t *testing.T) {
		t.Parallel()
		got := consumer.Config{Concurrency: 100}.WithDefaults()
		require.Equal(t, consumer.Config{Concurrency: 100, MaxAckPending: 1600, FetchMaxWait: time.Second, MaxFetch: 256,
			FairMaxHold: 2 * time.Second}, got)
		require.Equal(t, 1000, consumer.Config{Concurrency: 8}.WithDefaults().MaxAckPending, "at least 1000")
	})
	t.Run("keeps set values", func(t *testing.T) {
		t.Parallel()
		in := defaults.Consumer()
		in.MaxAckPending, in.FetchMaxWait, in.MaxFetch, in.FairMaxHold = 7, time.Minute, 3, time.Second
		require.Equal(t, in, in.WithDefaults())
	})
}
