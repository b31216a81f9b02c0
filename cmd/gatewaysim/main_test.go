package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/payment"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// logLines collects log lines written by run and hands each one to a channel.
type logLines struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	s := l.buf.String()
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		select {
		case l.lines <- s[:i]:
		default: // nobody listening: drop
		}
		s = s[i+1:]
	}
	l.buf.Reset()
	l.buf.WriteString(s)
	return len(p), nil
}

func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &logLines{lines: make(chan string, 100)}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0"}, env(map[string]string{"GATEWAYSIM_SEED": "3"}), io.Discard, logs)
	}()

	var addr string
	for addr == "" {
		select {
		case line := <-logs.lines:
			var entry struct {
				Message string `json:"message"`
				Addr    string `json:"addr"`
			}
			require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
			if entry.Message == "gatewaysim listening" {
				addr = entry.Addr
			}
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no listening log line")
		}
	}
	base := "http://" + addr

	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: base})
	require.NoError(t, err)
	res, err := g.Charge(t.Context(), payment.Charge{
		IdempotencyKey: "k1", PaymentID: "p1", MerchantID: "m1", Currency: "EUR",
		PaymentMethod: "pm_card_visa", AmountMinor: 1000,
	})
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
	found, err := g.Lookup(t.Context(), "k1")
	require.NoError(t, err)
	require.Equal(t, payment.LookupResult{Found: true, ChargeID: res.ChargeID, AmountMinor: 1000, Currency: "EUR", PaymentID: "p1"}, found)
	g.Close()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	get := func(path string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}

	code, body := get("/v1/stats")
	require.Equal(t, http.StatusOK, code)
	var stats sim.Stats
	require.NoError(t, json.Unmarshal([]byte(body), &stats))
	require.Equal(t, sim.Stats{Charges: 1, Keys: 1, DoubleCharged: []string{}, Lookups: 1}, stats)

	code, body = get("/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)

	// The admin endpoints are mounted: change the configuration at run time.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, base+"/v1/config", strings.NewReader(`{"error_rate":1}`))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	code, body = get("/v1/config")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"error_rate":1`)

	code, body = get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `gatewaysim_requests_total{code="201"} 1`)
	require.Contains(t, body, "gatewaysim_real_charges_total 1")
	require.Contains(t, body, `gatewaysim_lookups_total{code="200"} 1`)
	require.Contains(t, body, "gatewaysim_in_flight_conflicts_total 0")
	require.Contains(t, body, "go_goroutines")
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunListenError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	err = run(t.Context(), []string{"--addr", ln.Addr().String()}, env(nil), io.Discard, io.Discard)
	require.ErrorContains(t, err, "listen on "+ln.Addr().String())
}

func TestParse(t *testing.T) {
	t.Parallel()

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		o, err := parse(nil, env(nil), io.Discard)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1:8099", o.addr)
		require.Equal(t, "json", o.logFormat)
		require.Equal(t, sim.Config{RetryAfter: time.Second, HangFor: time.Minute}, o.sim)
		require.Equal(t, sim.DefaultMeterWindow, o.meterWindow)
	})

	t.Run("env and flags", func(t *testing.T) {
		t.Parallel()
		o, err := parse(
			[]string{"--error-rate", "0.25", "--latency=20ms"},
			env(map[string]string{
				"GATEWAYSIM_ERROR_RATE":         "0.9", // the flag wins
				"GATEWAYSIM_LATENCY_JITTER":     "5ms",
				"GATEWAYSIM_DECLINE_RATE":       "0.1",
				"GATEWAYSIM_RATE_LIMIT_RATE":    "0.2",
				"GATEWAYSIM_TIMEOUT_RATE":       "0.3",
				"GATEWAYSIM_LOST_RESPONSE_RATE": "0.4",
				"GATEWAYSIM_RETRY_AFTER":        "3s",
				"GATEWAYSIM_HANG_FOR":           "4s",
				"GATEWAYSIM_SEED":               "77",
				"GATEWAYSIM_MAX_KEYS":           "1000",
				"GATEWAYSIM_MAX_CHARGES":        "5000",
				"GATEWAYSIM_ADDR":               ":9000",
				"GATEWAYSIM_LOG_FORMAT":         "console",
				"GATEWAYSIM_LOG_LEVEL":          "debug",
				"GATEWAYSIM_RISK_LATENCY":       "7ms",
				"GATEWAYSIM_RISK_ERROR_RATE":    "0.5",
				"GATEWAYSIM_METER_WINDOW":       "90s",
			}),
			io.Discard)
		require.NoError(t, err)
		require.Equal(t, ":9000", o.addr)
		require.Equal(t, "console", o.logFormat)
		require.Equal(t, "debug", o.logLevel)
		require.Equal(t, sim.Config{
			Latency: 20 * time.Millisecond, LatencyJitter: 5 * time.Millisecond,
			DeclineRate: 0.1, ErrorRate: 0.25, RateLimitRate: 0.2, TimeoutRate: 0.3, LostResponseRate: 0.4,
			RetryAfter: 3 * time.Second, HangFor: 4 * time.Second, Seed: 77, MaxKeys: 1000, MaxCharges: 5000,
			RiskLatency: 7 * time.Millisecond, RiskErrorRate: 0.5,
		}, o.sim)
		require.Equal(t, 90*time.Second, o.meterWindow)
	})

	t.Run("every problem at once", func(t *testing.T) {
		t.Parallel()
		_, err := parse(
			[]string{"--decline-rate", "2", "--log-format", "xml"},
			env(map[string]string{"GATEWAYSIM_LATENCY": "soon", "GATEWAYSIM_LOG_LEVEL": "loud", "GATEWAYSIM_HANG_FOR": "-1s",
				"GATEWAYSIM_METER_WINDOW": "500ms", "GATEWAYSIM_RISK_ERROR_RATE": "1.5"}),
			io.Discard)
		require.Error(t, err)
		for _, want := range []string{"GATEWAYSIM_LATENCY (--latency)", "decline rate", "hang for", "log format", "log level",
			"--meter-window must be at least 1s", "risk error rate"} {
			require.ErrorContains(t, err, want)
		}
	})

	t.Run("unknown flag", func(t *testing.T) {
		t.Parallel()
		_, err := parse([]string{"--nope"}, env(nil), io.Discard)
		require.ErrorContains(t, err, "nope")
	})

	t.Run("help", func(t *testing.T) {
		t.Parallel()
		var out strings.Builder
		require.NoError(t, run(t.Context(), []string{"-h"}, env(nil), io.Discard, &out))
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		var flags int
		for sc.Scan() {
			if strings.HasPrefix(strings.TrimSpace(sc.Text()), "-") {
				flags++
			}
		}
		require.GreaterOrEqual(t, flags, 10)
	})
}

