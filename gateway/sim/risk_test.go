package sim_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
)

func TestRiskEndpoint(t *testing.T) {
	t.Parallel()
	s := newSim(t, sim.Config{Seed: 1})
	w := do(t, s, http.MethodPost, "/v1/risk", `{"payment_id":"p1","merchant_id":"m","amount_minor":1250,"currency":"EUR"}`)
	require.Equal(t, http.StatusOK, w.Code)
	assert.JSONEq(t, `{"decision":"allow"}`, w.Body.String())
	w = do(t, s, http.MethodPost, "/v1/risk", `{"payment_id":"p2","merchant_id":"m","amount_minor":1266,"currency":"EUR"}`)
	require.Equal(t, http.StatusOK, w.Code)
	assert.JSONEq(t, `{"decision":"deny","reason":"amount_rule"}`, w.Body.String())
	for _, bad := range []string{`{`, `{"payment_id":"p","amount_minor":"1"}`, `{"payment_id":"p","amount_minor":0}`, `{"amount_minor":5}`} {
		assert.Equal(t, http.StatusBadRequest, do(t, s, http.MethodPost, "/v1/risk", bad).Code, bad)
	}
	s.SetConfig(sim.Config{RiskErrorRate: 1})
	assert.Equal(t, http.StatusServiceUnavailable,
		do(t, s, http.MethodPost, "/v1/risk", `{"payment_id":"p3","amount_minor":1}`).Code)
	st := s.Stats()
	assert.EqualValues(t, 7, st.RiskChecks)
	assert.EqualValues(t, 1, st.RiskDenied)
	assert.Zero(t, st.Charges, "a risk check charges nothing")

	require.Error(t, sim.Config{RiskErrorRate: 2}.Validate())
	require.Error(t, sim.Config{RiskLatency: -1}.Validate())
}
