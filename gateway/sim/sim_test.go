package sim_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/gateway/sim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const okBody = `{"payment_id":"p1","merchant_id":"m1","amount_minor":1000,"currency":"EUR","payment_method":"pm_card_visa"}`

// answer is a decoded simulator answer.
type answer struct {
	Status int
	Header http.Header
	ID     string `json:"id"`
	State  string `json:"status"`
	Error  struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// post sends a charge request straight to the handler.
func post(t *testing.T, ctx context.Context, s http.Handler, key, body string) answer {
	t.Helper()
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/charges", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	var a answer
	if w.Body.Len() > 0 {
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &a), w.Body.String())
		require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	}
	a.Status, a.Header = w.Code, w.Header()
	return a
}

func newSim(t *testing.T, cfg sim.Config) *sim.Server {
	t.Helper()
	return sim.New(cfg, zerolog.Nop(), nil)
}

func TestChargeAndReplay(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{Seed: 5})
	first := post(t, t.Context(), s, "k1", okBody)
	require.Equal(t, http.StatusCreated, first.Status)
	require.Equal(t, "succeeded", first.State)
	require.True(t, strings.HasPrefix(first.ID, "ch_sim"), first.ID)
	require.Empty(t, first.Header.Get("Idempotent-Replayed"))

	// Replays bypass the chaos of a first request.
	s.SetConfig(sim.Config{ErrorRate: 1, TimeoutRate: 1, LostResponseRate: 1, DeclineRate: 1})
	again := post(t, t.Context(), s, "k1", okBody)
	require.Equal(t, http.StatusCreated, again.Status)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))

	// Same key, different body.
	reused := post(t, t.Context(), s, "k1", strings.Replace(okBody, "1000", "1001", 1))
	require.Equal(t, http.StatusUnprocessableEntity, reused.Status)
	require.Equal(t, "idempotency_key_reused", reused.Error.Code)

	// The same body with whitespace and fields in another order is the same request.
	reordered := `{ "currency":"EUR", "amount_minor":1000, "payment_method":"pm_card_visa", "merchant_id":"m1", "payment_id":"p1", "extra":true }`
	require.Equal(t, first.ID, post(t, t.Context(), s, "k1", reordered).ID)

	st := s.Stats()
	require.Equal(t, int64(1), st.Charges)
	require.Equal(t, 1, st.Keys)
	require.Equal(t, 1, s.ChargesFor("k1"))
}

func TestDeclines(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{})
	a := post(t, t.Context(), s, "k13", strings.Replace(okBody, "1000", "2013", 1))
	require.Equal(t, http.StatusPaymentRequired, a.Status)
	require.Equal(t, "card_declined", a.Error.Code)

	s.SetConfig(sim.Config{DeclineRate: 1})
	a = post(t, t.Context(), s, "k2", okBody)
	require.Equal(t, http.StatusPaymentRequired, a.Status)
	require.Equal(t, "insufficient_funds", a.Error.Code)
	require.Zero(t, s.Stats().Charges)
	require.Equal(t, 2, s.Stats().Keys)
}