// startSim runs the binary's run with args and environment e until the end
// of the test, and returns its listening address.
func startSim(t *testing.T, args []string, e map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	logs := &logLines{lines: make(chan string, 100)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env(e), io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	for {
		select {
		case line := <-logs.lines:
			var entry struct {
				Message string `json:"message"`
				Addr    string `json:"addr"`
			}
			require.NoError(t, json.Unmarshal([]byte(line), &entry), line)
			if entry.Message == "gatewaysim listening" {
				return entry.Addr
			}
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no listening log line")
		}
	}
}

// TestRunWithKeysAndMutualTLS runs the simulator as a locked-down gateway:
// HTTPS with a throwaway CA's certificate, client certificates required,
// and an API key from a keys file. Only a client with all three gets a
// charge through; a wrong key is a 401 that the client classifies as a
// configuration error, and a missing client certificate never gets to HTTP.
func TestRunWithKeysAndMutualTLS(t *testing.T) {
	t.Parallel()
	f := natstest.NewTLSFiles(t)
	keys := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(keys, []byte("sk_sim_right\n"), 0o600))
	addr := startSim(t, []string{"--addr", "127.0.0.1:0", "--tls-cert", f.ServerCert, "--tls-key", f.ServerKey},
		map[string]string{"GATEWAYSIM_KEYS_FILE": keys, "GATEWAYSIM_TLS_CLIENT_CA": f.CA})
	base := "https://" + addr

	client := func(files gateway.TLSFiles, key string) *gateway.HTTP {
		tlsCfg, err := files.Config()
		require.NoError(t, err)
		cfg := gateway.HTTPConfig{BaseURL: base, TLS: tlsCfg}
		if key != "" {
			keyFile := filepath.Join(t.TempDir(), "api.key")
			require.NoError(t, os.WriteFile(keyFile, []byte(key), 0o600))
			cfg.APIKey, err = gateway.OpenKeyFile(gateway.KeyFileConfig{Path: keyFile})
			require.NoError(t, err)
		}
		g, err := gateway.NewHTTP(cfg)
		require.NoError(t, err)
		t.Cleanup(g.Close)
		return g
	}
	charge := payment.Charge{IdempotencyKey: "k1", PaymentID: "p1", MerchantID: "m1", Currency: "EUR",
		PaymentMethod: "pm_card_visa", AmountMinor: 1000}
	full := gateway.TLSFiles{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey}

	res, err := client(full, "sk_sim_right").Charge(t.Context(), charge)
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)

	_, err = client(full, "sk_sim_wrong").Charge(t.Context(), charge)
	ge, ok := errors.AsType[*payment.GatewayError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, payment.ClassUnauthorized, ge.Class)
	require.Equal(t, http.StatusUnauthorized, ge.StatusCode)

	_, err = client(gateway.TLSFiles{CA: f.CA}, "sk_sim_right").Charge(t.Context(), charge)
	ge, ok = errors.AsType[*payment.GatewayError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, payment.ClassTrouble, ge.Class, "no client certificate: refused in the handshake")

	_, err = client(gateway.TLSFiles{}, "sk_sim_right").Charge(t.Context(), charge)
	_, ok = errors.AsType[x509.UnknownAuthorityError](err)
	require.True(t, ok, "the system roots do not know the throwaway CA: %v", err)
}

func TestParseTLSAndKeys(t *testing.T) {
	t.Parallel()
	_, err := parse([]string{"--tls-cert", "c.pem", "--tls-client-ca", "ca.pem"}, env(nil), io.Discard)
	require.ErrorContains(t, err, "--tls-cert and --tls-key go together")
	_, err = parse([]string{"--tls-client-ca", "ca.pem"}, env(nil), io.Discard)
	require.ErrorContains(t, err, "--tls-client-ca needs --tls-cert and --tls-key")
	o, err := parse(nil, env(map[string]string{"GATEWAYSIM_KEYS_FILE": "/k", "GATEWAYSIM_TLS_CERT": "/c", "GATEWAYSIM_TLS_KEY": "/key"}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "/k", o.keysFile)
	require.Equal(t, "/c", o.tlsCert)
	require.Equal(t, "/key", o.tlsKey)

	err = run(t.Context(), []string{"--addr", "127.0.0.1:0", "--keys-file", filepath.Join(t.TempDir(), "none")}, env(nil), io.Discard, io.Discard)
	require.ErrorContains(t, err, "--keys-file")
}
