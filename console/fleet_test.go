package console_test

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/paystream/paystream/console"
	"github.com/paystream/paystream/contract"
	psfleet "github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/internal/testenv/workertest"
	"github.com/paystream/paystream/ops"
	"github.com/paystream/paystream/payment"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// bundle is an in-process worker on real NATS and Postgres
// (workertest), and the ops.Deployment the console reads it through.
type bundle struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
	gw   *workertest.MixedGateway
	dep  *ops.Deployment
}

func startFleet(t *testing.T) *bundle {
	t.Helper()
	w := workertest.Start(t, psfleet.Heartbeat{WorkerID: "worker-1", Version: "v1.4.0", Host: "pay-node-a", RateLimit: 200,
		StartedAt: time.Now().Add(-time.Hour)})
	pool, js, st := w.Pool, w.JS, w.Store
	dl := ops.DeadLetters{JS: js, Stream: contract.DLQStream, SubjectPrefix: contract.SubjectPrefix}
	dep := &ops.Deployment{Store: st, JS: js,
		OverviewConfig: ops.OverviewConfig{StatusConfig: ops.StatusConfig{Stream: contract.Stream, DLQStream: contract.DLQStream,
			DLQSubjects: contract.SubjectPrefix + ".dlq.>", StuckAfter: time.Minute}},
		Replayer: ops.Replayer{DeadLetters: dl, Store: st, Horizon: 24 * time.Hour,
			Limits: payment.Limits{MaxAmountMinor: 1_000_000_00, SubjectPrefix: contract.SubjectPrefix}},
	}
	return &bundle{pool: pool, js: js, gw: w.Gateway, dep: dep}
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