func TestInvalidRequests(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{})
	field := func(from, to string) string { return strings.Replace(okBody, from, to, 1) }
	for _, tt := range []struct {
		name, key, body string
		status          int
	}{
		{"no key", "", okBody, 400},
		{"long key", strings.Repeat("k", 256), okBody, 400},
		{"not json", "k", "charge please", 400},
		{"array", "k", "[]", 400},
		{"null", "k", "null", 400},
		{"no payment id", "k", field(`"payment_id":"p1",`, ""), 400},
		{"no merchant", "k", field(`"merchant_id":"m1",`, ""), 400},
		{"no currency", "k", field(`,"currency":"EUR"`, ""), 400},
		{"no payment method", "k", field(`,"payment_method":"pm_card_visa"`, ""), 400},
		{"no amount", "k", field(`"amount_minor":1000,`, ""), 400},
		{"amount as string", "k", field("1000", `"1000"`), 400},
		{"fractional amount", "k", field("1000", "10.5"), 400},
		{"amount with exponent", "k", field("1000", "1e3"), 400},
		{"zero amount", "k", field("1000", "0"), 400},
		{"negative amount", "k", field("1000", "-5"), 400},
		{"amount overflows int64", "k", field("1000", "9223372036854775808"), 400},
		{"payment id not a string", "k", field(`"p1"`, "1"), 400},
		{"body too large", "k", `{"description":"` + strings.Repeat("x", 70_000) + `"}`, 413},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := post(t, t.Context(), s, tt.key, tt.body)
			require.Equal(t, tt.status, a.Status)
			require.Equal(t, "invalid_request", a.Error.Code)
			require.NotEmpty(t, a.Error.Message)
		})
	}
	require.Zero(t, s.Stats().Keys, "refused requests record nothing")

	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/charges", nil))
	require.Equal(t, http.StatusMethodNotAllowed, w.Code)
}

func TestRateLimited(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{RateLimitRate: 1, RetryAfter: 1500 * time.Millisecond})
	a := post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusTooManyRequests, a.Status)
	require.Equal(t, "2", a.Header.Get("Retry-After"))
	require.Equal(t, "rate_limited", a.Error.Code)

	s.SetConfig(sim.Config{RateLimitRate: 1})
	a = post(t, t.Context(), s, "k", okBody)
	require.Equal(t, "1", a.Header.Get("Retry-After"), "default 1s")
	require.Zero(t, s.Stats().Keys)
}

func TestErrorLeavesNoResult(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{ErrorRate: 1})
	a := post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusServiceUnavailable, a.Status)
	require.Zero(t, s.Stats().Keys)

	s.SetConfig(sim.Config{})
	a = post(t, t.Context(), s, "k", strings.Replace(okBody, "1000", "1001", 1))
	require.Equal(t, http.StatusCreated, a.Status, "nothing was recorded, so even another body is a first request")
}

func TestHangIsBounded(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{TimeoutRate: 1, HangFor: 10 * time.Millisecond})
	a := post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusGatewayTimeout, a.Status)
	require.Equal(t, "timeout", a.Error.Code)
	st := s.Stats()
	require.Zero(t, st.Keys)
	require.Zero(t, st.InFlight)
}

func TestHangEndsWhenClientLeaves(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{TimeoutRate: 1, HangFor: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan answer, 1)
	go func() { done <- post(t, ctx, s, "k", okBody) }()
	require.Eventually(t, func() bool { return s.Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	<-done
	require.Zero(t, s.Stats().InFlight)
	require.Zero(t, s.Stats().Keys)
}

func TestInFlightConflict(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{Latency: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan answer, 1)
	go func() { done <- post(t, ctx, s, "k", okBody) }()
	require.Eventually(t, func() bool { return s.Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)

	a := post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusConflict, a.Status)
	require.Equal(t, "idempotency_key_in_use", a.Error.Code)
	b := post(t, t.Context(), s, "k", strings.Replace(okBody, "1000", "7", 1))
	require.Equal(t, http.StatusUnprocessableEntity, b.Status)

	cancel()
	<-done
	require.Zero(t, s.Stats().InFlight)
}

func TestLostResponse(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{LostResponseRate: 1})

	a := post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusInternalServerError, a.Status)
	require.Equal(t, int64(1), s.Stats().Charges)
	a = post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusCreated, a.Status)
	require.Equal(t, "true", a.Header.Get("Idempotent-Replayed"))

	// A lost decline is a recorded decline, not a charge.
	declined := strings.Replace(okBody, "1000", "113", 1)
	a = post(t, t.Context(), s, "d", declined)
	require.Equal(t, http.StatusInternalServerError, a.Status)
	a = post(t, t.Context(), s, "d", declined)
	require.Equal(t, http.StatusPaymentRequired, a.Status)
	require.Equal(t, int64(1), s.Stats().Charges)
}

