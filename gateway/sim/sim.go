// Package sim is an HTTP payment gateway simulator speaking the API of
// docs/contract.md §5, for local runs (cmd/gatewaysim) and integration tests
// (mounted on an httptest.Server).
//
// It honours Idempotency-Key like a real gateway, with the same ledger as
// gateway.Fake: the first completed answer for a key is replayed for later
// requests with the same key and body (a real charge happens once per key),
// the same key with a different body gets 422 idempotency_key_reused, and a
// key whose first request is still running gets 409. Amounts ending in 13 are
// declined with card_declined. Configurable chaos — latency, declines, 5xx,
// 429, hangs and lost responses — changes at run time with SetConfig.
//
// Like a real gateway it forgets idempotency keys (Config.MaxKeys) long
// before it forgets charges (Config.MaxCharges): the lookup finds a charge
// by its key after the key itself is gone, and a forgotten key charges anew.
//
// Endpoints:
//
//	POST /v1/charges         charge (docs/contract.md §5)
//	GET  /v1/charges?idempotency_key=<key>
//	                         lookup (docs/contract.md §5): 200 with the charge
//	                         made under the key ({"id","status":"succeeded",
//	                         "amount_minor","currency","payment_id"}); 404
//	                         no_such_charge when none was made (a decline moves
//	                         no money, so a declined key is 404 too) and none is
//	                         in flight; 409 while the key's first charge request
//	                         runs; 400 for a missing or invalid key; 503, 504 or
//	                         500 when a fault is drawn (Config.SpareLookups)
//	GET  /v1/stats           {"real_charges":…,"distinct_keys":…,"in_flight":…,
//	                         "double_charged_payment_ids":[…],
//	                         "in_flight_conflicts":…,"lookups":…,
//	                         "unauthorized":…,"forbidden":…,"risk_checks":…,
//	                         "risk_denied":…,"risk_canceled":…}
//	GET  /v1/config          the current Config as JSON (durations as Go duration strings)
//	PUT  /v1/config          replace the Config (fields left out become zero; seed,
//	                         max_keys and max_charges are ignored); 400 with every
//	                         problem when invalid
//	POST /v1/risk            a side-effect-free risk check (risk.go): {"decision":
//	                         "allow"} or, for an amount ending in 66, {"decision":
//	                         "deny","reason":"amount_rule"}; Config.RiskLatency and
//	                         RiskErrorRate slow it down or make it fail
//	POST /v1/charges/lookup  {"keys":[…]} → {"keys":[{"key":…,"state":…,"charge_id":…},…]}:
//	                         what the simulator's idempotency layer holds for each
//	                         key, so that tests can check a recorded charge id
//	                         against the gateway's; not the lookup of §5
//
// The config, stats and POST lookup endpoints are test and operator tools:
// they let a fault-injection suite switch outages, slowness and rate limiting
// on and off while a load runs, and check outcomes from the outside.
// in_flight_conflicts counts the charge requests answered 409, each an
// overlap of two calls for one key.
//
// With RequireKeys the two endpoints of docs/contract.md §5 require
// "Authorization: Bearer <key>" with an accepted key (a KeysFile rotates
// them without a restart): 401 unauthorized without one, 403 forbidden for a
// revoked one, counted in Stats. The test and operator endpoints stay open.
//
// /metrics and /healthz are mounted by the binary, not here.
package sim

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/paystream/paystream/gateway/internal/ledger"
)

// Defaults of Config.
const (
	DefaultRetryAfter = time.Second
	DefaultHangFor    = time.Minute
)

// maxBodyBytes bounds a charge request body.
const maxBodyBytes = 64 << 10

