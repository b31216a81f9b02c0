package fleet_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/fleet"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/cmdwire"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// The fleet tests run several in-process worker stacks, each with its own
// NATS connections, consumer, processor, guard and Coordinator — everything
// a worker process runs on the gateway's path except Postgres, which a
// small in-memory Claims stands in for (the budget and the breaker do not
// look at the store) — against one gateway simulator behind a sim.Meter
// that counts the charges arriving in each second.

// gatewayName is the one gateway every stack calls: the key of the shared
// record.
const gatewayName = "sim"

// memClaims is an in-memory processing.Claims for payments whose keys are
// all distinct: every claim is new, every completion is recorded.
type memClaims struct{}

func (memClaims) Claim(_ context.Context, c payment.Claim) (payment.ClaimResult, error) {
	return payment.ClaimResult{Kind: payment.ClaimNew, Attempt: 1}, nil
}

func (memClaims) Complete(_ context.Context, c payment.Completion) (payment.Record, error) {
	return payment.Record{IdempotencyKey: c.Key, PaymentID: c.Key, Status: c.Status, Attempts: 1, Gateway: c.Gateway,
		GatewayChargeID: c.GatewayChargeID, ErrorCode: c.ErrorCode, AmountMinor: 1000, Currency: "EUR",
		CompletedAt: time.Now()}, nil
}

func (memClaims) Release(context.Context, payment.Release) error { return nil }

// countingGateway counts the calls each stack makes and notes when a call
// starts while another stack's call is in flight.
type countingGateway struct {
	processing.Gateway
	id  int
	rig *rig
}

func (g countingGateway) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	g.rig.callStart(g.id)
	defer g.rig.callEnd(g.id)
	return g.Gateway.Charge(ctx, c)
}

// rig is one test's world: a work server (the streams), a fleet server
// (the KV bucket; a separate server so that a test can take KV away while
// the work goes on), the simulator and its meter.
type rig struct {
	t     *testing.T
	work  *natstest.Server
	kvSrv *natstest.Server
	sim   *sim.Server
	meter *sim.Meter
	http  *httptest.Server
	ccfg  consumer.Config
	log   zerolog.Logger // the Coordinators' logger: the test log with -v

	callLedger // the stacks' gateway calls

	// outage, while set, answers every request to the simulator 503.
	outage atomic.Bool
}

func newRig(t *testing.T, simCfg sim.Config) *rig {
	t.Helper()
	r := &rig{t: t, work: natstest.New(t), kvSrv: natstest.New(t)}
	r.log = zerolog.Nop()
	if testing.Verbose() {
		r.log = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	}
	r.sim = sim.New(simCfg, zerolog.Nop(), prometheus.NewRegistry())
	r.meter = sim.NewMeter(r.sim)
	r.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.outage.Load() {
			// Every request, replays of charged keys and lookups
			// included: the simulator's ErrorRate spares a key it has
			// charged (its idempotency memory answers 200), which a
			// probe would take for the gateway's recovery.
			http.Error(w, `{"error":{"code":"service_unavailable","message":"outage"}}`, http.StatusServiceUnavailable)
			return
		}
		r.meter.ServeHTTP(w, req)
	}))
	t.Cleanup(r.http.Close)
	r.ccfg = defaults.Consumer()
	r.ccfg.Concurrency = 16
	r.ccfg.AckWait = 30 * time.Second
	r.ccfg.RetryBackoff, r.ccfg.RetryBackoffMax = 100*time.Millisecond, time.Second
	js := r.connect(r.work)
	require.NoError(t, consumer.Provision(t.Context(), js, r.ccfg))
	return r
}

