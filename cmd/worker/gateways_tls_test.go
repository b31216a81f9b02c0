package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// TestWorkerPaysOverTLSToTwoGateways: with PAYSTREAM_GATEWAYS naming two
// simulators that serve HTTPS with a throwaway CA's certificate and require
// a client certificate, PAYSTREAM_GATEWAY_CA_FILE and the client
// certificate apply to both (they used to be refused against the empty
// PAYSTREAM_GATEWAY_URL): every payment succeeds, and both gateways charge.
func TestWorkerPaysOverTLSToTwoGateways(t *testing.T) {
	t.Parallel()
	const key = "sk_tls_two_9a8b7c"
	f := natstest.NewTLSFiles(t)
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	require.NoError(t, err)
	caPEM, err := os.ReadFile(f.CA)
	require.NoError(t, err)
	clientCAs := x509.NewCertPool()
	require.True(t, clientCAs.AppendCertsFromPEM(caPEM))
	serve := func() (*sim.Server, string) {
		s := sim.New(sim.Config{}, zerolog.Nop(), nil)
		s.RequireKeys(sim.NewKeys([]string{key}, nil))
		ts := httptest.NewUnstartedServer(s)
		ts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert}
		ts.Config.ErrorLog = log.New(io.Discard, "", 0)
		ts.StartTLS()
		t.Cleanup(ts.Close)
		return s, ts.URL
	}
	simA, urlA := serve()
	simB, urlB := serve()
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	replaceFile(t, keyFile, key)

	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	env := gatewayEnv(t, ns.URL(), dbURL, "", keyFile)
	delete(env, "PAYSTREAM_GATEWAY_URL")
	env["PAYSTREAM_GATEWAYS"] = "a=" + urlA + ",b=" + urlB
	env["PAYSTREAM_GATEWAY_CA_FILE"] = f.CA
	env["PAYSTREAM_GATEWAY_TLS_CERT"] = f.ClientCert
	env["PAYSTREAM_GATEWAY_TLS_KEY"] = f.ClientKey
	w := startRun(t, env)
	js := clientJS(t, ns.URL())
	const n = 12
	for i := range n {
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: fmt.Sprintf("tls2gw%02d", i), MerchantID: "m1",
			AmountMinor: int64(1500 + i), Currency: "EUR", PaymentMethod: "pm_card_visa"})
	}
	pool := newPool(t, dbURL)
	for i := range n {
		require.Equal(t, payment.StatusSucceeded, waitFinal(t, pool, fmt.Sprintf("tls2gw%02d", i)))
	}
	a, b := simA.Stats().Charges, simB.Stats().Charges
	t.Logf("charges over TLS: gateway a %d, gateway b %d", a, b)
	require.EqualValues(t, n, a+b)
	require.Positive(t, a)
	require.Positive(t, b)
	w.stop(t)
}
