package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
)

// testBundle is an HTTP gateway client talking to a simulator.
type testBundle struct {
	sim    *sim.Server
	server *httptest.Server
	client *gateway.HTTP
}

// setup starts a simulator with cfg behind an httptest server (wrapped by
// wrap, when not nil) and returns a client for it with the given timeout
// (0: default). Everything is closed in cleanup.
func setup(t *testing.T, cfg sim.Config, timeout time.Duration, wrap func(http.Handler) http.Handler) *testBundle {
	t.Helper()
	s := sim.New(cfg, zerolog.Nop(), nil)
	var h http.Handler = s
	if wrap != nil {
		h = wrap(s)
	}
	ts := httptest.NewServer(h)
	client, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL, Timeout: timeout})
	require.NoError(t, err)
	t.Cleanup(func() {
		client.Close()
		ts.Close()
	})
	return &testBundle{sim: s, server: ts, client: client}
}

func testCharge(key string, amount int64) payment.Charge {
	return payment.Charge{
		IdempotencyKey: key,
		PaymentID:      "pay_" + key,
		MerchantID:     "merchant_1",
		Currency:       "EUR",
		PaymentMethod:  "pm_card_visa",
		AmountMinor:    amount,
	}
}

func requireGatewayError(t *testing.T, err error, class payment.FailureClass, status int) *payment.GatewayError {
	t.Helper()
	require.Error(t, err)
	ge, ok := errors.AsType[*payment.GatewayError](err)
	require.True(t, ok, "want *payment.GatewayError, got %T: %v", err, err)
	require.Equal(t, class, ge.Class, "class of %v", err)
	require.Equal(t, status, ge.StatusCode, "status of %v", err)
	return ge
}

func TestNewHTTP(t *testing.T) {
	t.Parallel()

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: "https://gw.example.com:8443/"})
		require.NoError(t, err)
		t.Cleanup(g.Close)
		require.Equal(t, "gw.example.com:8443", g.Name())
	})
	t.Run("name", func(t *testing.T) {
		t.Parallel()
		g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: "http://127.0.0.1:1", Name: "acme"})
		require.NoError(t, err)
		t.Cleanup(g.Close)
		require.Equal(t, "acme", g.Name())
	})
	for _, tt := range []struct {
		name string
		cfg  gateway.HTTPConfig
		want string
	}{
		{"empty", gateway.HTTPConfig{}, "scheme"},
		{"no scheme", gateway.HTTPConfig{BaseURL: "gw.example.com"}, "scheme"},
		{"ftp", gateway.HTTPConfig{BaseURL: "ftp://gw.example.com"}, "scheme"},
		{"no host", gateway.HTTPConfig{BaseURL: "http://"}, "no host"},
		{"user info", gateway.HTTPConfig{BaseURL: "https://user:secret@gw.example.com"}, "user info"},
		{"query", gateway.HTTPConfig{BaseURL: "https://gw.example.com/?a=b"}, "query"},
		{"negative timeout", gateway.HTTPConfig{BaseURL: "https://gw.example.com", Timeout: -time.Second}, "timeout"},
		{"bad url", gateway.HTTPConfig{BaseURL: "http://[::1"}, "parse"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := gateway.NewHTTP(tt.cfg)
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

func TestHTTPChargeSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{Seed: 1}, 0, nil)
	ctx := t.Context()

	res, err := b.client.Charge(ctx, testCharge("k1", 1000))
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
	require.True(t, strings.HasPrefix(res.ChargeID, "ch_sim"), res.ChargeID)
	require.Empty(t, res.DeclineCode)

	again, err := b.client.Charge(ctx, testCharge("k1", 1000))
	require.NoError(t, err)
	require.Equal(t, res, again, "same key and body replays the first result")

	st := b.sim.Stats()
	require.Equal(t, int64(1), st.Charges)
	require.Equal(t, 1, st.Keys)
	require.Equal(t, 1, b.sim.ChargesFor("k1"))
	require.Empty(t, st.DoubleCharged)
}

func TestHTTPChargeDeclined(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, 0, nil)

	res, err := b.client.Charge(t.Context(), testCharge("k13", 1013))
	require.NoError(t, err)
	require.Equal(t, payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "card_declined"}, res)
	require.Zero(t, b.sim.Stats().Charges)
	require.Zero(t, b.sim.ChargesFor("k13"))

	b.sim.SetConfig(sim.Config{DeclineRate: 1})
	res, err = b.client.Charge(t.Context(), testCharge("k2", 2000))
	require.NoError(t, err)
	require.Equal(t, payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "insufficient_funds"}, res)
	require.Zero(t, b.sim.Stats().Charges)
}

