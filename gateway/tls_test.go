package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/payment"
)

// tlsSim serves a simulator over TLS with the server certificate of f (a
// throwaway CA's), requiring client certificates signed by f's CA when
// mutual is set.
func tlsSim(t *testing.T, f natstest.TLSFiles, mutual bool) *httptest.Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	require.NoError(t, err)
	ts := httptest.NewUnstartedServer(sim.New(sim.Config{}, zerolog.Nop(), nil))
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if mutual {
		pem, err := os.ReadFile(f.CA)
		require.NoError(t, err)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(pem))
		ts.TLS.ClientCAs, ts.TLS.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	// The server logs each refused handshake; keep the test output quiet.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// tlsClient returns a client for url with the TLS files given.
func tlsClient(t *testing.T, url string, files gateway.TLSFiles) *gateway.HTTP {
	t.Helper()
	cfg, err := files.Config()
	require.NoError(t, err)
	c, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: url, TLS: cfg})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// TestTLSVerifiesTheGateway charges over TLS: with the gateway's CA it
// works; with the system roots or another CA the certificate is refused as
// unknown, and the call is gateway trouble (a retry, never a failed
// payment).
func TestTLSVerifiesTheGateway(t *testing.T) {
	t.Parallel()
	f := natstest.NewTLSFiles(t)
	other := natstest.NewTLSFiles(t)
	ts := tlsSim(t, f, false)
	ctx := t.Context()

	res, err := tlsClient(t, ts.URL, gateway.TLSFiles{CA: f.CA}).Charge(ctx, testCharge("tls1", 1000))
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)

	for name, files := range map[string]gateway.TLSFiles{"system roots": {}, "another CA": {CA: other.CA}} {
		_, err := tlsClient(t, ts.URL, files).Charge(ctx, testCharge("tls2", 1000))
		ge := requireGatewayError(t, err, payment.ClassTrouble, 0)
		require.Equal(t, payment.CodeConnection, ge.Code, name)
		require.False(t, ge.Class.Final(), name)
		_, ok := errors.AsType[x509.UnknownAuthorityError](err)
		require.True(t, ok, "%s: want an unknown authority error, got %v", name, err)
	}
}

// TestMutualTLS charges at a gateway that requires a client certificate:
// refused without one, accepted with the one its CA signed.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	f := natstest.NewTLSFiles(t)
	ts := tlsSim(t, f, true)
	ctx := t.Context()

	_, err := tlsClient(t, ts.URL, gateway.TLSFiles{CA: f.CA}).Charge(ctx, testCharge("m1", 1000))
	ge := requireGatewayError(t, err, payment.ClassTrouble, 0)
	require.Equal(t, payment.CodeConnection, ge.Code)

	res, err := tlsClient(t, ts.URL, gateway.TLSFiles{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey}).Charge(ctx, testCharge("m2", 1000))
	require.NoError(t, err)
	require.Equal(t, payment.StatusSucceeded, res.Status)
}

func TestTLSFilesConfig(t *testing.T) {
	t.Parallel()
	f := natstest.NewTLSFiles(t)
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))

	c, err := gateway.TLSFiles{}.Config()
	require.NoError(t, err)
	require.Nil(t, c.RootCAs, "the system roots")
	require.Empty(t, c.Certificates)
	require.EqualValues(t, tls.VersionTLS12, c.MinVersion)

	c, err = gateway.TLSFiles{CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey}.Config()
	require.NoError(t, err)
	require.NotNil(t, c.RootCAs)
	require.Len(t, c.Certificates, 1)

	for name, tc := range map[string]struct {
		files gateway.TLSFiles
		want  string
	}{
		"missing CA":         {gateway.TLSFiles{CA: filepath.Join(t.TempDir(), "nope.pem")}, "gateway CA file"},
		"CA not PEM":         {gateway.TLSFiles{CA: notPEM}, "no PEM certificate"},
		"cert without key":   {gateway.TLSFiles{Cert: f.ClientCert}, "needs its key"},
		"key without cert":   {gateway.TLSFiles{Key: f.ClientKey}, "needs its key"},
		"key does not match": {gateway.TLSFiles{Cert: f.ClientCert, Key: f.ServerKey}, "client certificate"},
	} {
		_, err := tc.files.Config()
		require.ErrorContains(t, err, tc.want, name)
	}
}

func TestNewHTTPRefusesUnverifiedTLS(t *testing.T) {
	t.Parallel()
	_, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: "https://gw.example.com",
		TLS: &tls.Config{InsecureSkipVerify: true}}) //nolint:gosec // what NewHTTP must refuse
	require.ErrorContains(t, err, "certificate verification must stay on")
	_, err = gateway.NewHTTP(gateway.HTTPConfig{BaseURL: "https://gw.example.com",
		TLS: &tls.Config{}, Client: &http.Client{}})
	require.ErrorContains(t, err, "TLS and Client exclude each other")
}

// TestNoInsecureSkipVerify keeps certificate verification on everywhere:
// no non-test Go file of the module sets InsecureSkipVerify (reading it,
// as NewHTTP does to refuse it, is fine).
func TestNoInsecureSkipVerify(t *testing.T) {
	t.Parallel()
	out, err := exec.CommandContext(t.Context(), "go", "env", "GOMOD").Output()
	require.NoError(t, err)
	root := filepath.Dir(strings.TrimSpace(string(out)))
	sets := regexp.MustCompile(`InsecureSkipVerify\s*(:|=[^=])`)
	var checked int
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		checked++
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if loc := sets.FindIndex(src); loc != nil {
			line := 1 + strings.Count(string(src[:loc[0]]), "\n")
			t.Errorf("%s:%d sets InsecureSkipVerify: verify the peer with a CA file instead", path, line)
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 50, "too few Go files found under %s", root)
}