// Config is the behaviour of the simulator. The zero value answers at once,
// charges every valid request and declines amounts ending in 13. Rates are
// fractions from 0 to 1 of the requests that pass validation, drawn
// independently in this order: RateLimitRate, then (for a key's first
// request) ErrorRate, TimeoutRate, LostResponseRate and DeclineRate.
//
// Lookups draw ErrorRate (503), TimeoutRate (a hang, then 504) and
// LostResponseRate (500 instead of the answer) too, unless SpareLookups is
// set; they are never rate limited (the lookup table of docs/contract.md §5
// has no 429) and have no Latency.
type Config struct {
	// Latency is how long the first request for a key takes before it is
	// answered (replays and refusals answer at once). Zero means none.
	Latency time.Duration
	// LatencyJitter adds a uniformly drawn extra delay in [0, LatencyJitter).
	LatencyJitter time.Duration
	// DeclineRate declines (402 insufficient_funds) on top of the amount-13
	// rule.
	DeclineRate float64
	// ErrorRate answers 503 without charging; the key keeps no result.
	ErrorRate float64
	// RateLimitRate answers 429 with Retry-After before looking at the key.
	RateLimitRate float64
	// TimeoutRate hangs without charging until the client gives up, or for
	// HangFor, then answers 504; the key keeps no result.
	TimeoutRate float64
	// LostResponseRate charges (records the result) and then answers 500,
	// as if the response were lost: a retry with the same key and body gets
	// the stored answer.
	LostResponseRate float64
	// RetryAfter is the Retry-After of 429 answers, rounded up to whole
	// seconds. Default DefaultRetryAfter (1s).
	RetryAfter time.Duration
	// HangFor bounds a TimeoutRate hang. Default DefaultHangFor (1m).
	HangFor time.Duration
	// Seed seeds the random draws and the charge id prefix; zero means a
	// random seed. Read by New only.
	Seed int64
	// MaxKeys is how many completed keys are remembered before the oldest
	// are forgotten, like a real gateway that keeps keys for a day. Zero
	// means 1,048,576; negative means no limit. Read by New only.
	MaxKeys int
	// MaxCharges is how many charges a lookup still finds, the oldest
	// forgotten first, like a real gateway that keeps charges searchable for
	// months after it forgot their keys. Zero means 4,194,304 (about 100
	// bytes each: 400 MB when full); negative means no limit. Never fewer
	// than MaxKeys; no limit when MaxKeys has none. Read by New only.
	MaxCharges int
	// SpareLookups exempts lookups (GET /v1/charges?idempotency_key=) from
	// ErrorRate, TimeoutRate and LostResponseRate: they answer at once and
	// truthfully. False, the default, lets lookups fail like charges, so
	// that an outage hides charges from lookups too.
	SpareLookups bool
	// RiskLatency is how long every risk check (POST /v1/risk) takes before
	// it is answered; a client that gives up first is counted in
	// Stats.RiskCanceled. Zero means none.
	RiskLatency time.Duration
	// RiskErrorRate answers risk checks 503 (after RiskLatency).
	RiskErrorRate float64
}

// WithDefaults returns a copy of c with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.HangFor == 0 {
		c.HangFor = DefaultHangFor
	}
	return c
}

