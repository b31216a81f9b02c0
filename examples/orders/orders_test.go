package orders_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/examples/orders"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/publish/outbox"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// newService returns an order service on a fresh database that also holds
// the worker's tables, as in the compose file's local stack.
func newService(t *testing.T) (*orders.Service, *pgxpool.Pool) {
	t.Helper()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, orders.Migrate(ctx, pool, dbURL))
	return orders.New(pool, outbox.Config{}), pool
}

// group runs goroutines until the test ends, then cancels and waits for
// them, failing the test if one returned an error.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newGroup(t *testing.T) *group {
	g := &group{}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		g.cancel()
		g.wg.Wait()
	})
	return g
}

func (g *group) Go(t *testing.T, name string, run func(context.Context) error) {
	g.wg.Go(func() {
		if err := run(g.ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", name, err)
		}
	})
}

// TestWholeLoop is the loop of docs/upstream.md from the order service's
// side: orders placed with their payment requests in one transaction, the
// outbox relay publishing them, a paystream worker charging them on the
// fake gateway (which declines amounts ending in 13), and the outcomes
// marking the orders paid or failed.
func TestWholeLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	svc, pool := newService(t)

	srv := natstest.New(t)
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ccfg := defaults.Consumer()
	ccfg.FetchMaxWait = 100 * time.Millisecond
	require.NoError(t, consumer.Provision(ctx, js, ccfg), "provision the streams as a worker does")

	// Registered after nc.Close, so it runs first: everything stops before
	// the connection closes.
	g := newGroup(t)
	fake := gateway.NewFake(gateway.FakeConfig{Seed: 1})
	startWorker(t, g, pool, js, ccfg, fake)
	relay, err := outbox.NewRelay(outbox.RelayConfig{DB: pool, JetStream: js, PollInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	g.Go(t, "relay", relay.Run)
	g.Go(t, "results consumer", func(ctx context.Context) error { return svc.ConsumeResults(ctx, js, "") })

	placed := []orders.Order{
		{ID: "ord_1", MerchantID: "m001", AmountMinor: 1999, Currency: "EUR"},
		{ID: "ord_2", MerchantID: "m001", AmountMinor: 2013, Currency: "EUR"}, // declined
		{ID: "ord_3", MerchantID: "m002", AmountMinor: 500, Currency: "USD"},
	}
	for _, o := range placed {
		require.NoError(t, svc.PlaceOrder(ctx, o, "pm_card_visa"))
	}

	// An order whose transaction rolls back after the enqueue (say, the
	// stock check failed): neither the order nor its payment exists.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, svc.PlaceOrderTx(ctx, tx, orders.Order{ID: "ord_rolled_back", MerchantID: "m001", AmountMinor: 700, Currency: "EUR"}, "pm_card_visa"))
	require.NoError(t, tx.Rollback(ctx))

	// An invalid request is refused inside the transaction: no order.
	err = svc.PlaceOrder(ctx, orders.Order{ID: "ord_invalid", MerchantID: "m001", AmountMinor: 700, Currency: "EURO"}, "pm_card_visa")
	require.ErrorIs(t, err, payment.ErrInvalid)

	want := map[string]string{"ord_1": orders.StatusPaid, "ord_2": orders.StatusFailed, "ord_3": orders.StatusPaid}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for id, status := range want {
			o, err := svc.Get(ctx, id)
			require.NoError(c, err)
			require.Equal(c, status, o.Status, "order %s", id)
		}
	}, 45*time.Second, 50*time.Millisecond, "every committed order marked by its outcome")

	o, err := svc.Get(ctx, "ord_2")
	require.NoError(t, err)
	require.NotEmpty(t, o.ErrorCode, "a declined order records the gateway's code")
	for id, status := range want {
		charges := 0 // a decline charges nothing
		if status == orders.StatusPaid {
			charges = 1
		}
		require.Equal(t, charges, fake.ChargesFor(orders.PaymentKey(id)), "charges of order %s", id)
	}
	for _, id := range []string{"ord_rolled_back", "ord_invalid"} {
		_, err := svc.Get(ctx, id)
		require.ErrorIs(t, err, pgx.ErrNoRows, "order %s exists", id)
		require.Zero(t, fake.ChargesFor(orders.PaymentKey(id)), "order %s was charged", id)
	}
	var pending int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+outbox.Table).Scan(&pending))
	require.Zero(t, pending, "rows left in the outbox")
}

// startWorker runs an in-process paystream worker on g, assembled as
// cmd/worker assembles one (see consumer/stack_test.go).
func startWorker(t *testing.T, g *group, pool *pgxpool.Pool, js jetstream.JetStream, ccfg consumer.Config, gw processing.Gateway) {
	t.Helper()
	m := telemetry.New(prometheus.NewRegistry())
	b := store.NewBatcher(store.New(pool), store.BatcherConfig{})
	pcfg := defaults.Processing("orders-example-worker")
	proc := processing.New(pcfg, b, gw, zerolog.Nop(), m)
	cons := consumer.New(js, ccfg, proc, zerolog.Nop(), m)
	g.Go(t, "worker", func(ctx context.Context) error {
		bctx, bcancel := context.WithCancel(context.Background())
		var bwg sync.WaitGroup
		bwg.Go(func() { _ = b.Run(bctx) })
		err := cons.Run(ctx)
		bcancel()
		bwg.Wait()
		return err
	})
}

// TestApplyOutcomeIdempotent: outcomes may arrive more than once and in any
// order; the order ends as the last word of paystream says, and paid is
// final.
func TestApplyOutcomeIdempotent(t *testing.T) {
	ctx := t.Context()
	svc, _ := newService(t)
	require.NoError(t, svc.PlaceOrder(ctx, orders.Order{ID: "ord_9", MerchantID: "m001", AmountMinor: 900, Currency: "EUR"}, "pm_card_visa"))
	key := orders.PaymentKey("ord_9")
	outcome := func(s payment.Status, code string) payment.Outcome {
		return payment.Outcome{PaymentID: "pay_ord_9", IdempotencyKey: key, Status: s, ErrorCode: code}
	}
	steps := []struct {
		outcome payment.Outcome
		changed bool
		status  string
	}{
		{outcome(payment.StatusFailed, "exhausted"), true, orders.StatusFailed},
		{outcome(payment.StatusFailed, "exhausted"), false, orders.StatusFailed}, // redelivered
		{outcome(payment.StatusSucceeded, ""), true, orders.StatusPaid},          // a replay succeeded
		{outcome(payment.StatusSucceeded, ""), false, orders.StatusPaid},         // redelivered
		{outcome(payment.StatusDeclined, "card_declined"), false, orders.StatusPaid},
		{payment.Outcome{PaymentID: "pay_other", IdempotencyKey: "other-service-key", Status: payment.StatusSucceeded}, false, orders.StatusPaid},
	}
	for i, st := range steps {
		changed, err := svc.ApplyOutcome(ctx, st.outcome)
		require.NoError(t, err, "step %d", i)
		require.Equal(t, st.changed, changed, "step %d: %s %s", i, st.outcome.IdempotencyKey, st.outcome.Status)
		o, err := svc.Get(ctx, "ord_9")
		require.NoError(t, err)
		require.Equal(t, st.status, o.Status, "step %d", i)
	}
}
