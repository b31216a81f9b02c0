package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// TestWorkerExportsTraces: OTEL_EXPORTER_OTLP_ENDPOINT alone turns tracing
// on; the worker sends its spans over OTLP/HTTP (protobuf) to
// <endpoint>/v1/traces, and flushes them when it stops. A bad sampler
// stops the start, naming the variable.
func TestWorkerExportsTraces(t *testing.T) {
	var mu sync.Mutex
	var posts []string
	otlp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		posts = append(posts, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+string(body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(otlp.Close)

	ns := natstest.New(t)
	env := map[string]string{
		"PAYSTREAM_NATS_URL":          ns.URL(),
		"PAYSTREAM_DATABASE_URL":      pgtest.NewDatabase(t),
		"PAYSTREAM_GATEWAY_URL":       "fake",
		"PAYSTREAM_HTTP_ADDR":         freeAddr(t),
		"PAYSTREAM_SHUTDOWN_TIMEOUT":  "5s",
		"PAYSTREAM_WORKER_ID":         "traced-worker",
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL,
		"OTEL_SERVICE_NAME":           "paystream-worker-test",
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envFrom(env), io.Discard, &logs) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)

	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.Stream(context.Background(), "PAYMENTS")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	outcomes := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe("payments.results.*", outcomes)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	body, err := json.Marshal(payment.Request{PaymentID: "traced-1", MerchantID: "m1", AmountMinor: 500,
		Currency: "USD", PaymentMethod: "pm_card_secret_token_xyz"})
	require.NoError(t, err)
	m := nats.NewMsg("payments.requests.m1")
	m.Data = body
	m.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	_, err = js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	select {
	case out := <-outcomes:
		require.Contains(t, out.Header.Get("traceparent"), "4bf92f3577b34da6a3ce929d0e0e4736")
	case <-time.After(30 * time.Second):
		t.Fatal("no outcome event")
	}
	stop() // flushes the batched spans

	require.Contains(t, logs.String(), "tracing on")
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, posts, "no spans exported")
	require.True(t, strings.HasPrefix(posts[0], "POST /v1/traces application/x-protobuf "), posts[0])
	all := strings.Join(posts, "\n")
	require.Contains(t, all, "process payments.requests")
	require.Contains(t, all, "paystream-worker-test")
	require.NotContains(t, all, "pm_card_secret_token_xyz", "card data in a span")
}

func TestWorkerRefusesABadSampler(t *testing.T) {
	env := map[string]string{
		"PAYSTREAM_NATS_URL":          "nats://127.0.0.1:1",
		"PAYSTREAM_DATABASE_URL":      "postgres://127.0.0.1:1/x",
		"PAYSTREAM_GATEWAY_URL":       "fake",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
		"OTEL_TRACES_SAMPLER":         "sometimes",
	}
	err := run(t.Context(), nil, envFrom(env), io.Discard, io.Discard)
	require.Error(t, err)
	require.Contains(t, err.Error(), "OTEL_TRACES_SAMPLER")
}
