package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWorkerEndToEnd(t *testing.T) {
	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	httpAddr := freeAddr(t)
	env := map[string]string{
		"PAYSTREAM_NATS_URL":         ns.URL(),
		"PAYSTREAM_DATABASE_URL":     dbURL,
		"PAYSTREAM_GATEWAY_URL":      "fake",
		"PAYSTREAM_HTTP_ADDR":        httpAddr,
		"PAYSTREAM_CONCURRENCY":      "16",
		"PAYSTREAM_SHUTDOWN_TIMEOUT": "5s",
		"PAYSTREAM_LOG_LEVEL":        "debug",
		"PAYSTREAM_WORKER_ID":        "test-worker",
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envFrom(env), io.Discard, &logs) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	// The worker provisions the streams; publish once they exist.
	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.Stream(context.Background(), "PAYMENTS")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)

	const n = 100
	for i := range n {
		r := payment.Request{PaymentID: fmt.Sprintf("p%d", i), MerchantID: "m1", AmountMinor: int64(100 + i),
			Currency: "USD", PaymentMethod: "pm_card_secret_token_xyz"}
		body, err := json.Marshal(r)
		require.NoError(t, err)
		_, err = js.Publish(context.Background(), "payments.requests.m1", body)
		require.NoError(t, err)
	}

	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.Eventually(t, func() bool {
		var c int
		_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM payments WHERE status <> 'processing'`).Scan(&c)
		return c == n
	}, 30*time.Second, 20*time.Millisecond)

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Eventually(t, func() bool { c, _ := get("/readyz"); return c == http.StatusOK }, 10*time.Second, 50*time.Millisecond)
	// A row is final before its outcome event is published and its
	// message acked and counted: wait for the last ones to be counted.
	var body string
	require.Eventually(t, func() bool {
		code, body = get("/metrics")
		return code == http.StatusOK && strings.Contains(body, `paystream_messages_total{outcome="succeeded"} 99`)
	}, 10*time.Second, 20*time.Millisecond, "every message counted")
	require.Contains(t, body, `paystream_messages_total{outcome="declined"} 1`) // amount 113
	require.Contains(t, body, `paystream_gateway_calls_total{result="succeeded"} 99`)
	require.Contains(t, body, "paystream_processing_duration_seconds_bucket")
	require.Contains(t, body, `paystream_worker_info{host=`)
	require.Contains(t, body, "paystream_worker_concurrency 16")

	// The worker's heartbeat record is in the fleet bucket while it runs.
	require.Eventually(t, func() bool {
		hbs, err := fleet.List(context.Background(), js, "")
		return err == nil && len(hbs) == 1 && hbs[0].WorkerID == "test-worker" && hbs[0].Ready && hbs[0].Concurrency == 16
	}, 15*time.Second, 50*time.Millisecond)
	require.Contains(t, get2(t, httpAddr), "paystream_worker_ready 1")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("worker did not stop within its shutdown timeout")
	}
	done <- nil // for the cleanup
	hbs, err := fleet.List(context.Background(), js, "")
	require.NoError(t, err)
	require.Empty(t, hbs, "a clean stop deletes the heartbeat record")

	out := logs.String()
	require.Contains(t, out, "worker stopped")
	require.NotContains(t, out, "pm_card_secret_token_xyz", "payment method in the logs")
}

func TestInvalidConfigListsEveryProblem(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--concurrency=0", "--ack-wait=banana"},
		envFrom(map[string]string{"PAYSTREAM_MAX_DELIVER": "1"}), io.Discard, &stderr)
	require.Error(t, err)
	for _, want := range []string{"PAYSTREAM_CONCURRENCY", "PAYSTREAM_ACK_WAIT", "PAYSTREAM_MAX_DELIVER", "PAYSTREAM_GATEWAY_URL"} {
		require.Contains(t, err.Error(), want)
	}
}

func TestMigrateCommand(t *testing.T) {
	url := pgtest.NewEmptyDatabase(t)
	env := envFrom(map[string]string{"PAYSTREAM_DATABASE_URL": url})
	for range 2 { // twice: the second finds nothing to do
		require.NoError(t, run(context.Background(), []string{"migrate"}, env, io.Discard, io.Discard))
	}
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	defer pool.Close()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM payments`).Scan(&n))
	require.Zero(t, n)
	require.True(t, strings.HasPrefix(url, "postgres"))
}

// TestDatabaseSSLModeIsHonoured asks for TLS from the test cluster, which has
// none: the worker must refuse to start rather than fall back to plain text.
func TestDatabaseSSLModeIsHonoured(t *testing.T) {
	url := strings.Replace(pgtest.NewDatabase(t), "sslmode=disable", "sslmode=require", 1)
	require.Contains(t, url, "sslmode=require")
	ns := natstest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := run(ctx, []string{"--http-addr="}, envFrom(map[string]string{
		"PAYSTREAM_NATS_URL":     ns.URL(),
		"PAYSTREAM_DATABASE_URL": url,
		"PAYSTREAM_GATEWAY_URL":  "fake",
	}), io.Discard, io.Discard)
	require.Error(t, err)
	require.Contains(t, err.Error(), "connect to the database")
	require.Contains(t, strings.ToLower(err.Error()), "tls", "the refusal says TLS was asked for")
}

// get2 returns the body of /metrics.
func get2(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
