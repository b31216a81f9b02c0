package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

// stack is one test's paystream: an embedded JetStream server, a fresh
// database, a gateway, and any number of in-process workers sharing them.
type stack struct {
	t      testing.TB
	nats   *natstest.Server
	pool   *pgxpool.Pool
	gw     processing.Gateway
	routes []processing.Route
	nc     *nats.Conn
	js     jetstream.JetStream
	ccfg   consumer.Config
	pcfg   processing.Config
	log    zerolog.Logger // the workers' logger; Nop unless stackOptions.logs
}

type stackOptions struct {
	gw          processing.Gateway
	routes      []processing.Route // several gateways; gw is then ignored
	concurrency int
	maxDeliver  int
	ackWait     time.Duration
	lease       time.Duration
	backoff     time.Duration
	backoffMax  time.Duration
	failures    uint32
	openTimeout time.Duration
	shutdown    time.Duration
	gwConc      int       // PAYSTREAM_GATEWAY_CONCURRENCY per gateway; 0: none
	logs        io.Writer // receives the workers' logs at debug level; nil: none
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	ns := natstest.New(t)
	s := newStackAt(t, o, ns.URL(), 1)
	s.nats = ns
	return s
}

// newStackAt builds a stack on the NATS server(s) at urls (comma-separated)
// with streams and consumer at the given replicas, and provisions them.
func newStackAt(t testing.TB, o stackOptions, urls string, replicas int) *stack {
	t.Helper()
	if o.gw == nil {
		o.gw = gateway.NewFake(gateway.FakeConfig{Seed: 1})
	}
	s := &stack{t: t, pool: pgtest.NewPool(t), gw: o.gw, routes: o.routes, log: zerolog.Nop()}
	if o.logs != nil {
		s.log = zerolog.New(o.logs).Level(zerolog.DebugLevel)
	}
	s.ccfg, s.pcfg = defaults.Consumer(), defaults.Processing("")
	s.ccfg.Replicas = replicas
	s.ccfg.FetchMaxWait = 250 * time.Millisecond
	override(&s.ccfg.Concurrency, o.concurrency)
	override(&s.ccfg.MaxDeliver, o.maxDeliver)
	override(&s.ccfg.AckWait, o.ackWait)
	override(&s.ccfg.ShutdownTimeout, o.shutdown)
	s.pcfg.MaxDeliver = s.ccfg.MaxDeliver
	s.pcfg.RetryBackoff, s.pcfg.RetryBackoffMax = 20*time.Millisecond, 200*time.Millisecond
	override(&s.pcfg.Lease, o.lease)
	override(&s.pcfg.RetryBackoff, o.backoff)
	override(&s.pcfg.RetryBackoffMax, o.backoffMax)
	override(&s.pcfg.BreakerFailures, o.failures)
	override(&s.pcfg.BreakerOpenTimeout, o.openTimeout)
	override(&s.pcfg.GatewayConcurrency, o.gwConc)
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	s.nc = nc
	s.js, err = jetstream.New(nc)
	require.NoError(t, err)
	// A freshly formed cluster on a busy machine may take a moment to
	// answer; the worker's own provisioning retries the same way.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(c, consumer.Provision(ctx, s.js, s.ccfg))
	}, 30*time.Second, 100*time.Millisecond, "provision streams and consumer")
	return s
}

// override sets *p to v unless v is the zero value (an option left unset).
func override[T comparable](p *T, v T) {
	var zero T
	if v != zero {
		*p = v
	}
}

// worker is one in-process worker of a stack.
type worker struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	m      *telemetry.Metrics
	reg    *prometheus.Registry
	cons   *consumer.Consumer
	once   sync.Once
}

// startWorker starts a worker with its own NATS connection, batcher and
// processor; it is stopped (drained) at the end of the test.
func (s *stack) startWorker(name string) *worker {
	s.t.Helper()
	return s.startWorkerAt(name, s.nats.URL())
}

