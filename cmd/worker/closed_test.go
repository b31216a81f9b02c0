package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
)

// A NATS connection closed for good stops the worker although its context
// goes on: every part that run waits for (sweeper, reconciler, fleet
// gauges) must stop with the consumer, not only with the context.
func TestWorkerStopsWhenNATSClosesForGood(t *testing.T) {
	ns := natstest.New(t)
	env := map[string]string{
		"PAYSTREAM_NATS_URL":         ns.URL(),
		"PAYSTREAM_DATABASE_URL":     pgtest.NewDatabase(t),
		"PAYSTREAM_GATEWAY_URL":      "fake",
		"PAYSTREAM_HTTP_ADDR":        freeAddr(t),
		"PAYSTREAM_SHUTDOWN_TIMEOUT": "5s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := newWorker(ctx, nil, envFrom(env), io.Discard)
	require.NoError(t, err)
	nc := w.nc
	done := make(chan error, 1)
	go func() { done <- w.run(ctx) }()
	require.Eventually(t, func() bool { return w.cons.Ready() == nil }, 20*time.Second, 20*time.Millisecond)

	nc.Close()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "nats connection closed")
	case <-time.After(20 * time.Second):
		cancel()
		<-done
		t.Fatal("the worker kept running after its NATS connection closed")
	}
}