// Validate returns every problem with c, joined: rates must lie in 0–1 and
// durations must not be negative.
func (c Config) Validate() error {
	var errs []error
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"decline rate", c.DeclineRate},
		{"error rate", c.ErrorRate},
		{"rate limit rate", c.RateLimitRate},
		{"timeout rate", c.TimeoutRate},
		{"lost response rate", c.LostResponseRate},
		{"risk error rate", c.RiskErrorRate},
	} {
		if !(r.v >= 0 && r.v <= 1) {
			errs = append(errs, fmt.Errorf("%s must be between 0 and 1, got %v", r.name, r.v))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"latency", c.Latency},
		{"latency jitter", c.LatencyJitter},
		{"retry after", c.RetryAfter},
		{"hang for", c.HangFor},
		{"risk latency", c.RiskLatency},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// sanitize fills in defaults and clamps out-of-range values, so that a
// Server never runs with an invalid Config.
func (c Config) sanitize() Config {
	c = c.WithDefaults()
	for _, r := range []*float64{&c.DeclineRate, &c.ErrorRate, &c.RateLimitRate, &c.TimeoutRate, &c.LostResponseRate, &c.RiskErrorRate} {
		if !(*r >= 0) { // negative or NaN
			*r = 0
		}
		*r = min(*r, 1)
	}
	for _, d := range []*time.Duration{&c.Latency, &c.LatencyJitter, &c.RiskLatency} {
		*d = max(*d, 0)
	}
	if c.RetryAfter < 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.HangFor < 0 {
		c.HangFor = DefaultHangFor
	}
	return c
}

// Server is the simulator, an http.Handler. It is safe for concurrent use.
type Server struct {
	logger    zerolog.Logger
	ledger    *ledger.Ledger
	mux       *http.ServeMux
	requests  *prometheus.CounterVec
	charges   prometheus.Counter
	conflicts prometheus.Counter
	lookupsBy *prometheus.CounterVec

	inFlightConflicts atomic.Int64
	lookups           atomic.Int64
	unauthorized      atomic.Int64
	forbidden         atomic.Int64
	riskChecks        atomic.Int64
	riskDenied        atomic.Int64
	riskCanceled      atomic.Int64
	keys              atomic.Pointer[KeySource] // nil: the API is open
	traces            traceLog                  // traceparents received, by key (trace.go)

	mu  sync.Mutex // guards cfg and rng
	cfg Config
	rng *rand.Rand
}

// New returns a simulator with configuration cfg (out-of-range values are
// clamped; call cfg.Validate first to refuse them). Its metrics,
// gatewaysim_requests_total{code}, gatewaysim_real_charges_total,
// gatewaysim_in_flight_conflicts_total and gatewaysim_lookups_total{code},
// are registered with reg unless reg is nil; New panics if they are already
// registered there.
func New(cfg Config, logger zerolog.Logger, reg prometheus.Registerer) *Server {
	seed := uint64(cfg.Seed)
	if cfg.Seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:]) // never fails (crypto/rand panics instead)
		seed = binary.LittleEndian.Uint64(b[:])
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := &Server{
		logger: logger.With().Str("component", "gatewaysim").Logger(),
		ledger: ledger.New(ledger.Config{
			ChargePrefix: fmt.Sprintf("sim%08x_", rng.Uint32()),
			MaxKeys:      cfg.MaxKeys,
			MaxCharges:   cfg.MaxCharges,
		}),
		mux: http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewaysim_requests_total",
			Help: "Charge requests answered by the gateway simulator, by HTTP status code (\"canceled\" when the client went away).",
		}, []string{"code"}),
		charges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatewaysim_real_charges_total",
			Help: "Real charges made by the gateway simulator (the first success per idempotency key).",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatewaysim_in_flight_conflicts_total",
			Help: "Charge requests answered 409 because the first request with the same idempotency key was still running.",
		}),
		lookupsBy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewaysim_lookups_total",
			Help: "Lookups (GET /v1/charges?idempotency_key=) answered by the gateway simulator, by HTTP status code (\"canceled\" when the client went away).",
		}, []string{"code"}),
		cfg: cfg.sanitize(),
		rng: rng,
	}
	if reg != nil {
		reg.MustRegister(s.requests, s.charges, s.conflicts, s.lookupsBy)
	}
	s.mux.HandleFunc("POST /v1/charges", s.handleCharge)
	s.mux.HandleFunc("GET /v1/charges", s.handleFind)
	s.mux.HandleFunc("GET /v1/stats", s.handleStats)
	s.mux.HandleFunc("GET /v1/config", s.handleGetConfig)
	s.mux.HandleFunc("PUT /v1/config", s.handlePutConfig)
	s.mux.HandleFunc("POST /v1/charges/lookup", s.handleKeyStates)
	s.mux.HandleFunc("POST /v1/risk", s.handleRisk)
	return s
}

// ServeHTTP serves the simulator's endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetConfig changes the simulator's behaviour for requests that arrive from
// now on (Seed, MaxKeys and MaxCharges are ignored). Out-of-range values are clamped.
func (s *Server) SetConfig(cfg Config) {
	cfg = cfg.sanitize()
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg.Seed, cfg.MaxKeys, cfg.MaxCharges = s.cfg.Seed, s.cfg.MaxKeys, s.cfg.MaxCharges
	s.cfg = cfg
}