func TestHTTPKeyReusedWithDifferentBody(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, 0, nil)
	_, err := b.client.Charge(t.Context(), testCharge("k1", 1000))
	require.NoError(t, err)

	_, err = b.client.Charge(t.Context(), testCharge("k1", 1001))
	ge := requireGatewayError(t, err, payment.ClassRejected, http.StatusUnprocessableEntity)
	require.Equal(t, "idempotency_key_reused", ge.Code)
	require.False(t, payment.IsBreakerFailure(err))
	require.Equal(t, int64(1), b.sim.Stats().Charges)
}

func TestHTTPLostResponseThenRetry(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{LostResponseRate: 1}, 0, nil)
	c := testCharge("lost", 5000)

	_, err := b.client.Charge(t.Context(), c)
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusInternalServerError)
	require.Equal(t, "internal_error", ge.Code)
	require.True(t, payment.IsBreakerFailure(err))
	require.Equal(t, int64(1), b.sim.Stats().Charges, "the gateway charged although the answer was lost")

	// The retry (LostResponseRate still 1) gets the stored answer.
	res, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
	require.NotEmpty(t, res.ChargeID)

	again, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, res.ChargeID, again.ChargeID)

	require.Equal(t, int64(1), b.sim.Stats().Charges)
	require.Equal(t, 1, b.sim.ChargesFor("lost"))
}

func TestHTTPSameKeyInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{Latency: time.Hour}, 0, nil)
	c := testCharge("busy", 1000)

	firstCtx, cancelFirst := context.WithCancel(t.Context())
	defer cancelFirst()
	firstErr := make(chan error, 1)
	go func() {
		_, err := b.client.Charge(firstCtx, c)
		firstErr <- err
	}()
	require.Eventually(t, func() bool { return b.sim.Stats().InFlight == 1 }, 5*time.Second, 5*time.Millisecond)

	_, err := b.client.Charge(t.Context(), c)
	ge := requireGatewayError(t, err, payment.ClassRetry, http.StatusConflict)
	require.Equal(t, "idempotency_key_in_use", ge.Code)
	require.False(t, payment.IsBreakerFailure(err))

	// The caller of the first call gives up: its own cancellation, not a
	// gateway failure, and the gateway keeps no result for the key.
	cancelFirst()
	err = <-firstErr
	require.ErrorIs(t, err, context.Canceled)
	_, isGatewayErr := errors.AsType[*payment.GatewayError](err)
	require.False(t, isGatewayErr)
	require.False(t, payment.IsBreakerFailure(err))
	require.Eventually(t, func() bool { return b.sim.Stats().InFlight == 0 }, 5*time.Second, 5*time.Millisecond)

	b.sim.SetConfig(sim.Config{})
	res, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
	require.Equal(t, int64(1), b.sim.Stats().Charges)
}

func TestHTTPTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{TimeoutRate: 1, HangFor: time.Hour}, 50*time.Millisecond, nil)
	c := testCharge("slow", 1000)

	_, err := b.client.Charge(t.Context(), c)
	ge := requireGatewayError(t, err, payment.ClassTrouble, 0)
	require.Equal(t, payment.CodeTimeout, ge.Code)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, payment.IsBreakerFailure(err))

	// The simulator notices the client left and keeps no result.
	require.Eventually(t, func() bool { return b.sim.Stats().InFlight == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, b.sim.Stats().Charges)

	b.sim.SetConfig(sim.Config{})
	res, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
}

func TestHTTPCallerDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{Latency: time.Hour}, time.Hour, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()

	_, err := b.client.Charge(ctx, testCharge("k", 1000))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, isGatewayErr := errors.AsType[*payment.GatewayError](err)
	require.False(t, isGatewayErr, "the caller's own deadline is returned as is: %v", err)
	require.True(t, payment.IsBreakerFailure(err), "a deadline during the call means the gateway was too slow")
}

