package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/payment"
)

// startRun runs the simulator with args until the test ends and returns its
// base URL (startSim, on a free port).
func startRun(t *testing.T, args ...string) string {
	t.Helper()
	return "http://" + startSim(t, append([]string{"--addr", "127.0.0.1:0"}, args...), nil)
}

type meterCounts struct {
	Seconds []struct {
		Charges  int `json:"charges"`
		Rejected int `json:"rejected"`
	} `json:"seconds"`
	InFlight      int `json:"in_flight"`
	PeakInFlight  int `json:"peak_in_flight"`
	MaxConcurrent int `json:"max_concurrent"`
}

func getMeter(t require.TestingT, base string) meterCounts {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/meter", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var m meterCounts
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return m
}

func charge(t *testing.T, g *gateway.HTTP, key string) error {
	_, err := g.Charge(t.Context(), payment.Charge{IdempotencyKey: key, PaymentID: key, MerchantID: "m1",
		Currency: "EUR", PaymentMethod: "pm_card_visa", AmountMinor: 1000})
	return err
}

// TestRunMeter: GET /v1/meter is always served and counts charges per
// second; with --max-in-flight 1 a charge that arrives while another is in
// flight is answered 429 rate_limited, and counted rejected.
func TestRunMeter(t *testing.T) {
	t.Parallel()
	t.Run("counts", func(t *testing.T) {
		t.Parallel()
		base := startRun(t)
		g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: base})
		require.NoError(t, err)
		defer g.Close()
		require.NoError(t, charge(t, g, "k1"))
		require.NoError(t, charge(t, g, "k2"))
		m := getMeter(t, base)
		total := 0
		for _, s := range m.Seconds {
			total += s.Charges
			require.Zero(t, s.Rejected)
		}
		require.Equal(t, 2, total)
		require.Zero(t, m.MaxConcurrent)
		require.Equal(t, 1, m.PeakInFlight)
	})
	t.Run("max in flight", func(t *testing.T) {
		t.Parallel()
		base := startRun(t, "--max-in-flight", "1", "--latency", "2s")
		g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: base, Timeout: 10 * time.Second})
		require.NoError(t, err)
		defer g.Close()
		slow := make(chan error, 1)
		go func() { slow <- charge(t, g, "slow") }()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			require.Equal(c, 1, getMeter(c, base).InFlight)
		}, 10*time.Second, 10*time.Millisecond, "the first charge is in flight")
		err = charge(t, g, "second")
		ge, ok := errors.AsType[*payment.GatewayError](err)
		require.True(t, ok, "%v", err)
		require.Equal(t, http.StatusTooManyRequests, ge.StatusCode)
		require.NoError(t, <-slow)
		m := getMeter(t, base)
		require.Equal(t, 1, m.MaxConcurrent)
		rejected := 0
		for _, s := range m.Seconds {
			rejected += s.Rejected
		}
		require.Equal(t, 1, rejected)
	})
	t.Run("parse", func(t *testing.T) {
		t.Parallel()
		o, err := parse(nil, env(map[string]string{"GATEWAYSIM_MAX_IN_FLIGHT": "12"}), io.Discard)
		require.NoError(t, err)
		require.Equal(t, 12, o.maxInFlight)
		_, err = parse([]string{"--max-in-flight", "-1"}, env(nil), io.Discard)
		require.ErrorContains(t, err, "--max-in-flight must not be negative")
	})
}