func TestStatsEndpoint(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{})
	get := func() map[string]any {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/stats", nil))
		require.Equal(t, http.StatusOK, w.Code)
		var m map[string]any
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &m))
		return m
	}
	require.Equal(t, map[string]any{
		"real_charges": 0.0, "distinct_keys": 0.0, "in_flight": 0.0, "double_charged_payment_ids": []any{},
	}, get())

	require.Equal(t, http.StatusCreated, post(t, t.Context(), s, "k1", okBody).Status)
	require.Equal(t, http.StatusCreated, post(t, t.Context(), s, "k2", okBody).Status) // same payment, new key
	require.Equal(t, map[string]any{
		"real_charges": 2.0, "distinct_keys": 2.0, "in_flight": 0.0, "double_charged_payment_ids": []any{"p1"},
	}, get())
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	s := sim.New(sim.Config{}, zerolog.Nop(), reg)
	post(t, t.Context(), s, "k1", okBody)
	post(t, t.Context(), s, "k1", okBody)
	post(t, t.Context(), s, "k2", strings.Replace(okBody, "1000", "13", 1))
	post(t, t.Context(), s, "", okBody)

	require.Equal(t, map[string]float64{
		"gatewaysim_real_charges_total":         1,
		`gatewaysim_requests_total{code="201"}`: 2,
		`gatewaysim_requests_total{code="400"}`: 1,
		`gatewaysim_requests_total{code="402"}`: 1,
	}, counters(t, reg))
	require.Panics(t, func() { sim.New(sim.Config{}, zerolog.Nop(), reg) }, "metrics registered twice")
}

func TestConfig(t *testing.T) {
	t.Parallel()
	require.NoError(t, sim.Config{}.Validate())
	require.NoError(t, sim.Config{DeclineRate: 1, ErrorRate: 0.5, Latency: time.Second}.Validate())
	err := sim.Config{
		DeclineRate: -0.1, ErrorRate: 1.5, RateLimitRate: math.NaN(), TimeoutRate: 2, LostResponseRate: -1,
		Latency: -1, LatencyJitter: -1, RetryAfter: -1, HangFor: -1,
	}.Validate()
	require.Error(t, err)
	for _, want := range []string{"decline rate", "error rate", "rate limit rate", "timeout rate", "lost response rate",
		"latency must", "latency jitter", "retry after", "hang for"} {
		require.ErrorContains(t, err, want)
	}

	d := sim.Config{}.WithDefaults()
	require.Equal(t, sim.DefaultRetryAfter, d.RetryAfter)
	require.Equal(t, sim.DefaultHangFor, d.HangFor)

	s := newSim(t, sim.Config{Seed: 9, MaxKeys: 5})
	s.SetConfig(sim.Config{ErrorRate: 3, DeclineRate: -1, Latency: -time.Second, Seed: 1, MaxKeys: 1})
	got := s.Config()
	require.Equal(t, sim.Config{ErrorRate: 1, RetryAfter: sim.DefaultRetryAfter, HangFor: sim.DefaultHangFor, Seed: 9, MaxKeys: 5}, got)
}

// counters gathers reg and returns every counter as name{labels} → value.
func counters(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = m.GetCounter().GetValue()
		}
	}
	return out
}