func TestHTTPCallerCanceledBeforeCall(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{}, 0, nil)
	ctx, cancel := context.WithCancelCause(t.Context())
	shutdown := errors.New("worker shutting down")
	cancel(shutdown)

	_, err := b.client.Charge(ctx, testCharge("k", 1000))
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, shutdown)
	require.False(t, payment.IsBreakerFailure(err))
	require.Zero(t, b.sim.Stats().Keys)
}

func TestHTTPRateLimited(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{RateLimitRate: 1, RetryAfter: 2500 * time.Millisecond}, 0, nil)
	_, err := b.client.Charge(t.Context(), testCharge("k", 1000))
	ge := requireGatewayError(t, err, payment.ClassRetry, http.StatusTooManyRequests)
	require.Equal(t, 3*time.Second, ge.RetryAfter, "rounded up to whole seconds")
	require.False(t, payment.IsBreakerFailure(err))
	require.Zero(t, b.sim.Stats().Keys)
}

func TestHTTPServerError(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{ErrorRate: 1}, 0, nil)
	c := testCharge("k", 1000)
	_, err := b.client.Charge(t.Context(), c)
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusServiceUnavailable)
	require.Equal(t, "service_unavailable", ge.Code)
	require.True(t, payment.IsBreakerFailure(err))
	require.Zero(t, b.sim.Stats().Keys, "a 5xx leaves no result for the key")

	b.sim.SetConfig(sim.Config{})
	res, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
	require.Equal(t, int64(1), b.sim.Stats().Charges)
}

func TestHTTPRequestShape(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, contentType, key string
		body                           map[string]any
	}
	var mu sync.Mutex
	var got []seen
	capture := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var body map[string]any
			if err := dec.Decode(&body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			got = append(got, seen{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Idempotency-Key"), body})
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(raw))
			next.ServeHTTP(w, r)
		})
	}
	b := setup(t, sim.Config{}, 0, capture)

	c := testCharge("key-Ω", 1234) // refused: not printable ASCII
	_, err := b.client.Charge(t.Context(), c)
	ge := requireGatewayError(t, err, payment.ClassRejected, 0)
	require.Equal(t, payment.CodeInvalidCharge, ge.Code)

	c = testCharge("key_1/A~", 1234)
	_, err = b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	c = testCharge("key_2", 99)
	c.Description = "order 42"
	_, err = b.client.Charge(t.Context(), c)
	require.NoError(t, err)

	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []seen{
		{
			method: "POST", path: "/v1/charges", contentType: "application/json", key: "key_1/A~",
			body: map[string]any{
				"payment_id": "pay_key_1/A~", "merchant_id": "merchant_1", "currency": "EUR",
				"payment_method": "pm_card_visa", "amount_minor": json.Number("1234"),
			},
		},
		{
			method: "POST", path: "/v1/charges", contentType: "application/json", key: "key_2",
			body: map[string]any{
				"payment_id": "pay_key_2", "merchant_id": "merchant_1", "currency": "EUR",
				"payment_method": "pm_card_visa", "amount_minor": json.Number("99"), "description": "order 42",
			},
		},
	}, got)
}

func TestHTTPBasePath(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{}, zerolog.Nop(), nil)
	mux := http.NewServeMux()
	mux.Handle("/gw/", http.StripPrefix("/gw", s))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL + "/gw/"})
	require.NoError(t, err)
	t.Cleanup(g.Close)

	res, err := g.Charge(t.Context(), testCharge("k", 1000))
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
}

// rawServer serves h and returns a client for it.
func rawServer(t *testing.T, h http.HandlerFunc) *gateway.HTTP {
	t.Helper()
	ts := httptest.NewServer(h)
	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL})
	require.NoError(t, err)
	t.Cleanup(func() {
		g.Close()
		ts.Close()
	})
	return g
}

func TestHTTPOversizedAnswer(t *testing.T) {
	t.Parallel()
	g := rawServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = fmt.Fprintf(w, `{"id":"ch_1","status":"succeeded","pad":"%s"}`, strings.Repeat("x", gateway.MaxResponseBytes))
	})
	_, err := g.Charge(t.Context(), testCharge("k", 1000))
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusOK)
	require.Equal(t, payment.CodeMalformedResponse, ge.Code)
}

func TestHTTPRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	var followed atomic.Bool
	g := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Store(true)
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	_, err := g.Charge(t.Context(), testCharge("k", 1000))
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusTemporaryRedirect)
	require.Equal(t, payment.CodeUnexpectedStatus, ge.Code)
	require.False(t, followed.Load())
}

func TestHTTPConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: "http://" + addr})
	require.NoError(t, err)
	t.Cleanup(g.Close)
	_, err = g.Charge(t.Context(), testCharge("k", 1000))
	ge := requireGatewayError(t, err, payment.ClassTrouble, 0)
	require.Equal(t, payment.CodeConnectionRefused, ge.Code)
	require.True(t, ge.NotSent, "no connection, no request: the gateway cannot have charged")
	require.NotNil(t, ge.Err)
	require.True(t, payment.IsBreakerFailure(err))
}

// TestHTTPRetriesChargeOnce hammers the simulator with concurrent callers
// that retry through outages and lost answers, and checks that each key is
// charged once and every caller sees the same charge.
func TestHTTPRetriesChargeOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{ErrorRate: 0.3, LostResponseRate: 0.3, RateLimitRate: 0.1, Seed: 7}, 0, nil)
	const keys, callers = 40, 4

	ids := make([][callers]string, keys)
	var wg sync.WaitGroup
	for k := range keys {
		for c := range callers {
			wg.Go(func() {
				charge := testCharge(fmt.Sprintf("key-%d", k), int64(1000+k))
				for attempt := 0; attempt < 1000; attempt++ {
					res, err := b.client.Charge(t.Context(), charge)
					if err == nil {
						ids[k][c] = string(res.Status) + ":" + res.ChargeID + res.DeclineCode
						return
					}
					if ge, ok := errors.AsType[*payment.GatewayError](err); !ok || ge.Class == payment.ClassRejected {
						t.Errorf("key %d: %v", k, err)
						return
					}
				}
				t.Errorf("key %d: no answer after 1000 attempts", k)
			})
		}
	}
	wg.Wait()

	wantCharges := 0
	for k := range keys {
		for c := 1; c < callers; c++ {
			require.Equal(t, ids[k][0], ids[k][c], "key %d", k)
		}
		if (1000+k)%100 == 13 {
			require.Equal(t, "declined:card_declined", ids[k][0])
			continue
		}
		wantCharges++
		require.True(t, strings.HasPrefix(ids[k][0], "succeeded:ch_"), ids[k][0])
		require.Equal(t, 1, b.sim.ChargesFor(fmt.Sprintf("key-%d", k)))
	}
	st := b.sim.Stats()
	require.Equal(t, int64(wantCharges), st.Charges)
	require.Equal(t, keys, st.Keys)
	require.Zero(t, st.InFlight)
	require.Empty(t, st.DoubleCharged)
}

func TestHTTPLookupRequestShape(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, rawQuery, key, accept, idemHeader string
		bodyLen                                         int
	}
	var mu sync.Mutex
	var got []seen
	capture := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.URL.Query().Get("idempotency_key"),
				r.Header.Get("Accept"), r.Header.Get("Idempotency-Key"), len(body)})
			mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	b := setup(t, sim.Config{}, 0, capture)

	const key = "order/42+a%b&c=d~#?"
	_, err := b.client.Lookup(t.Context(), key)
	require.NoError(t, err)

	_, err = b.client.Lookup(t.Context(), "key Ω") // refused: not printable ASCII
	ge := requireGatewayError(t, err, payment.ClassRejected, 0)
	require.Equal(t, payment.CodeInvalidKey, ge.Code)
	_, err = b.client.Lookup(t.Context(), "")
	requireGatewayError(t, err, payment.ClassRejected, 0)

	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []seen{{
		method: "GET", path: "/v1/charges", rawQuery: "idempotency_key=order%2F42%2Ba%25b%26c%3Dd~%23%3F", key: key,
		accept: "application/json",
	}}, got)
}

func TestHTTPLookupFindsCharge(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{MaxKeys: 1}, 0, nil)
	c := testCharge("k1", 4200)
	c.Currency = "JPY"
	res, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)

	found, err := b.client.Lookup(t.Context(), "k1")
	require.NoError(t, err)
	want := payment.LookupResult{Found: true, ChargeID: res.ChargeID, AmountMinor: 4200, Currency: "JPY", PaymentID: "pay_k1"}
	require.Equal(t, want, found)

	// The simulator forgets k1 for idempotency after one more key, but keeps
	// the charge for lookup.
	_, err = b.client.Charge(t.Context(), testCharge("k2", 1000))
	require.NoError(t, err)
	require.Zero(t, b.sim.ChargesFor("k1"), "k1 is forgotten for idempotency")
	found, err = b.client.Lookup(t.Context(), "k1")
	require.NoError(t, err)
	require.Equal(t, want, found)
	require.Equal(t, int64(2), b.sim.Stats().Lookups)
}

