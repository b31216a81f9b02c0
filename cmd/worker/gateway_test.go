package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// replaceFile writes content to path atomically (a new file renamed over
// the old one), as an operator or a secret volume rotates a key.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".new", []byte(content), 0o600))
	require.NoError(t, os.Rename(path+".new", path))
}

// keyedSim is a gateway simulator behind a real HTTP server that requires
// an API key from a keys file.
type keyedSim struct {
	sim      *sim.Server
	url      string
	keysFile string
}

func newKeyedSim(t *testing.T, keys string) *keyedSim {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sim-keys")
	replaceFile(t, path, keys)
	kf, err := sim.OpenKeysFile(path, zerolog.Nop(), nil)
	require.NoError(t, err)
	s := sim.New(sim.Config{}, zerolog.Nop(), nil)
	s.RequireKeys(kf)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &keyedSim{sim: s, url: ts.URL, keysFile: path}
}

// status returns the status of a lookup made with key, to see which keys
// the simulator accepts now.
func (k *keyedSim) status(t *testing.T, key string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, k.url+"/v1/charges?idempotency_key=probe", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// gatewayEnv is the environment of a worker paying at g with the API key
// in keyFile: a breaker that opens after two refusals and probes again
// after a second, quick retries, and deliveries enough for the test never
// to exhaust them.
func gatewayEnv(t *testing.T, natsURL, dbURL, gatewayURL, keyFile string) map[string]string {
	env := baseEnv(t, dbURL)
	env["PAYSTREAM_NATS_URL"] = natsURL
	env["PAYSTREAM_GATEWAY_URL"] = gatewayURL
	env["PAYSTREAM_GATEWAY_API_KEY_FILE"] = keyFile
	env["PAYSTREAM_BREAKER_FAILURES"] = "2"
	env["PAYSTREAM_BREAKER_OPEN_TIMEOUT"] = "1s"
	env["PAYSTREAM_RETRY_BACKOFF"] = "50ms"
	env["PAYSTREAM_RETRY_BACKOFF_MAX"] = "500ms"
	env["PAYSTREAM_MAX_DELIVER"] = "1000"
	return env
}

// httpGet returns the status and body of a GET of url, or 0 and the error
// when the server does not answer (yet).
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func countRows(t *testing.T, pool *pgxpool.Pool, status payment.Status) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM payments WHERE status = $1`, string(status)).Scan(&n))
	return n
}

// TestWrongGatewayKeyIsAConfigurationError runs the worker against a real
// gateway simulator with a wrong API key: the worker reports itself not
// ready, naming the gateway's refusal of its credentials, and neither
// records a payment failed nor dead-letters one. Then the key file is
// rotated to the right key without a restart: the payments complete, the
// worker is ready again, and no log line, metric, readiness answer, row or
// dead letter holds either key.
func TestWrongGatewayKeyIsAConfigurationError(t *testing.T) {
	t.Parallel()
	const right, wrong = "sk_right_a1b2c3d4", "sk_wrong_e5f6a7b8"
	gw := newKeyedSim(t, right+"\n")
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	replaceFile(t, keyFile, wrong+"\n")

	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	env := gatewayEnv(t, ns.URL(), dbURL, gw.url, keyFile)
	w := startRun(t, env)
	js := clientJS(t, ns.URL())
	pool := newPool(t, dbURL)
	base := "http://" + env["PAYSTREAM_HTTP_ADDR"]

	const n = 5
	for i := range n {
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: fmt.Sprintf("p%d", i), MerchantID: "m1",
			AmountMinor: int64(1000 + i), Currency: "EUR", PaymentMethod: "pm_card_visa"})
	}
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "gateway refuses our credentials")
	}, 20*time.Second, 20*time.Millisecond, "readiness names the refused credentials; last answer %q", body)
	require.Eventually(t, func() bool { return gw.sim.Stats().Unauthorized >= 3 }, 20*time.Second, 20*time.Millisecond,
		"the worker keeps trying (breaker probes)")
	code, metrics := httpGet(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)

	require.Zero(t, streamMsgs(t, js, "PAYMENTS_DLQ"), "nothing dead-lettered for our own credentials")
	require.Zero(t, countRows(t, pool, payment.StatusFailed), "no payment recorded failed")
	require.Zero(t, countRows(t, pool, payment.StatusSucceeded))
	require.Zero(t, gw.sim.Stats().Charges)

	// Rotate the worker's key file; no restart.
	replaceFile(t, keyFile, right+"\n")
	for i := range n {
		require.Equal(t, payment.StatusSucceeded, waitFinal(t, pool, fmt.Sprintf("p%d", i)))
	}
	require.Eventually(t, func() bool {
		code, body = httpGet(t, base+"/readyz")
		return code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "ready again; last answer %q", body)
	require.Zero(t, streamMsgs(t, js, "PAYMENTS_DLQ"))
	require.EqualValues(t, n, gw.sim.Stats().Charges)
	_, metricsAfter := httpGet(t, base+"/metrics")
	w.stop(t)

	var rows string
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT coalesce(string_agg(p::text, E'\n'), '') FROM payments p`).Scan(&rows))
	logs := w.logs.String()
	require.Contains(t, logs, "the gateway refuses our credentials")
	require.Contains(t, logs, `"gateway_api_key_file":"`+keyFile+`"`, "the configuration logs the path")
	require.Contains(t, logs, "gateway API key file changed")
	for what, text := range map[string]string{"logs": logs, "readiness": body, "metrics": metrics + metricsAfter, "rows": rows} {
		for _, key := range []string{right, wrong} {
			require.NotContains(t, text, key, "a gateway key in the %s", what)
		}
	}
}

