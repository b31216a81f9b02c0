package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish/outbox"
)

// testBundle is what an integration test works with: a database with the
// worker's and the outbox's migrations, a JetStream server of its own with
// the PAYMENTS stream as the workers provision it, and a connection.
type testBundle struct {
	dbURL  string
	pool   *pgxpool.Pool
	srv    *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := testContext(t)
	b := &testBundle{dbURL: pgtest.NewDatabase(t)}
	require.NoError(t, outbox.Migrate(ctx, b.dbURL))
	var err error
	b.pool, err = pgxpool.New(ctx, b.dbURL)
	require.NoError(t, err)
	t.Cleanup(b.pool.Close)

	b.srv = natstest.New(t)
	b.nc, err = nats.Connect(b.srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(b.nc.Close)
	b.js, err = jetstream.New(b.nc)
	require.NoError(t, err)
	// The stream as the worker provisions it.
	b.stream, err = b.js.CreateStream(ctx, defaults.Consumer().StreamConfigs()[0])
	require.NoError(t, err)
	return b
}

// testContext returns a context that ends with the test or after 60s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func request(id, merchant string) *payment.Request {
	return &payment.Request{
		PaymentID:     id,
		MerchantID:    merchant,
		AmountMinor:   1999,
		Currency:      "EUR",
		PaymentMethod: "pm_card_visa",
		Metadata:      map[string]string{"order_id": "ord_" + id},
	}
}

// enqueue commits n requests p<first>…, one transaction each, for merchant.
func (b *testBundle) enqueue(t *testing.T, merchant string, first, n int) {
	t.Helper()
	ctx := testContext(t)
	for i := first; i < first+n; i++ {
		tx, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, outbox.Enqueue(ctx, tx, request(fmt.Sprintf("p%06d", i), merchant), outbox.Config{}))
		require.NoError(t, tx.Commit(ctx))
	}
}

// rows returns the number of rows in the outbox table.
func (b *testBundle) rows(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(testContext(t), "SELECT count(*) FROM "+outbox.Table).Scan(&n))
	return n
}

// streamMsgs returns the number of messages in the stream.
func (b *testBundle) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	info, err := b.stream.Info(testContext(t))
	require.NoError(t, err)
	return info.State.Msgs
}

// stored returns the stream's messages in stream order.
func (b *testBundle) stored(t *testing.T) []jetstream.Msg {
	t.Helper()
	ctx := testContext(t)
	n := int(b.streamMsgs(t))
	c, err := b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	var msgs []jetstream.Msg
	for len(msgs) < n {
		batch, err := c.Fetch(n-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		require.NoError(t, batch.Error())
	}
	return msgs
}

// relayHandle is a running relay with its metrics.
type relayHandle struct {
	relay *outbox.Relay
	reg   *prometheus.Registry
	done  chan error
	stop  context.CancelFunc
}

// startRelay runs a relay with fast test timings (cfg's zero fields) until
// the test ends or stop is called; the test waits for it.
func (b *testBundle) startRelay(t *testing.T, cfg outbox.RelayConfig, hooks ...func(*outbox.Relay)) *relayHandle {
	t.Helper()
	h := &relayHandle{reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	cfg.DB = b.pool
	cfg.JetStream = b.js
	cfg.Registerer = h.reg
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	if cfg.RetryWait == 0 {
		cfg.RetryWait = 5 * time.Millisecond
		cfg.RetryWaitMax = 50 * time.Millisecond
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 500 * time.Millisecond
	}
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = 10 * time.Millisecond
	}
	var err error
	h.relay, err = outbox.NewRelay(cfg)
	require.NoError(t, err)
	for _, f := range hooks {
		f(h.relay)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-h.done)
		})
	}
	go func() { h.done <- h.relay.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// metric returns the value of a relay metric.
func (h *relayHandle) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