// Config returns the current configuration, defaults filled in.
func (s *Server) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Stats are the simulator's counters, served on GET /v1/stats, with which
// tests and the audit check that no payment was charged twice.
type Stats struct {
	// Charges is the number of real charges: the first success per key.
	Charges int64 `json:"real_charges"`
	// Keys is the number of distinct idempotency keys that got a result.
	Keys int `json:"distinct_keys"`
	// InFlight is the number of keys whose first request is still running.
	InFlight int `json:"in_flight"`
	// DoubleCharged lists the payment ids charged under more than one key
	// (at most 10,000 of them); empty when all is well.
	DoubleCharged []string `json:"double_charged_payment_ids"`
	// InFlightConflicts is the number of charge requests answered 409
	// because the first request with the same key was still running: two
	// calls for one key overlapped.
	InFlightConflicts int64 `json:"in_flight_conflicts"`
	// Lookups is the number of lookup requests (GET
	// /v1/charges?idempotency_key=) received, whatever their answer.
	Lookups int64 `json:"lookups"`
	// Unauthorized is the number of charges and lookups refused 401: no API
	// key, or one the simulator does not accept (see RequireKeys).
	Unauthorized int64 `json:"unauthorized"`
	// Forbidden is the number of charges and lookups refused 403 for a
	// revoked API key.
	Forbidden int64 `json:"forbidden"`
	// RiskChecks is the number of risk checks (POST /v1/risk) received,
	// RiskDenied those answered deny, RiskCanceled those whose client went
	// away before the answer (a fan-out's cancelled losers).
	RiskChecks   int64 `json:"risk_checks"`
	RiskDenied   int64 `json:"risk_denied"`
	RiskCanceled int64 `json:"risk_canceled"`
}

// Stats returns a snapshot of the simulator's counters.
func (s *Server) Stats() Stats {
	st := s.ledger.Stats()
	return Stats{Charges: st.Charges, Keys: st.Keys, InFlight: st.InFlight, DoubleCharged: st.DoubleCharged,
		InFlightConflicts: s.inFlightConflicts.Load(), Lookups: s.lookups.Load(),
		Unauthorized: s.unauthorized.Load(), Forbidden: s.forbidden.Load(),
		RiskChecks: s.riskChecks.Load(), RiskDenied: s.riskDenied.Load(), RiskCanceled: s.riskCanceled.Load()}
}

// ChargesFor returns the number of real charges made for the idempotency
// key: 0 or 1, since the simulator charges at most once per key it
// remembers.
func (s *Server) ChargesFor(key string) int { return s.ledger.ChargesFor(key) }

// Key states of KeyState.State.
const (
	KeyUnknown  = "unknown"   // never seen, aborted, or forgotten
	KeyInFlight = "in_flight" // the key's first request is running
	KeyDone     = "done"      // a result is recorded
)

// KeyState is what the simulator holds for one idempotency key.
type KeyState struct {
	Key string `json:"key"`
	// State is KeyUnknown, KeyInFlight or KeyDone.
	State string `json:"state"`
	// Charged is true when the recorded result is a charge.
	Charged bool `json:"charged"`
	// ChargeID is the id of the charge, when Charged.
	ChargeID string `json:"charge_id,omitempty"`
	// DeclineCode is the code of a recorded decline.
	DeclineCode string `json:"decline_code,omitempty"`
	// TraceParents are the W3C traceparent headers the key's charges and
	// lookups carried, oldest first (see Server.TraceParents).
	TraceParents []string `json:"traceparents,omitempty"`
}

// Lookup returns what the simulator's idempotency layer holds for the key
// (the test tool of POST /v1/charges/lookup, not the lookup of
// docs/contract.md §5: a forgotten key is KeyUnknown here, while GET
// /v1/charges?idempotency_key= still finds its charge).
func (s *Server) Lookup(key string) KeyState {
	state, res := s.ledger.Lookup(key)
	ks := KeyState{Key: key, State: KeyUnknown, TraceParents: s.TraceParents(key)}
	switch state {
	case ledger.Running:
		ks.State = KeyInFlight
	case ledger.Done:
		ks.State = KeyDone
		ks.Charged, ks.ChargeID, ks.DeclineCode = res.Charged, res.ChargeID, res.DeclineCode
	}
	return ks
}

