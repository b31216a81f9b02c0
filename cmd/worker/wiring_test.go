package main

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/internal/testenv/defaults"
)

// TestConfigMappingMatchesTheTestDefaults keeps internal/testenv/defaults,
// which tests and tools use for a worker's defaults, in step with how the
// worker maps its configuration.
func TestConfigMappingMatchesTheTestDefaults(t *testing.T) {
	t.Parallel()
	d := config.Default()
	require.Equal(t, defaults.Consumer(), consumerConfig(d))
	require.Equal(t, defaults.Processing(""), processingConfig(d))
	require.Equal(t, defaults.Sweeper(), sweeperConfig(d))
}

// TestConfigMappingIsComplete checks that each mapping carries a value
// into every field of the package's Config but those that no setting
// exposes.
func TestConfigMappingIsComplete(t *testing.T) {
	t.Parallel()
	d := config.Default()
	d.WorkerID, d.MaxAckPending, d.RateLimit = "w-1", 2000, 5 // not zero, unlike their defaults
	d.GatewayConcurrency, d.GatewayConcurrencyMode = 16, "aimd"
	requireAllSet := func(v any, except ...string) {
		t.Helper()
		rv := reflect.ValueOf(v)
		for i := range rv.NumField() {
			name := rv.Type().Field(i).Name
			if !slices.Contains(except, name) {
				require.False(t, rv.Field(i).IsZero(), "%s.%s is not mapped", rv.Type(), name)
			}
		}
	}
	// Tracing comes from the OTEL_* variables, not a setting: newConsumer
	// and newProcessor set it (tracing.go).
	requireAllSet(consumerConfig(d), "FetchMaxWait", "MaxFetch", "FairMaxHold", "Tracing")
	requireAllSet(processingConfig(d), "Tracing")
	requireAllSet(sweeperConfig(d), "Limit") // no setting: the package's default
	require.NoError(t, consumerConfig(d).Validate())
	require.NoError(t, processingConfig(d).Validate())
	require.NoError(t, sweeperConfig(d).Validate())

	d.SweepGrace = 0
	require.Equal(t, 5*time.Minute, sweeperConfig(d).Grace, "0 means the default grace")
}
