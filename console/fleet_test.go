package console_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/paystream/paystream/console"
	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/contract"
	psfleet "github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// mixedGateway is the fake gateway with two rules on top of its own
// (amounts ending in 13 decline): amounts ending in 22 are rejected (422),
// amounts ending in 44 fail with a 503 while failing is true.
type mixedGateway struct {
	*gateway.Fake
	mu      sync.Mutex
	failing bool
}

func (g *mixedGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.mu.Lock()
	failing := g.failing
	g.mu.Unlock()
	switch {
	case c.AmountMinor%100 == 22:
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 422, Code: "amount_not_allowed"}
	case c.AmountMinor%100 == 44 && failing:
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503, Code: "service_unavailable"}
	}
	return g.Fake.Charge(ctx, c)
}

func (g *mixedGateway) heal() {
	g.mu.Lock()
	g.failing = false
	g.mu.Unlock()
}

// bundle is an in-process worker fleet on real NATS and Postgres, and the
// ops.Deployment the console reads it through.
type bundle struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	gw   *mixedGateway
	dep  *ops.Deployment
}

func startFleet(t *testing.T) *bundle {
	t.Helper()
	ns := natstest.New(t)
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ccfg := consumer.Config{Stream: contract.Stream, ResultsStream: contract.ResultsStream, DLQStream: contract.DLQStream,
		Consumer: contract.Consumer, SubjectPrefix: contract.SubjectPrefix, Replicas: 1, Concurrency: 8, MaxDeliver: 3,
		AckWait: 5 * time.Second, StreamMaxAge: time.Hour, DuplicateWindow: 2 * time.Minute, ShutdownTimeout: 5 * time.Second,
		RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 50 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond}
	require.NoError(t, consumer.Provision(t.Context(), js, ccfg))

	m := telemetry.New(prometheus.NewRegistry())
	st := store.New(pool)
	batcher := store.NewBatcher(st, store.BatcherConfig{})
	gw := &mixedGateway{Fake: gateway.NewFake(gateway.FakeConfig{Seed: 1}), failing: true}
	proc := processing.New(processing.Config{Owner: "w1", Lease: 10 * time.Second, MaxDeliver: 3,
		RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 50 * time.Millisecond, RateBurst: 1,
		BreakerFailures: 100, BreakerOpenTimeout: time.Second}, batcher, gw, zerolog.Nop(), m)
	cons := consumer.New(js, ccfg, proc, zerolog.Nop(), m)
	beat := psfleet.NewBeater(js, psfleet.Config{Interval: 100 * time.Millisecond}, func(context.Context) psfleet.Heartbeat {
		hb := psfleet.Heartbeat{WorkerID: "worker-1", Version: "v1.4.0", Host: "pay-node-a", Concurrency: 8, InFlight: proc.InFlight(),
			Breaker: proc.BreakerState(), LastPull: cons.LastPull(), Ready: true, RateLimit: 200, StartedAt: time.Now().Add(-time.Hour)}
		if err := cons.Ready(); err != nil {
			hb.Ready, hb.NotReady = false, err.Error()
		}
		return hb
	}, zerolog.Nop())

	ctx, cancel := context.WithCancel(context.Background())
	bctx, bcancel := context.WithCancel(context.Background())
	var wg, bwg sync.WaitGroup
	bwg.Go(func() { _ = batcher.Run(bctx) })
	wg.Go(func() { _ = cons.Run(ctx) })
	wg.Go(func() { _ = beat.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		bcancel()
		bwg.Wait()
	})
	dl := ops.DeadLetters{JS: js, Stream: contract.DLQStream, SubjectPrefix: contract.SubjectPrefix}
	dep := &ops.Deployment{Store: st, JS: js,
		OverviewConfig: ops.OverviewConfig{StatusConfig: ops.StatusConfig{Stream: contract.Stream, DLQStream: contract.DLQStream,
			DLQSubjects: contract.SubjectPrefix + ".dlq.>", StuckAfter: time.Minute}},
		Replayer: ops.Replayer{DeadLetters: dl, Store: st, Horizon: 24 * time.Hour,
			Limits: payment.Limits{MaxAmountMinor: 1_000_000_00, SubjectPrefix: contract.SubjectPrefix}},
	}
	return &bundle{pool: pool, js: js, gw: gw, dep: dep}
}