// plan is the chaos drawn for one request.
type plan struct {
	latency    time.Duration
	rateLimit  bool
	fail       bool
	hang       bool
	lost       bool
	decline    bool
	retryAfter time.Duration
	hangFor    time.Duration
}

func (s *Server) draw() plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cfg
	p := plan{latency: c.Latency, retryAfter: c.RetryAfter, hangFor: c.HangFor}
	if c.LatencyJitter > 0 {
		p.latency += time.Duration(s.rng.Int64N(int64(c.LatencyJitter)))
	}
	chance := func(rate float64) bool { return rate > 0 && s.rng.Float64() < rate }
	p.rateLimit = chance(c.RateLimitRate)
	p.fail = chance(c.ErrorRate)
	p.hang = chance(c.TimeoutRate)
	p.lost = chance(c.LostResponseRate)
	p.decline = chance(c.DeclineRate)
	return p
}

// drawLookup draws the faults of one lookup: none when lookups are spared,
// and never latency or rate limiting.
func (s *Server) drawLookup() plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cfg
	p := plan{hangFor: c.HangFor}
	if c.SpareLookups {
		return p
	}
	chance := func(rate float64) bool { return rate > 0 && s.rng.Float64() < rate }
	p.fail = chance(c.ErrorRate)
	p.hang = chance(c.TimeoutRate)
	p.lost = chance(c.LostResponseRate)
	return p
}

// wireCharge is the request body of POST /v1/charges.
type wireCharge struct {
	PaymentID     string          `json:"payment_id"`
	MerchantID    string          `json:"merchant_id"`
	AmountMinor   json.RawMessage `json:"amount_minor"`
	Currency      string          `json:"currency"`
	PaymentMethod string          `json:"payment_method"`
	Description   string          `json:"description"`
}

// decode reads and checks a charge request; problem is "" when it is valid.
func decode(key string, body []byte) (f ledger.ChargeFields, problem string) {
	var wc wireCharge
	if err := json.Unmarshal(body, &wc); err != nil {
		return f, "body is not a valid charge object"
	}
	f = ledger.ChargeFields{
		Key:           key,
		PaymentID:     wc.PaymentID,
		MerchantID:    wc.MerchantID,
		Currency:      wc.Currency,
		PaymentMethod: wc.PaymentMethod,
		Description:   wc.Description,
	}
	// amount_minor must be a JSON integer literal: no fraction, no exponent,
	// no string.
	amount, err := strconv.ParseInt(string(wc.AmountMinor), 10, 64)
	if err != nil {
		return f, "amount_minor must be an integer > 0"
	}
	f.AmountMinor = amount
	return f, f.Validate()
}

