package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"github.com/paystream/paystream/gateway/internal/ledger"
)

// RiskDeniedAmount is the rule of the simulated risk check: an amount whose
// last two digits are 66 is denied (reason "amount_rule"), every other
// request is allowed, so that tests choose the answer with the request.
const RiskDeniedAmount = 66

// wireRiskQuery is the body of POST /v1/risk: what a risk check sees of a
// payment — never the payment method, never an idempotency key.
type wireRiskQuery struct {
	PaymentID   string          `json:"payment_id"`
	MerchantID  string          `json:"merchant_id"`
	CustomerID  string          `json:"customer_id"`
	AmountMinor json.RawMessage `json:"amount_minor"`
	Currency    string          `json:"currency"`
}

// riskAnswer is the body of a 200 answer of POST /v1/risk.
type riskAnswer struct {
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
}

// handleRisk serves POST /v1/risk, a side-effect-free risk check: 200
// {"decision":"allow"} or {"decision":"deny","reason":"amount_rule"} (an
// amount ending in 66), after Config.RiskLatency; 503 when
// Config.RiskErrorRate draws a fault; 400 for a body that is not a query.
// It charges nothing and remembers nothing but its counters (Stats.Risk*).
func (s *Server) handleRisk(w http.ResponseWriter, r *http.Request) {
	s.riskChecks.Add(1)
	if !s.authorized(w, r, func(status int, v any) { writeJSON(w, status, v) }) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var q wireRiskQuery
	if err == nil {
		err = json.Unmarshal(body, &q)
	}
	amount, aerr := strconv.ParseInt(string(q.AmountMinor), 10, 64)
	if err != nil || aerr != nil || amount <= 0 || q.PaymentID == "" {
		writeJSON(w, http.StatusBadRequest, errorFor(http.StatusBadRequest, ledger.CodeInvalidRequest,
			"body must be a risk query with a payment_id and an integer amount_minor > 0"))
		return
	}
	s.mu.Lock()
	latency, fail := s.cfg.RiskLatency, s.cfg.RiskErrorRate > 0 && s.rng.Float64() < s.cfg.RiskErrorRate
	s.mu.Unlock()
	if !wait(r.Context(), latency) {
		s.riskCanceled.Add(1)
		return
	}
	if fail {
		writeJSON(w, http.StatusServiceUnavailable, errorFor(http.StatusServiceUnavailable, ledger.CodeUnavailable, "simulated risk outage"))
		return
	}
	ans := riskAnswer{Decision: "allow"}
	if amount%100 == RiskDeniedAmount {
		ans = riskAnswer{Decision: "deny", Reason: "amount_rule"}
		s.riskDenied.Add(1)
	}
	writeJSON(w, http.StatusOK, ans)
}