// TestGatewayKeyRotationWithOverlap rotates a key the careful way: the
// simulator accepts the old and the new key while both are listed, the
// worker switches to the new one, then the old one is revoked. Payments
// go through at every step and the gateway never refuses a call.
func TestGatewayKeyRotationWithOverlap(t *testing.T) {
	t.Parallel()
	const oldKey, newKey = "sk_old_0001", "sk_new_0002"
	gw := newKeyedSim(t, oldKey+"\n")
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	replaceFile(t, keyFile, oldKey)

	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	w := startRun(t, gatewayEnv(t, ns.URL(), dbURL, gw.url, keyFile))
	js := clientJS(t, ns.URL())
	pool := newPool(t, dbURL)
	next := 0
	pay := func(step string) {
		t.Helper()
		for range 3 {
			id := fmt.Sprintf("p%d", next)
			next++
			publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: id, MerchantID: "m1",
				AmountMinor: int64(1000 + 100*next), Currency: "EUR", PaymentMethod: "pm_card_visa"})
			require.Equal(t, payment.StatusSucceeded, waitFinal(t, pool, id), step)
		}
	}
	pay("old key")

	// The test's own probes of the simulator, to tell them from the
	// worker's calls in its counts of refusals.
	var probed401, probed403 int64
	probe := func(key string) int {
		code := gw.status(t, key)
		switch code {
		case http.StatusUnauthorized:
			probed401++
		case http.StatusForbidden:
			probed403++
		}
		return code
	}
	replaceFile(t, gw.keysFile, oldKey+"\n"+newKey+"\n")
	require.Eventually(t, func() bool { return probe(newKey) != http.StatusUnauthorized }, 10*time.Second, 20*time.Millisecond,
		"the simulator takes the new key")
	require.NotEqual(t, http.StatusUnauthorized, probe(oldKey), "and still the old one")
	pay("overlap, worker on the old key")
	replaceFile(t, keyFile, newKey)
	// The worker reads its key file again on a call a second or more after
	// the last read: pay until it has, then revoke the old key.
	switched := func() bool { return strings.Contains(w.logs.String(), "gateway API key file changed") }
	for deadline := time.Now().Add(20 * time.Second); !switched() && time.Now().Before(deadline); {
		pay("overlap, worker switching")
	}
	require.True(t, switched(), "the worker took its new key")
	replaceFile(t, gw.keysFile, newKey+"\nrevoked "+oldKey+"\n")
	require.Eventually(t, func() bool { return probe(oldKey) == http.StatusForbidden }, 10*time.Second, 20*time.Millisecond)
	pay("old key revoked")

	st := gw.sim.Stats()
	require.Equal(t, probed401, st.Unauthorized, "no call of the worker refused during the rotation")
	require.Equal(t, probed403, st.Forbidden, "no call of the worker refused during the rotation")
	require.EqualValues(t, next, st.Charges)
	w.stop(t)
}