func (r *rig) connect(s *natstest.Server) jetstream.JetStream {
	r.t.Helper()
	return connectJS(r.t, s, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// publish puts n payment requests with distinct keys on the stream.
func (r *rig) publish(n int, prefix string) {
	r.t.Helper()
	js := r.connect(r.work)
	for i := range n {
		id := fmt.Sprintf("%s_%06d", prefix, i)
		body := fmt.Sprintf(`{"payment_id":%q,"idempotency_key":%q,"merchant_id":"m_1","customer_id":"c_1",`+
			`"amount_minor":1000,"currency":"EUR","payment_method":"pm_card_visa"}`, id, id)
		_, err := js.PublishAsync(r.ccfg.SubjectPrefix+".requests.m_1", []byte(body), jetstream.WithMsgID(id))
		require.NoError(r.t, err)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		r.t.Fatal("publish did not complete")
	}
}

// stackOptions shape one stack.
type stackOptions struct {
	budget      float64
	interval    time.Duration
	ttl         time.Duration
	breaker     bool
	failures    uint32
	openFor     time.Duration
	concurrency int  // guard's ceiling (GatewayConcurrency)
	adaptive    bool // AIMD
	gatewayURL  string
	timeout     time.Duration
}

// stack is one in-process worker.
type stack struct {
	id     int
	proc   *processing.Processor
	m      *telemetry.Metrics
	reg    *prometheus.Registry
	coord  *fleet.Coordinator
	kvConn *nats.Conn
	// The consumer stops first and drains; the Coordinator after it, as in
	// the worker, so that the share is held until the last call.
	cancelCons, cancelCoord context.CancelFunc
	cons, coordDone         sync.WaitGroup
}

// start runs a worker stack with id.
func (r *rig) start(id int, o stackOptions) *stack {
	r.t.Helper()
	url := o.gatewayURL
	if url == "" {
		url = r.http.URL
	}
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	hgw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: url, Timeout: o.timeout, Name: gatewayName})
	require.NoError(r.t, err)
	r.t.Cleanup(hgw.Close)
	reg := prometheus.NewRegistry()
	m := telemetry.New(reg)
	owner := fmt.Sprintf("w%d", id)
	pcfg := defaults.Processing(owner)
	pcfg.RetryBackoff, pcfg.RetryBackoffMax = 100*time.Millisecond, time.Second
	if o.failures > 0 {
		pcfg.BreakerFailures = o.failures
	}
	if o.openFor > 0 {
		pcfg.BreakerOpenTimeout = o.openFor
	}
	pcfg.GatewayConcurrency, pcfg.AdaptiveConcurrency = o.concurrency, o.adaptive
	proc := processing.New(pcfg, memClaims{}, countingGateway{Gateway: hgw, id: id, rig: r}, zerolog.Nop(), m)

	workNC, err := nats.Connect(r.work.URL())
	require.NoError(r.t, err)
	workJS, err := jetstream.New(workNC)
	require.NoError(r.t, err)
	kvNC, err := nats.Connect(r.kvSrv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.RetryOnFailedConnect(true))
	require.NoError(r.t, err)
	kvJS, err := jetstream.New(kvNC)
	require.NoError(r.t, err)

	s := &stack{id: id, proc: proc, m: m, reg: reg, kvConn: kvNC}
	consCtx, cancelCons := context.WithCancel(context.Background())
	coordCtx, cancelCoord := context.WithCancel(context.Background())
	s.cancelCons, s.cancelCoord = cancelCons, cancelCoord
	cons := consumer.New(workJS, r.ccfg, proc, zerolog.Nop(), m)
	if o.budget > 0 || o.breaker {
		gcfg := fleet.GatewayConfig{WorkerID: owner, Gateway: gatewayName, Budget: o.budget, Interval: o.interval, TTL: o.ttl,
			Breaker: o.breaker, ProbeTTL: 2*pcfg.BreakerOpenTimeout + o.interval + o.timeout, CallTimeout: o.timeout}
		s.coord = fleet.NewCoordinator(kvJS, gcfg, cmdwire.GuardLocal(proc.Guard()), r.log)
		s.coordDone.Go(func() { _ = s.coord.Run(coordCtx) })
	}
	s.cons.Go(func() { _ = cons.Run(consCtx) })
	r.t.Cleanup(func() {
		s.stop()
		workNC.Close()
		kvNC.Close()
	})
	return s
}

// stop stops the stack cleanly: it drains, and its Coordinator leaves the
// record (its share is free at once). Idempotent.
func (s *stack) stop() {
	s.cancelCons()
	s.cons.Wait()
	s.cancelCoord()
	s.coordDone.Wait()
}

// crash stops the stack without a word to the fleet: its KV connection is
// closed first, so that its entry stays until it expires.
func (s *stack) crash() {
	s.kvConn.Close()
	s.stop()
}

// record reads the gateway's record from the fleet server.
func (r *rig) record(js jetstream.JetStream) (fleet.GatewayRecord, bool) {
	recs, err := fleet.Gateways(context.Background(), js, "", time.Now())
	if err != nil || len(recs) == 0 {
		return fleet.GatewayRecord{}, false
	}
	return recs[0], true
}

// waitSecond returns once the wall clock has passed the start of the next
// second after t.
func waitSecond(t *testing.T, after time.Time) {
	t.Helper()
	next := after.Truncate(time.Second).Add(time.Second)
	require.Eventually(t, func() bool { return time.Now().After(next) }, time.Until(next)+2*time.Second, 10*time.Millisecond)
}