func (s *Server) handleCharge(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r, func(status int, v any) { s.write(w, status, v) }) {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	s.traces.record(key, r.Header.Get("Traceparent"))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.fail(w, http.StatusRequestEntityTooLarge, ledger.CodeInvalidRequest, "request body too large", 0)
			return
		}
		s.fail(w, http.StatusBadRequest, ledger.CodeInvalidRequest, "cannot read request body", 0)
		return
	}
	f, problem := decode(key, body)
	if problem != "" {
		s.fail(w, http.StatusBadRequest, ledger.CodeInvalidRequest, problem, 0)
		return
	}
	log := s.logger.With().Str("idempotency_key", key).Str("payment_id", f.PaymentID).Logger()

	p := s.draw()
	if p.rateLimit {
		s.fail(w, http.StatusTooManyRequests, ledger.CodeRateLimited, "too many requests", p.retryAfter)
		return
	}

	verdict, stored := s.ledger.Begin(key, f.Fingerprint())
	switch verdict {
	case ledger.Mismatch:
		s.fail(w, http.StatusUnprocessableEntity, ledger.CodeIdempotencyKeyReused,
			"idempotency key reused with a different request", 0)
		return
	case ledger.InFlight:
		s.inFlightConflicts.Add(1)
		s.conflicts.Inc()
		s.fail(w, http.StatusConflict, ledger.CodeIdempotencyKeyInUse,
			"a request with this idempotency key is in progress", 0)
		return
	case ledger.Replay:
		w.Header().Set("Idempotent-Replayed", "true")
		s.answer(w, f, stored)
		return
	}

	// Started: this request owns the key and must record a result or abort.
	ctx := r.Context()
	if !wait(ctx, p.latency) {
		s.ledger.Abort(key)
		s.requests.WithLabelValues("canceled").Inc()
		log.Debug().Msg("client went away during latency")
		return
	}
	switch {
	case p.fail:
		s.ledger.Abort(key)
		s.fail(w, http.StatusServiceUnavailable, ledger.CodeUnavailable, "simulated outage", 0)
		return
	case p.hang:
		gone := !wait(ctx, p.hangFor)
		s.ledger.Abort(key)
		if gone {
			s.requests.WithLabelValues("canceled").Inc()
			log.Debug().Msg("client gave up on a hanging request")
			return
		}
		s.fail(w, http.StatusGatewayTimeout, ledger.CodeTimeout, "simulated timeout", 0)
		return
	}

	var res ledger.Result
	switch {
	case ledger.DeclinesAmount(f.AmountMinor):
		res = s.ledger.Decline(key, ledger.CodeCardDeclined)
	case p.decline:
		res = s.ledger.Decline(key, ledger.CodeRandomDecline)
	default:
		res = s.ledger.Charge(f)
		s.charges.Inc()
	}
	log.Debug().Bool("charged", res.Charged).Str("charge_id", res.ChargeID).
		Str("decline_code", res.DeclineCode).Bool("response_lost", p.lost).Msg("charge completed")
	if p.lost {
		s.fail(w, http.StatusInternalServerError, ledger.CodeResponseLost, "charged but response lost", 0)
		return
	}
	s.answer(w, f, res)
}

