package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// TestWorkerRiskCheckBeforeTheCharge: with PAYSTREAM_RISK_CHECKS naming two
// risk simulators, one answering at once and one that would take an hour,
// every payment is decided by the fast one; the denied ones (amounts ending
// in 66) are recorded failed risk_denied and never reach the gateway's
// charge endpoint, the others are charged once; the slow calls are
// cancelled.
func TestWorkerRiskCheckBeforeTheCharge(t *testing.T) {
	t.Parallel()
	gw := sim.New(sim.Config{}, zerolog.Nop(), nil)
	counted := sim.NewMeter(gw) // counts the charge requests reaching it
	gwSrv := httptest.NewServer(counted)
	t.Cleanup(gwSrv.Close)
	fast := httptest.NewServer(sim.New(sim.Config{}, zerolog.Nop(), nil))
	t.Cleanup(fast.Close)
	slowSim := sim.New(sim.Config{RiskLatency: time.Hour}, zerolog.Nop(), nil)
	slow := httptest.NewServer(slowSim)
	t.Cleanup(slow.Close)

	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	env := gatewayEnv(t, ns.URL(), dbURL, gwSrv.URL, "")
	env["PAYSTREAM_RISK_CHECKS"] = slow.URL + "," + fast.URL
	env["PAYSTREAM_RISK_TIMEOUT"] = "5s"
	w := startRun(t, env)
	js := clientJS(t, ns.URL())
	const n = 8
	for i := range n {
		amount := int64(1500 + i)
		if i%2 == 0 {
			amount = int64(1066 + 100*i) // denied
		}
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: fmt.Sprintf("risk%02d", i), MerchantID: "m1",
			AmountMinor: amount, Currency: "EUR", PaymentMethod: "pm_card_visa"})
	}
	pool := newPool(t, dbURL)
	for i := range n {
		id := fmt.Sprintf("risk%02d", i)
		status := waitFinal(t, pool, id)
		var code *string
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT error_code FROM payments WHERE payment_id = $1`, id).Scan(&code))
		if i%2 == 0 {
			require.Equal(t, payment.StatusFailed, status, id)
			require.NotNil(t, code)
			require.Equal(t, payment.ErrorCodeRiskDenied, *code, id)
		} else {
			require.Equal(t, payment.StatusSucceeded, status, id)
		}
	}
	require.EqualValues(t, n/2, gw.Stats().Charges)
	require.EqualValues(t, n/2, counted.Charges(), "a denied payment reached the charge endpoint")
	require.Eventually(t, func() bool {
		st := slowSim.Stats()
		return st.RiskCanceled == st.RiskChecks
	}, 10*time.Second, 10*time.Millisecond, "the slow provider's calls are cancelled")
	w.stop(t)
}