func (b *bundle) publish(t *testing.T, id, merchant string, amount int64, extra string) {
	t.Helper()
	body := fmt.Sprintf(`{"payment_id":%q,"merchant_id":%q,"amount_minor":%d,"currency":"EUR","payment_method":"pm_card_visa"%s}`,
		id, merchant, amount, extra)
	_, err := b.js.Publish(t.Context(), "payments.requests."+merchant, []byte(body))
	require.NoError(t, err)
}

// cardInDescription is a card number a client put where it must not: it
// must never be rendered.
const cardInDescription = "4242 4242 4242 4242"

// seed publishes a mixed workload and waits until it settles: 15
// successes, 2 declines, a gateway_rejected, an invalid one (card number in
// the description), an exhausted one (failed row) and a conflict.
func (b *bundle) seed(t *testing.T) {
	t.Helper()
	for i := range 20 {
		id := fmt.Sprintf("pay_%03d", i)
		merchant := []string{"m_acme", "m_globex", "m_initech"}[i%3]
		switch i {
		case 5:
			b.publish(t, id, merchant, 1113, "") // declined
		case 7:
			b.publish(t, id, merchant, 1022, "") // gateway_rejected
		case 9:
			b.publish(t, id, merchant, 1044, `,"description":"card `+cardInDescription+`"`) // invalid
		case 11:
			b.publish(t, id, merchant, 1044, "") // exhausted: failed row
		default:
			b.publish(t, id, merchant, int64(1001+i*10), "") // ends in 1: succeeds
		}
	}
	b.publish(t, "pay_003", "m_acme", 9999, "") // conflict
	var final, dls int
	settled := assert.Eventually(t, func() bool {
		if b.pool.QueryRow(t.Context(), `SELECT count(*) FROM payments WHERE status <> 'processing' AND payment_id LIKE 'pay\_%'`).Scan(&final) != nil {
			return false
		}
		list, err := b.dep.DeadLetterList(t.Context(), ops.DeadLetterFilter{})
		dls = list.Total
		return err == nil && final == 19 && dls == 4
	}, 30*time.Second, 50*time.Millisecond)
	require.True(t, settled, "final rows %d (want 19), dead letters %d (want 4)", final, dls)
	_, err := b.pool.Exec(t.Context(), `ANALYZE payments`)
	require.NoError(t, err)
}

// history inserts n final rows completed over the last hour (for the
// chart), directly: the console reads whatever the table holds.
func (b *bundle) history(t *testing.T, n int) {
	t.Helper()
	_, err := b.pool.Exec(t.Context(), `
		INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor, currency, status, attempts,
		                      gateway, gateway_charge_id, error_code, fingerprint, created_at, updated_at, completed_at)
		SELECT 'hist_' || i, 'hist_' || i, 'm_' || (i % 7), 500 + (i * 97) % 90000, 'EUR',
		       CASE WHEN i % 23 = 0 THEN 'failed' WHEN i % 9 = 0 THEN 'declined' ELSE 'succeeded' END, 1,
		       'fake', CASE WHEN i % 23 = 0 OR i % 9 = 0 THEN NULL ELSE 'ch_hist_' || i END,
		       CASE WHEN i % 23 = 0 THEN 'gateway_exhausted' WHEN i % 9 = 0 THEN 'card_declined' END, 'fp',
		       t, t, t + interval '40 milliseconds'
		FROM generate_series(1, $1) AS i,
		     LATERAL (SELECT clock_timestamp() - interval '59 minutes' * power(i::float / $1, 0.7) AS t) AS x`, n)
	require.NoError(t, err)
	_, err = b.pool.Exec(t.Context(), `ANALYZE payments`)
	require.NoError(t, err)
}

// users is a basic-auth table: alice (password "alice-pw") and bob.
func users(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, u := range []string{"alice", "bob"} {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		require.NoError(t, err)
		out[u] = h
	}
	return out
}

// serve starts the console over b's deployment on an httptest server.
func serve(t *testing.T, b *bundle, cfg console.Config) (*httptest.Server, *console.Server) {
	t.Helper()
	srv := console.New(cfg, b.dep, zerolog.Nop())
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	return ts, srv
}