// wait waits for d or until ctx ends; it reports whether ctx is still live.
func wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-ctx.Done():
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// chargeAnswer is the body of a 200/201 answer.
type chargeAnswer struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Status      string `json:"status"`
	PaymentID   string `json:"payment_id"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

type errorAnswer struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// answer writes a recorded result: 201 with the charge, or 402 with the
// decline code.
func (s *Server) answer(w http.ResponseWriter, f ledger.ChargeFields, res ledger.Result) {
	if !res.Charged {
		s.write(w, http.StatusPaymentRequired, errorAnswer{Error: errorBody{
			Type: "card_error", Code: res.DeclineCode, Message: "the card was declined",
		}})
		return
	}
	s.write(w, http.StatusCreated, chargeAnswer{
		ID:          res.ChargeID,
		Object:      "charge",
		Status:      "succeeded",
		PaymentID:   f.PaymentID,
		AmountMinor: f.AmountMinor,
		Currency:    f.Currency,
	})
}

// fail writes an error answer to a charge, with a Retry-After in whole
// seconds when retryAfter > 0.
func (s *Server) fail(w http.ResponseWriter, status int, code, msg string, retryAfter time.Duration) {
	if retryAfter > 0 {
		secs := (retryAfter + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	s.write(w, status, errorFor(status, code, msg))
}

// errorFor returns the body of an error answer.
func errorFor(status int, code, msg string) errorAnswer {
	typ := "invalid_request_error"
	if status >= 500 {
		typ = "api_error"
	} else if status == http.StatusTooManyRequests {
		typ = "rate_limit_error"
	} else if status == http.StatusConflict || status == http.StatusUnprocessableEntity {
		typ = "idempotency_error"
	}
	return errorAnswer{Error: errorBody{Type: typ, Code: code, Message: msg}}
}

// write writes an answer to a charge.
func (s *Server) write(w http.ResponseWriter, status int, v any) {
	s.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	writeJSON(w, status, v)
}

// handleFind serves the lookup of docs/contract.md §5: GET
// /v1/charges?idempotency_key=<key> answers 200 with the charge made under
// the key (kept far longer than the key itself, Config.MaxCharges), 409
// while the key's first charge request runs and no charge is kept for it,
// and 404 no_such_charge otherwise: never charged, declined (a decline
// moves no money), failed or forgotten. A missing, repeated or invalid key
// is 400. Faults are drawn as Config says.
func (s *Server) handleFind(w http.ResponseWriter, r *http.Request) {
	s.lookups.Add(1)
	reply := func(status int, v any) {
		s.lookupsBy.WithLabelValues(strconv.Itoa(status)).Inc()
		writeJSON(w, status, v)
	}
	if !s.authorized(w, r, reply) {
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	keys := q["idempotency_key"]
	problem := ""
	switch {
	case err != nil:
		problem = "query is not valid"
	case len(keys) != 1:
		problem = "exactly one idempotency_key is required"
	default:
		if p := ledger.ValidateKey(keys[0]); p != "" {
			problem = "idempotency_key: " + p
		}
	}
	if problem != "" {
		reply(http.StatusBadRequest, errorFor(http.StatusBadRequest, ledger.CodeInvalidRequest, problem))
		return
	}
	key := keys[0]
	s.traces.record(key, r.Header.Get("Traceparent"))
	log := s.logger.With().Str("idempotency_key", key).Logger()

	p := s.drawLookup()
	switch {
	case p.fail:
		reply(http.StatusServiceUnavailable, errorFor(http.StatusServiceUnavailable, ledger.CodeUnavailable, "simulated outage"))
		return
	case p.hang:
		if !wait(r.Context(), p.hangFor) {
			s.lookupsBy.WithLabelValues("canceled").Inc()
			log.Debug().Msg("client gave up on a hanging lookup")
			return
		}
		reply(http.StatusGatewayTimeout, errorFor(http.StatusGatewayTimeout, ledger.CodeTimeout, "simulated timeout"))
		return
	}

	c, found, inFlight := s.ledger.Find(key)
	log.Debug().Bool("found", found).Bool("in_flight", inFlight).Bool("response_lost", p.lost).Msg("lookup")
	switch {
	case p.lost:
		reply(http.StatusInternalServerError, errorFor(http.StatusInternalServerError, ledger.CodeResponseLost, "lookup answer lost"))
	case found:
		reply(http.StatusOK, chargeAnswer{
			ID:          c.ChargeID,
			Object:      "charge",
			Status:      "succeeded",
			PaymentID:   c.PaymentID,
			AmountMinor: c.AmountMinor,
			Currency:    c.Currency,
		})
	case inFlight:
		reply(http.StatusConflict, errorFor(http.StatusConflict, ledger.CodeIdempotencyKeyInUse,
			"a request with this idempotency key is in progress"))
	default:
		reply(http.StatusNotFound, errorFor(http.StatusNotFound, ledger.CodeNoSuchCharge, "no charge under this idempotency key"))
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // cannot happen: only plain structs are written
		http.Error(w, "encode answer", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleGetConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Config())
}

func (s *Server) handlePutConfig(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorAnswer{Error: errorBody{Type: "invalid_request_error", Code: ledger.CodeInvalidRequest, Message: "cannot read request body"}})
		return
	}
	var cfg Config
	if err := json.Unmarshal(body, &cfg); err != nil {
		writeJSON(w, http.StatusBadRequest, errorAnswer{Error: errorBody{Type: "invalid_request_error", Code: ledger.CodeInvalidRequest, Message: err.Error()}})
		return
	}
	if err := cfg.Validate(); err != nil {
		writeJSON(w, http.StatusBadRequest, errorAnswer{Error: errorBody{Type: "invalid_request_error", Code: ledger.CodeInvalidRequest, Message: err.Error()}})
		return
	}
	s.SetConfig(cfg)
	cur := s.Config()
	s.logger.Info().Dur("latency", cur.Latency).Dur("latency_jitter", cur.LatencyJitter).
		Float64("decline_rate", cur.DeclineRate).Float64("error_rate", cur.ErrorRate).
		Float64("rate_limit_rate", cur.RateLimitRate).Float64("timeout_rate", cur.TimeoutRate).
		Float64("lost_response_rate", cur.LostResponseRate).Bool("spare_lookups", cur.SpareLookups).
		Msg("configuration changed")
	writeJSON(w, http.StatusOK, cur)
}

// maxLookupBytes bounds a lookup request body (about 100,000 keys).
const maxLookupBytes = 16 << 20

// lookupRequest is the body of POST /v1/charges/lookup, and lookupAnswer
// its answer, in the same order.
type lookupRequest struct {
	Keys []string `json:"keys"`
}

type lookupAnswer struct {
	Keys []KeyState `json:"keys"`
}

func (s *Server) handleKeyStates(w http.ResponseWriter, r *http.Request) {
	var req lookupRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLookupBytes))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorAnswer{Error: errorBody{Type: "invalid_request_error", Code: ledger.CodeInvalidRequest, Message: "body must be {\"keys\":[...]} of at most 16 MiB"}})
		return
	}
	ans := lookupAnswer{Keys: make([]KeyState, len(req.Keys))}
	for i, k := range req.Keys {
		ans.Keys[i] = s.Lookup(k)
	}
	writeJSON(w, http.StatusOK, ans)
}

// configJSON is the JSON form of Config: durations as Go duration strings
// ("250ms"), rates as numbers.
type configJSON struct {
	Latency          string  `json:"latency"`
	LatencyJitter    string  `json:"latency_jitter"`
	DeclineRate      float64 `json:"decline_rate"`
	ErrorRate        float64 `json:"error_rate"`
	RateLimitRate    float64 `json:"rate_limit_rate"`
	TimeoutRate      float64 `json:"timeout_rate"`
	LostResponseRate float64 `json:"lost_response_rate"`
	RetryAfter       string  `json:"retry_after"`
	HangFor          string  `json:"hang_for"`
	Seed             int64   `json:"seed"`
	MaxKeys          int     `json:"max_keys"`
	MaxCharges       int     `json:"max_charges"`
	SpareLookups     bool    `json:"spare_lookups"`
	RiskLatency      string  `json:"risk_latency"`
	RiskErrorRate    float64 `json:"risk_error_rate"`
}

// MarshalJSON encodes c with durations as Go duration strings.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(configJSON{
		Latency:          c.Latency.String(),
		LatencyJitter:    c.LatencyJitter.String(),
		DeclineRate:      c.DeclineRate,
		ErrorRate:        c.ErrorRate,
		RateLimitRate:    c.RateLimitRate,
		TimeoutRate:      c.TimeoutRate,
		LostResponseRate: c.LostResponseRate,
		RetryAfter:       c.RetryAfter.String(),
		HangFor:          c.HangFor.String(),
		Seed:             c.Seed,
		MaxKeys:          c.MaxKeys,
		MaxCharges:       c.MaxCharges,
		SpareLookups:     c.SpareLookups,
		RiskLatency:      c.RiskLatency.String(),
		RiskErrorRate:    c.RiskErrorRate,
	})
}

// UnmarshalJSON decodes the form MarshalJSON writes. Missing fields and
// empty durations are zero; unknown fields and unparsable durations are
// errors.
func (c *Config) UnmarshalJSON(b []byte) error {
	var j configJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("gateway simulator config: %w", err)
	}
	out := Config{
		DeclineRate:      j.DeclineRate,
		ErrorRate:        j.ErrorRate,
		RateLimitRate:    j.RateLimitRate,
		TimeoutRate:      j.TimeoutRate,
		LostResponseRate: j.LostResponseRate,
		Seed:             j.Seed,
		MaxKeys:          j.MaxKeys,
		MaxCharges:       j.MaxCharges,
		SpareLookups:     j.SpareLookups,
		RiskErrorRate:    j.RiskErrorRate,
	}
	var errs []error
	for _, d := range []struct {
		name string
		s    string
		dst  *time.Duration
	}{
		{"latency", j.Latency, &out.Latency},
		{"latency_jitter", j.LatencyJitter, &out.LatencyJitter},
		{"retry_after", j.RetryAfter, &out.RetryAfter},
		{"hang_for", j.HangFor, &out.HangFor},
		{"risk_latency", j.RiskLatency, &out.RiskLatency},
	} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.name, err))
			continue
		}
		*d.dst = v
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gateway simulator config: %w", err)
	}
	*c = out
	return nil
}
