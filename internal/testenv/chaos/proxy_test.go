package chaos

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
)

func TestGatewayProxy(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{Seed: 1}, zerolog.Nop(), nil)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	p, err := startGatewayProxy(ts.URL)
	require.NoError(t, err)
	t.Cleanup(p.close)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	charge := func(key string) int {
		body := `{"payment_id":"` + key + `","merchant_id":"m1","amount_minor":1000,"currency":"EUR","payment_method":"pm_card_visa"}`
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.url+"/v1/charges", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}
	lookup := func(key string) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url+"/v1/charges?idempotency_key="+key, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}

	require.Equal(t, http.StatusCreated, charge("free"), "keys not armed pass")
	p.arm([]string{"amb"})
	require.Equal(t, http.StatusInternalServerError, charge("amb"), "the charged answer is lost")
	require.Equal(t, 1, s.ChargesFor("amb"), "the gateway charged")
	require.Equal(t, []string{"amb"}, p.down())
	require.Equal(t, http.StatusServiceUnavailable, charge("amb"), "down: the replay does not come through")
	require.Equal(t, http.StatusServiceUnavailable, lookup("amb"), "down: lookups neither")
	require.Equal(t, http.StatusCreated, charge("free"), "other keys pass")
	require.Equal(t, int64(1), p.lost.Load())
	require.Equal(t, int64(2), p.refused.Load())

	p.lift()
	require.Equal(t, http.StatusCreated, charge("amb"), "back: the gateway replays its charge")
	require.Equal(t, 1, s.ChargesFor("amb"))
}

// TestGatewayProxyEndsAbandonedCalls checks that a call the worker gives up
// on ends at the simulator too, as a call made without the proxy does: the
// simulator then holds no call running for the key.
func TestGatewayProxyEndsAbandonedCalls(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{Seed: 1, Latency: time.Minute}, zerolog.Nop(), nil)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	p, err := startGatewayProxy(ts.URL)
	require.NoError(t, err)
	t.Cleanup(p.close)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := `{"payment_id":"slow","merchant_id":"m1","amount_minor":1000,"currency":"EUR","payment_method":"pm_card_visa"}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/charges", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Idempotency-Key", "slow")
	errc := make(chan error, 1)
	go func() {
		_, err := client.Do(req) //nolint:bodyclose // no answer: the call is cancelled
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Lookup("slow").State == sim.KeyInFlight },
		5*time.Second, 10*time.Millisecond, "the call reaches the simulator")
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	require.Eventually(t, func() bool { return s.Lookup("slow").State == sim.KeyUnknown },
		5*time.Second, 10*time.Millisecond, "the simulator still runs the abandoned call")
}
