// Package workertest runs one worker in-process — consumer, processor,
// batcher and heartbeat — on a real NATS JetStream server and a real
// Postgres database, for the tests of the operator tools (paystreamctl and
// the console) that need a fleet to look at.
package workertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// Concurrency is the worker's slots.
const Concurrency = 8

// MixedGateway is the fake gateway with two rules on top of its own
// (amounts ending in 13 decline): amounts ending in 22 are rejected (422),
// amounts ending in 44 fail with a 503 until Heal.
type MixedGateway struct {
	*gateway.Fake
	mu     sync.Mutex
	healed bool
}

// NewMixedGateway returns a MixedGateway whose 44s fail.
func NewMixedGateway() *MixedGateway {
	return &MixedGateway{Fake: gateway.NewFake(gateway.FakeConfig{Seed: 1})}
}

// Charge applies the rules, then the fake's.
func (g *MixedGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.mu.Lock()
	healed := g.healed
	g.mu.Unlock()
	switch {
	case c.AmountMinor%100 == 22:
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 422, Code: "amount_not_allowed"}
	case c.AmountMinor%100 == 44 && !healed:
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503, Code: "service_unavailable"}
	}
	return g.Fake.Charge(ctx, c)
}

// Heal makes the 44s succeed from now on.
func (g *MixedGateway) Heal() {
	g.mu.Lock()
	g.healed = true
	g.mu.Unlock()
}

// Worker is the running worker and what it runs on.
type Worker struct {
	NATS        *natstest.Server
	DatabaseURL string
	Pool        *pgxpool.Pool
	JS          jetstream.JetStream
	Store       *store.Store
	Gateway     *MixedGateway
	// Consumer is the configuration the streams were provisioned with.
	Consumer consumer.Config

	stop func()
}

// Start provisions the streams and runs a worker with a MixedGateway until
// the test ends (or Stop). Its heartbeat is beat with the worker's live
// fields (in flight, breaker, last pull, readiness, concurrency) filled in.
func Start(t testing.TB, beat fleet.Heartbeat) *Worker {
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
		Consumer: contract.Consumer, SubjectPrefix: contract.SubjectPrefix, Replicas: 1, Concurrency: Concurrency, MaxDeliver: 3,
		AckWait: 5 * time.Second, StreamMaxAge: time.Hour, DuplicateWindow: 2 * time.Minute, ShutdownTimeout: 5 * time.Second,
		RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 50 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond}
	require.NoError(t, consumer.Provision(t.Context(), js, ccfg))

	m := telemetry.New(prometheus.NewRegistry())
	st := store.New(pool)
	batcher := store.NewBatcher(st, store.BatcherConfig{})
	gw := NewMixedGateway()
	proc := processing.New(processing.Config{Owner: "w1", Lease: 10 * time.Second, MaxDeliver: 3,
		RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 50 * time.Millisecond, RateBurst: 1,
		BreakerFailures: 100, BreakerOpenTimeout: time.Second}, batcher, gw, zerolog.Nop(), m)
	cons := consumer.New(js, ccfg, proc, zerolog.Nop(), m)
	beater := fleet.NewBeater(js, fleet.Config{Interval: 100 * time.Millisecond}, func(context.Context) fleet.Heartbeat {
		hb := beat
		hb.Concurrency, hb.InFlight, hb.Breaker, hb.LastPull, hb.Ready = Concurrency, proc.InFlight(), proc.BreakerState(), cons.LastPull(), true
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
	wg.Go(func() { _ = beater.Run(ctx) })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			bcancel()
			bwg.Wait()
		})
	}
	t.Cleanup(stop)
	return &Worker{NATS: ns, DatabaseURL: dbURL, Pool: pool, JS: js, Store: st, Gateway: gw, Consumer: ccfg, stop: stop}
}

// Stop stops the worker and waits for it; the servers stay up until the
// test ends.
func (w *Worker) Stop() { w.stop() }