// TestHTTPLookupDuringOutage: the simulator's faults hide charges from
// lookups too, until they stop or lookups are spared.
func TestHTTPLookupDuringOutage(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{LostResponseRate: 1}, 0, nil)
	impatient, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: b.server.URL, Timeout: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(impatient.Close)
	c := testCharge("lost", 1000)
	_, err = b.client.Charge(t.Context(), c)
	requireGatewayError(t, err, payment.ClassTrouble, http.StatusInternalServerError)

	for _, tt := range []struct {
		name   string
		cfg    sim.Config
		status int
		code   string
	}{
		{"lost answers", sim.Config{LostResponseRate: 1}, http.StatusInternalServerError, "internal_error"},
		{"outage", sim.Config{ErrorRate: 1}, http.StatusServiceUnavailable, "service_unavailable"},
		{"hang", sim.Config{TimeoutRate: 1, HangFor: time.Hour}, 0, payment.CodeTimeout},
	} {
		b.sim.SetConfig(tt.cfg)
		client := b.client
		if tt.code == payment.CodeTimeout {
			client = impatient
		}
		_, err := client.Lookup(t.Context(), "lost")
		ge := requireGatewayError(t, err, payment.ClassTrouble, tt.status)
		require.Equal(t, tt.code, ge.Code, tt.name)
		require.True(t, payment.IsBreakerFailure(err), tt.name)
	}

	// Charges still fail, lookups are spared: the charge shows.
	b.sim.SetConfig(sim.Config{ErrorRate: 1, TimeoutRate: 1, SpareLookups: true})
	found, err := b.client.Lookup(t.Context(), "lost")
	require.NoError(t, err)
	require.True(t, found.Found)
	require.Equal(t, 1, b.sim.ChargesFor("lost"))

	// The outage ends: the retry gets the charge that the lookup found.
	b.sim.SetConfig(sim.Config{})
	res, err := b.client.Charge(t.Context(), c)
	require.NoError(t, err)
	require.Equal(t, found.ChargeID, res.ChargeID)
	require.Equal(t, int64(1), b.sim.Stats().Charges)
}

func TestHTTPLookupContext(t *testing.T) {
	t.Parallel()
	b := setup(t, sim.Config{TimeoutRate: 1, HangFor: time.Hour}, time.Hour, nil)

	t.Run("canceled before", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancelCause(t.Context())
		shutdown := errors.New("worker shutting down")
		cancel(shutdown)
		_, err := b.client.Lookup(ctx, "k")
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, shutdown)
		require.ErrorContains(t, err, "lookup")
		require.False(t, payment.IsBreakerFailure(err))
	})
	t.Run("caller deadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := b.client.Lookup(ctx, "k")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		_, isGatewayErr := errors.AsType[*payment.GatewayError](err)
		require.False(t, isGatewayErr, "the caller's own deadline is returned as is: %v", err)
		require.True(t, payment.IsBreakerFailure(err))
	})
}

func TestHTTPLookupOversizedAnswer(t *testing.T) {
	t.Parallel()
	g := rawServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = fmt.Fprintf(w, `{"id":"ch_1","status":"succeeded","amount_minor":1,"currency":"EUR","payment_id":"p","pad":"%s"}`,
			strings.Repeat("x", gateway.MaxResponseBytes))
	})
	_, err := g.Lookup(t.Context(), "k")
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusOK)
	require.Equal(t, payment.CodeMalformedResponse, ge.Code)
}

func TestHTTPLookupBasePath(t *testing.T) {
	t.Parallel()
	s := sim.New(sim.Config{}, zerolog.Nop(), nil)
	mux := http.NewServeMux()
	mux.Handle("/gw/", http.StripPrefix("/gw", s))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL + "/gw/"})
	require.NoError(t, err)
	t.Cleanup(g.Close)

	res, err := g.Lookup(t.Context(), "k")
	require.NoError(t, err)
	require.False(t, res.Found)
}