// startWorkerAt starts a worker connected to the NATS URLs (comma-separated).
func (s *stack) startWorkerAt(name, urls string) *worker {
	s.t.Helper()
	closed := make(chan struct{})
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	require.NoError(s.t, err)
	js, err := jetstream.New(nc)
	require.NoError(s.t, err)
	reg := prometheus.NewRegistry()
	w := &worker{name: name, done: make(chan error, 1), reg: reg, m: telemetry.New(reg)}
	st := store.New(s.pool)
	b := store.NewBatcher(st, store.BatcherConfig{})
	pcfg := s.pcfg
	pcfg.Owner = name
	proc := processing.New(pcfg, b, s.gw, s.log, w.m)
	if len(s.routes) > 0 {
		proc = processing.NewRouted(pcfg, b, s.routes, s.log, w.m)
	}
	cons := consumer.New(js, s.ccfg, proc, s.log, w.m)
	w.cons = cons

	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	bctx, bcancel := context.WithCancel(context.Background())
	var bwg sync.WaitGroup
	bwg.Go(func() { _ = b.Run(bctx) })
	go func() {
		err := cons.Run(ctx)
		bcancel()
		bwg.Wait()
		if nc.Drain() != nil {
			nc.Close()
		}
		<-closed
		w.done <- err
	}()
	s.t.Cleanup(func() { w.stop(s.t) })
	return w
}

// stop drains the worker and waits for it.
func (w *worker) stop(t testing.TB) {
	w.once.Do(func() {
		w.cancel()
		select {
		case err := <-w.done:
			require.NoError(t, err)
		case <-time.After(60 * time.Second):
			t.Errorf("worker %s did not stop", w.name)
		}
	})
}

func request(i int, amount int64) *payment.Request {
	return &payment.Request{
		PaymentID:     fmt.Sprintf("pay_%06d", i),
		MerchantID:    "m001",
		CustomerID:    "c42",
		AmountMinor:   amount,
		Currency:      "EUR",
		PaymentMethod: "pm_card_visa",
		Description:   "order",
	}
}

func (s *stack) publishRequest(r *payment.Request, msgID string) {
	s.t.Helper()
	body, err := json.Marshal(r)
	require.NoError(s.t, err)
	s.publish("payments.requests."+r.MerchantID, body, msgID)
}

func (s *stack) publish(subject string, body []byte, msgID string) {
	s.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	_, err := s.js.PublishMsg(context.Background(), m)
	require.NoError(s.t, err)
}

// counts returns the rows by status.
func (s *stack) counts() map[payment.Status]int {
	s.t.Helper()
	var err error
	for range 50 { // fault tests kill connections: every idle one fails once
		var out map[payment.Status]int
		if out, err = s.tryCounts(); err == nil {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(s.t, err)
	return nil
}

func (s *stack) tryCounts() (map[payment.Status]int, error) {
	rows, err := s.pool.Query(context.Background(), `SELECT status, count(*) FROM payments GROUP BY status`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[payment.Status]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[payment.Status(st)] = n
	}
	return out, rows.Err()
}

func (s *stack) finalRows() int {
	c := s.counts()
	return c[payment.StatusSucceeded] + c[payment.StatusDeclined] + c[payment.StatusFailed]
}

// waitFor polls cond until it holds or the deadline passes.
func (s *stack) waitFor(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %s waiting for %s; rows %v", timeout, what, s.counts())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamMsgs returns every message stored in a stream.
func (s *stack) streamMsgs(stream string) []*jetstream.RawStreamMsg {
	s.t.Helper()
	ctx := context.Background()
	st, err := s.js.Stream(ctx, stream)
	require.NoError(s.t, err)
	info, err := st.Info(ctx)
	require.NoError(s.t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

func (s *stack) streamCount(stream string) int {
	s.t.Helper()
	st, err := s.js.Stream(context.Background(), stream)
	require.NoError(s.t, err)
	info, err := st.Info(context.Background())
	require.NoError(s.t, err)
	return int(info.State.Msgs)
}

// pending returns how many messages the consumer has not yet seen acked.
func (s *stack) pending() (numPending uint64, ackPending int) {
	s.t.Helper()
	c, err := s.js.Consumer(context.Background(), s.ccfg.Stream, s.ccfg.Consumer)
	require.NoError(s.t, err)
	info, err := c.Info(context.Background())
	require.NoError(s.t, err)
	return info.NumPending, info.NumAckPending
}

// waitSettled waits until the consumer has nothing pending or unacked.
func (s *stack) waitSettled(timeout time.Duration) {
	s.t.Helper()
	s.waitFor("consumer settled", timeout, func() bool {
		p, a := s.pending()
		return p == 0 && a == 0
	})
}

// countingGateway counts calls to the gateway it wraps.
type countingGateway struct {
	processing.Gateway
	calls atomic.Int64
}

func (g *countingGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.calls.Add(1)
	return g.Gateway.Charge(ctx, c)
}
