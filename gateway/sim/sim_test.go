package sim_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	s.ServeHTTP(w, httptest.NewRequestWithContext(t.Context(), http.MethodDelete, "/v1/charges", nil))
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
	require.Equal(t, http.StatusConflict, post(t, t.Context(), s, "k", okBody).Status)
	require.Equal(t, int64(2), s.Stats().InFlightConflicts, "two 409s; the 422 is no overlap")

	cancel()
	<-done
	require.Zero(t, s.Stats().InFlight)
	s.SetConfig(sim.Config{})
	require.Equal(t, http.StatusCreated, post(t, t.Context(), s, "k2", okBody).Status)
	require.Equal(t, int64(2), s.Stats().InFlightConflicts)
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
		"in_flight_conflicts": 0.0, "lookups": 0.0, "unauthorized": 0.0, "forbidden": 0.0,
		"risk_checks": 0.0, "risk_denied": 0.0, "risk_canceled": 0.0,
	}, get())

	require.Equal(t, http.StatusCreated, post(t, t.Context(), s, "k1", okBody).Status)
	require.Equal(t, http.StatusCreated, post(t, t.Context(), s, "k2", okBody).Status) // same payment, new key
	require.Equal(t, http.StatusOK, find(t, t.Context(), s, "k1").Status)
	require.Equal(t, http.StatusNotFound, find(t, t.Context(), s, "k3").Status)
	require.Equal(t, http.StatusBadRequest, find(t, t.Context(), s, "").Status)
	require.Equal(t, map[string]any{
		"real_charges": 2.0, "distinct_keys": 2.0, "in_flight": 0.0, "double_charged_payment_ids": []any{"p1"},
		"in_flight_conflicts": 0.0, "lookups": 3.0, "unauthorized": 0.0, "forbidden": 0.0,
		"risk_checks": 0.0, "risk_denied": 0.0, "risk_canceled": 0.0,
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
	find(t, t.Context(), s, "k1")
	find(t, t.Context(), s, "k2")
	find(t, t.Context(), s, "k3")

	// A 409: the first request for "slow" is still running.
	s.SetConfig(sim.Config{Latency: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan answer, 1)
	go func() { done <- post(t, ctx, s, "slow", okBody) }()
	require.Eventually(t, func() bool { return s.Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)
	post(t, t.Context(), s, "slow", okBody)
	find(t, t.Context(), s, "slow")
	cancel()
	<-done

	require.Equal(t, map[string]float64{
		"gatewaysim_real_charges_total":              1,
		"gatewaysim_in_flight_conflicts_total":       1,
		`gatewaysim_requests_total{code="201"}`:      2,
		`gatewaysim_requests_total{code="400"}`:      1,
		`gatewaysim_requests_total{code="402"}`:      1,
		`gatewaysim_requests_total{code="409"}`:      1,
		`gatewaysim_requests_total{code="canceled"}`: 1,
		`gatewaysim_lookups_total{code="200"}`:       1,
		`gatewaysim_lookups_total{code="404"}`:       2,
		`gatewaysim_lookups_total{code="409"}`:       1,
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

	s := newSim(t, sim.Config{Seed: 9, MaxKeys: 5, MaxCharges: 50})
	s.SetConfig(sim.Config{ErrorRate: 3, DeclineRate: -1, Latency: -time.Second, Seed: 1, MaxKeys: 1, MaxCharges: 2})
	got := s.Config()
	require.Equal(t, sim.Config{ErrorRate: 1, RetryAfter: sim.DefaultRetryAfter, HangFor: sim.DefaultHangFor, Seed: 9, MaxKeys: 5, MaxCharges: 50}, got)
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
		"seed":3,"max_keys":7,"max_charges":0,"spare_lookups":false,"risk_latency":"0s","risk_error_rate":0}`, w.Body.String())

	// PUT replaces the whole configuration; seed, max_keys and max_charges stay.
	w = do(t, s, http.MethodPut, "/v1/config", `{"error_rate":1,"latency":"150ms","retry_after":"2s","seed":99,"max_charges":1,"spare_lookups":true}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	want := sim.Config{ErrorRate: 1, Latency: 150 * time.Millisecond, RetryAfter: 2 * time.Second,
		HangFor: sim.DefaultHangFor, Seed: 3, MaxKeys: 7, SpareLookups: true}
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
		RateLimitRate: 0.3, TimeoutRate: 0.4, LostResponseRate: 0.5, RetryAfter: 3 * time.Second, HangFor: time.Hour, Seed: 1, MaxKeys: -1,
		MaxCharges: 9, SpareLookups: true}
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

// found is a decoded answer to a lookup.
type found struct {
	Status      int
	ID          string `json:"id"`
	State       string `json:"status"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	PaymentID   string `json:"payment_id"`
	Error       struct {
		Code string `json:"code"`
	} `json:"error"`
}

// find sends a lookup (GET /v1/charges?idempotency_key=key) to the handler;
// an empty key sends none.
func find(t *testing.T, ctx context.Context, s http.Handler, key string) found {
	t.Helper()
	target := "/v1/charges"
	if key != "" {
		target += "?" + url.Values{"idempotency_key": {key}}.Encode()
	}
	return findRaw(t, ctx, s, target)
}

func findRaw(t *testing.T, ctx context.Context, s http.Handler, target string) found {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil))
	var f found
	if w.Body.Len() > 0 {
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &f), w.Body.String())
		require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	}
	f.Status = w.Code
	return f
}

func TestFind(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{MaxKeys: 1})
	const oddKey = "order/42+a%b&c=d~" // every character needs care in a query
	charged := post(t, t.Context(), s, oddKey, okBody)
	require.Equal(t, http.StatusCreated, charged.Status)

	got := find(t, t.Context(), s, oddKey)
	require.Equal(t, found{Status: http.StatusOK, ID: charged.ID, State: "succeeded", AmountMinor: 1000, Currency: "EUR", PaymentID: "p1"}, got)

	// A decline moved no money: no charge under the key.
	require.Equal(t, http.StatusPaymentRequired, post(t, t.Context(), s, "declined", strings.Replace(okBody, "1000", "1013", 1)).Status)
	got = find(t, t.Context(), s, "declined")
	require.Equal(t, http.StatusNotFound, got.Status)
	require.Equal(t, "no_such_charge", got.Error.Code)
	require.Equal(t, http.StatusNotFound, find(t, t.Context(), s, "never").Status)

	// MaxKeys is 1: the charged key is forgotten for idempotency (a new
	// body is a first request again) but its charge is still found.
	require.Equal(t, sim.KeyUnknown, s.Lookup(oddKey).State)
	require.Equal(t, charged.ID, find(t, t.Context(), s, oddKey).ID)

	// A failed charge leaves nothing to find.
	s.SetConfig(sim.Config{ErrorRate: 1, SpareLookups: true})
	require.Equal(t, http.StatusServiceUnavailable, post(t, t.Context(), s, "failed", okBody).Status)
	require.Equal(t, http.StatusNotFound, find(t, t.Context(), s, "failed").Status)

	for name, target := range map[string]string{
		"no key":      "/v1/charges",
		"empty key":   "/v1/charges?idempotency_key=",
		"two keys":    "/v1/charges?idempotency_key=a&idempotency_key=b",
		"space":       "/v1/charges?idempotency_key=a+b",
		"long key":    "/v1/charges?idempotency_key=" + strings.Repeat("k", 256),
		"bad escape":  "/v1/charges?idempotency_key=%zz",
		"other param": "/v1/charges?key=a",
	} {
		t.Run(name, func(t *testing.T) {
			got := findRaw(t, t.Context(), s, target)
			require.Equal(t, http.StatusBadRequest, got.Status)
			require.Equal(t, "invalid_request", got.Error.Code)
		})
	}
	require.Equal(t, int64(1), s.Stats().Charges, "lookups charge nothing")
}

func TestFindInFlight(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{Latency: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan answer, 1)
	go func() { done <- post(t, ctx, s, "k", okBody) }()
	require.Eventually(t, func() bool { return s.Stats().InFlight == 1 }, 5*time.Second, time.Millisecond)

	got := find(t, t.Context(), s, "k")
	require.Equal(t, http.StatusConflict, got.Status, "lookups have no latency")
	require.Equal(t, "idempotency_key_in_use", got.Error.Code)
	require.Zero(t, s.Stats().InFlightConflicts, "only charges count as overlaps")

	cancel()
	<-done
	require.Equal(t, http.StatusNotFound, find(t, t.Context(), s, "k").Status, "the canceled call charged nothing")
}

func TestFindFaults(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{})
	charged := post(t, t.Context(), s, "k", okBody)
	require.Equal(t, http.StatusCreated, charged.Status)

	for _, tt := range []struct {
		name   string
		cfg    sim.Config
		status int
		code   string
	}{
		{"outage", sim.Config{ErrorRate: 1}, http.StatusServiceUnavailable, "service_unavailable"},
		{"hang, then 504", sim.Config{TimeoutRate: 1, HangFor: time.Millisecond}, http.StatusGatewayTimeout, "timeout"},
		{"lost answer", sim.Config{LostResponseRate: 1}, http.StatusInternalServerError, "internal_error"},
		{"never rate limited", sim.Config{RateLimitRate: 1}, http.StatusOK, ""},
		{"no latency", sim.Config{Latency: time.Hour}, http.StatusOK, ""},
		{"declines do not apply", sim.Config{DeclineRate: 1}, http.StatusOK, ""},
		{"spared", sim.Config{ErrorRate: 1, TimeoutRate: 1, LostResponseRate: 1, SpareLookups: true}, http.StatusOK, ""},
	} {
		s.SetConfig(tt.cfg)
		got := find(t, t.Context(), s, "k")
		require.Equal(t, tt.status, got.Status, tt.name)
		require.Equal(t, tt.code, got.Error.Code, tt.name)
		if tt.status == http.StatusOK {
			require.Equal(t, charged.ID, got.ID, tt.name)
		}
	}
	require.Equal(t, int64(1), s.Stats().Charges)
	require.Equal(t, int64(7), s.Stats().Lookups)
}

func TestFindHangEndsWhenClientLeaves(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{TimeoutRate: 1, HangFor: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	got := find(t, ctx, s, "k")
	require.Equal(t, http.StatusOK, got.Status, "the recorder's default: nothing was written")
	require.Equal(t, int64(1), s.Stats().Lookups)
}
