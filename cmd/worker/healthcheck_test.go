package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHealthcheck runs `worker healthcheck` against a stand-in /readyz on
// the address of PAYSTREAM_HTTP_ADDR, with its host left unspecified as in
// the container (":port" and "0.0.0.0:port" are dialled on loopback).
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "ready\n")
	}))
	defer srv.Close()
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	env := func(addr string) func(string) (string, bool) {
		m := map[string]string{
			"PAYSTREAM_DATABASE_URL": "postgres://postgres@127.0.0.1:1/paystream?sslmode=disable",
			"PAYSTREAM_GATEWAY_URL":  "http://127.0.0.1:1",
			"PAYSTREAM_HTTP_ADDR":    addr,
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}

	for _, addr := range []string{":" + port, "0.0.0.0:" + port, "127.0.0.1:" + port} {
		var out strings.Builder
		require.NoError(t, run(t.Context(), []string{"healthcheck"}, env(addr), &out, io.Discard), "addr %s", addr)
		require.Equal(t, "ready\n", out.String())
	}

	status = http.StatusServiceUnavailable
	require.ErrorContains(t, run(t.Context(), []string{"healthcheck"}, env(":"+port), io.Discard, io.Discard), "503")

	srv.Close()
	require.Error(t, run(t.Context(), []string{"healthcheck"}, env(":"+port), io.Discard, io.Discard), "nothing listens")
}