// TestBadGatewayKeyFileStopsTheStart: a key file that is missing, empty or
// holds more than a key stops the worker at start, naming the setting and
// never the file's contents.
func TestBadGatewayKeyFileStopsTheStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.key")
	replaceFile(t, empty, "\n")
	twoWords := filepath.Join(dir, "two.key")
	replaceFile(t, twoWords, "sk_secret_one sk_secret_two\n")
	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	for name, path := range map[string]string{"missing": filepath.Join(dir, "none"), "empty": empty, "two words": twoWords} {
		t.Run(name, func(t *testing.T) {
			env := gatewayEnv(t, ns.URL(), dbURL, "http://127.0.0.1:1", path)
			var logs syncBuffer
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			err := run(ctx, nil, envFrom(env), &logs, &logs)
			require.ErrorContains(t, err, "PAYSTREAM_GATEWAY_API_KEY_FILE")
			require.NotContains(t, err.Error(), "sk_secret")
			require.NotContains(t, logs.String(), "sk_secret")
		})
	}
}

// TestWorkerPaysOverVerifiedTLS runs the worker against a simulator that
// serves HTTPS with a throwaway CA's certificate, requires a client
// certificate and an API key: with PAYSTREAM_GATEWAY_CA_FILE, the client
// certificate and the key file, payments succeed. A second worker without
// the CA file refuses the gateway's certificate: its payment is retried,
// never recorded failed or dead-lettered, and the gateway charges nothing.
func TestWorkerPaysOverVerifiedTLS(t *testing.T) {
	t.Parallel()
	const key = "sk_tls_5e6f7a8b"
	f := natstest.NewTLSFiles(t)
	s := sim.New(sim.Config{}, zerolog.Nop(), nil)
	s.RequireKeys(sim.NewKeys([]string{key}, nil))
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	require.NoError(t, err)
	caPEM, err := os.ReadFile(f.CA)
	require.NoError(t, err)
	clientCAs := x509.NewCertPool()
	require.True(t, clientCAs.AppendCertsFromPEM(caPEM))
	ts := httptest.NewUnstartedServer(s)
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	keyFile := filepath.Join(t.TempDir(), "gateway.key")
	replaceFile(t, keyFile, key)

	t.Run("verified", func(t *testing.T) {
		t.Parallel()
		ns := natstest.New(t)
		dbURL := pgtest.NewDatabase(t)
		env := gatewayEnv(t, ns.URL(), dbURL, ts.URL, keyFile)
		env["PAYSTREAM_GATEWAY_CA_FILE"] = f.CA
		env["PAYSTREAM_GATEWAY_TLS_CERT"] = f.ClientCert
		env["PAYSTREAM_GATEWAY_TLS_KEY"] = f.ClientKey
		w := startRun(t, env)
		js := clientJS(t, ns.URL())
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: "tls1", MerchantID: "m1",
			AmountMinor: 1500, Currency: "EUR", PaymentMethod: "pm_card_visa"})
		require.Equal(t, payment.StatusSucceeded, waitFinal(t, newPool(t, dbURL), "tls1"))
		w.stop(t)
	})
	t.Run("unknown authority", func(t *testing.T) {
		t.Parallel()
		ns := natstest.New(t)
		dbURL := pgtest.NewDatabase(t)
		env := gatewayEnv(t, ns.URL(), dbURL, ts.URL, keyFile) // the system roots
		w := startRun(t, env)
		js := clientJS(t, ns.URL())
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: "tls2", MerchantID: "m1",
			AmountMinor: 1500, Currency: "EUR", PaymentMethod: "pm_card_visa"})
		require.Eventually(t, func() bool { return strings.Contains(w.logs.String(), "certificate signed by unknown authority") },
			20*time.Second, 20*time.Millisecond, "the worker refuses the gateway's certificate")
		pool := newPool(t, dbURL)
		require.Zero(t, streamMsgs(t, js, "PAYMENTS_DLQ"), "gateway trouble is retried, not dead-lettered")
		require.Zero(t, countRows(t, pool, payment.StatusFailed))
		require.Zero(t, s.ChargesFor("tls2"))
		w.stop(t)
	})
}
