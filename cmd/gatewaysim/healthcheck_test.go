package main

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHealthcheck starts the simulator on GATEWAYSIM_ADDR and probes it
// with `gatewaysim healthcheck` under the same environment, then after it
// stopped.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	vars := env(map[string]string{"GATEWAYSIM_ADDR": addr})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, vars, io.Discard, io.Discard) }()

	require.Eventually(t, func() bool {
		return healthcheck(t.Context(), nil, vars, io.Discard, io.Discard) == nil
	}, 10*time.Second, 20*time.Millisecond, "healthcheck never passed against a running simulator")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("gatewaysim did not stop")
	}
	require.Error(t, healthcheck(t.Context(), nil, vars, io.Discard, io.Discard), "healthcheck passed with no server")
	require.Error(t, healthcheck(t.Context(), []string{"--addr", "nonsense"}, vars, io.Discard, io.Discard))
}

// freeAddr returns a loopback address that nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}