// do sends a request with body to the handler and returns the recorder.
func do(t *testing.T, s http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func TestConfigEndpoint(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{Seed: 3, MaxKeys: 7, DeclineRate: 0.25})

	w := do(t, s, http.MethodGet, "/v1/config", "")
	require.Equal(t, http.StatusOK, w.Code)
	require.JSONEq(t, `{"latency":"0s","latency_jitter":"0s","decline_rate":0.25,"error_rate":0,
		"rate_limit_rate":0,"timeout_rate":0,"lost_response_rate":0,"retry_after":"1s","hang_for":"1m0s",
		"seed":3,"max_keys":7}`, w.Body.String())

	// PUT replaces the whole configuration; seed and max_keys stay.
	w = do(t, s, http.MethodPut, "/v1/config", `{"error_rate":1,"latency":"150ms","retry_after":"2s","seed":99}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	want := sim.Config{ErrorRate: 1, Latency: 150 * time.Millisecond, RetryAfter: 2 * time.Second,
		HangFor: sim.DefaultHangFor, Seed: 3, MaxKeys: 7}
	require.Equal(t, want, s.Config())
	var echoed sim.Config
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &echoed))
	require.Equal(t, want, echoed)

	// The new configuration applies to the next request: an outage.
	require.Equal(t, http.StatusServiceUnavailable, post(t, t.Context(), s, "k1", okBody).Status)

	for name, body := range map[string]string{
		"invalid rate":     `{"error_rate":2}`,
		"bad duration":     `{"latency":"fast"}`,
		"unknown field":    `{"error_rat":1}`,
		"negative latency": `{"latency":"-1s"}`,
		"not json":         `{`,
	} {
		t.Run(name, func(t *testing.T) {
			w := do(t, s, http.MethodPut, "/v1/config", body)
			require.Equal(t, http.StatusBadRequest, w.Code)
			require.Equal(t, want, s.Config(), "a refused configuration changes nothing")
		})
	}

	// Round trip through JSON.
	c := sim.Config{Latency: time.Second, LatencyJitter: 5 * time.Millisecond, DeclineRate: 0.1, ErrorRate: 0.2,
		RateLimitRate: 0.3, TimeoutRate: 0.4, LostResponseRate: 0.5, RetryAfter: 3 * time.Second, HangFor: time.Hour, Seed: 1, MaxKeys: -1}
	b, err := json.Marshal(c)
	require.NoError(t, err)
	var back sim.Config
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, c, back)
}

func TestLookupEndpoint(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{})
	charged := post(t, t.Context(), s, "paid", okBody)
	require.Equal(t, http.StatusCreated, charged.Status)
	require.Equal(t, http.StatusPaymentRequired, post(t, t.Context(), s, "declined", strings.Replace(okBody, "1000", "1013", 1)).Status)
	s.SetConfig(sim.Config{ErrorRate: 1})
	require.Equal(t, http.StatusServiceUnavailable, post(t, t.Context(), s, "failed", okBody).Status)

	w := do(t, s, http.MethodPost, "/v1/charges/lookup", `{"keys":["paid","declined","failed","never"]}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	var ans struct {
		Keys []sim.KeyState `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &ans))
	require.Equal(t, []sim.KeyState{
		{Key: "paid", State: sim.KeyDone, Charged: true, ChargeID: charged.ID},
		{Key: "declined", State: sim.KeyDone, DeclineCode: "card_declined"},
		{Key: "failed", State: sim.KeyUnknown},
		{Key: "never", State: sim.KeyUnknown},
	}, ans.Keys)
	require.Equal(t, ans.Keys[0], s.Lookup("paid"))

	require.Equal(t, http.StatusBadRequest, do(t, s, http.MethodPost, "/v1/charges/lookup", `{"keys":"paid"}`).Code)
	// The charge endpoint is unaffected by the lookup route.
	require.Equal(t, http.StatusCreated, post(t, t.Context(), s, "paid", okBody).Status)
}

func TestLookupInFlight(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{TimeoutRate: 1, HangFor: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/charges", strings.NewReader(okBody))
		r.Header.Set("Idempotency-Key", "hang")
		s.ServeHTTP(httptest.NewRecorder(), r)
	}()
	require.Eventually(t, func() bool { return s.Lookup("hang").State == sim.KeyInFlight }, 5*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	require.Equal(t, sim.KeyUnknown, s.Lookup("hang").State)
}
