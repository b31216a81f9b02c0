package demo_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/internal/testenv/demo"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/internal/testenv/pgcluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func binaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs real processes")
	}
	if _, err := pgcluster.FindBinDir(); errors.Is(err, pgcluster.ErrNoBinaries) {
		t.Skip(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	require.NoError(t, localstack.Build(ctx, dir))
	return dir
}

// TestRunSmall runs the demo end to end with a small load.
func TestRunSmall(t *testing.T) {
	bin := binaries(t)
	var out bytes.Buffer
	err := demo.Run(t.Context(), demo.Config{BinDir: bin, Count: 800, Workers: 2, Seed: 7, SettleTimeout: time.Minute, Out: &out})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	s := out.String()
	for _, want := range []string{
		"publishing 800 messages with bin/publisher (seed 7)",
		"settled",
		"requests stream",
		"payments table (rows by status)",
		"dead letters (by reason)",
		"real charges",
		"latency p99",
		"every worker exited 0 after SIGTERM",
		"verdict: nothing lost, nobody charged twice",
	} {
		require.Contains(t, s, want)
	}
	require.NotContains(t, s, "FAILED")
	// The simulator required an API key, and the secret scan searched
	// every log, page, stream message and row for it without finding it.
	require.Regexp(t, `gateway API key\s+not found in [1-9]\d* log files, [1-9]\d* pages, [1-9]\d* stream messages, [1-9]\d* table rows, 1 demo output`, s)
}

// TestUpstream runs the upstream demo: a real outbox relay process and the
// example order service against the stack.
func TestUpstream(t *testing.T) {
	bin := binaries(t)
	var out bytes.Buffer
	err := demo.Upstream(t.Context(), demo.Config{BinDir: bin, Workers: 1, Seed: 7, SettleTimeout: time.Minute, Out: &out})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	s := out.String()
	require.Contains(t, s, "outbox-relay pid")
	require.Contains(t, s, "verdict: every committed order was paid or failed, the rolled-back one never charged")
	require.GreaterOrEqual(t, strings.Count(s, " failed "), 3, "the orders for amounts ending in 13 are declined")
}

// lineWriter signals when a line containing want has been written.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestDevStopsEverything starts the dev stack and stops it like Ctrl-C.
func TestDevStopsEverything(t *testing.T) {
	bin := binaries(t)
	out := &lineWriter{want: "Ctrl-C stops every process", seen: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- demo.Dev(ctx, demo.Config{BinDir: bin, Workers: 1, Out: out}) }()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("dev returned early: %v\n%s", err, out.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("dev did not start:\n%s", out.String())
	}
	s := out.String()
	for _, want := range []string{"publish:", "--nats-url nats://127.0.0.1:", "psql:", "metrics:", "/metrics", "gateway:",
		"console:  http://127.0.0.1:", "user dev, password "} {
		require.Contains(t, s, want)
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("dev did not stop")
	}
	require.Contains(t, out.String(), "stopping every process")
}
