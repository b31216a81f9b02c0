package consumer_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
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
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/publish"
	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// tracedStack is one worker with tracing on, recording every span in
// memory: real JetStream, real Postgres (with the pgx tracer), gatewaysim
// over real HTTP behind the traced gateway client.
type tracedStack struct {
	exp     *tracetest.InMemoryExporter
	tr      *telemetry.Tracing
	sim     *sim.Server
	js      jetstream.JetStream
	nc      *nats.Conn
	ccfg    consumer.Config
	m       *telemetry.Metrics
	reg     *prometheus.Registry
	stop    func()
	charges int
}

// newTracedStack starts the stack; failFirst charges answer 503 (simulated
// outage, nothing charged) before the simulator answers normally.
func newTracedStack(t *testing.T, failFirst int) *tracedStack {
	t.Helper()
	s := &tracedStack{exp: tracetest.NewInMemoryExporter()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(s.exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	s.tr = telemetry.NewTracing(tp)

	ns := natstest.New(t)
	nc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	s.nc = nc
	s.js, err = jetstream.New(nc)
	require.NoError(t, err)
	s.ccfg = defaults.Consumer()
	s.ccfg.FetchMaxWait = 250 * time.Millisecond
	s.ccfg.Tracing = s.tr
	require.NoError(t, consumer.Provision(t.Context(), s.js, s.ccfg))

	pcfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	pcfg.ConnConfig.Tracer = store.NewQueryTracer(tp)
	pool, err := pgxpool.NewWithConfig(t.Context(), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	// gatewaysim, with its ErrorRate at 1 for the first failFirst charges:
	// a small switch in front of the real simulator, one charge at a time.
	s.sim = sim.New(sim.Config{Seed: 1}, zerolog.Nop(), nil)
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			s.sim.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		s.charges++
		rate := 0.0
		if s.charges <= failFirst {
			rate = 1
		}
		s.sim.SetConfig(sim.Config{ErrorRate: rate})
		s.sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	gw, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: srv.URL, Tracing: s.tr})
	require.NoError(t, err)
	t.Cleanup(gw.Close)

	s.reg = prometheus.NewRegistry()
	s.m = telemetry.New(s.reg)
	b := store.NewBatcher(store.New(pool), store.BatcherConfig{})
	proc := processing.New(tracedProcessing(s.ccfg.MaxDeliver, s.tr), b, gw, zerolog.Nop(), s.m)
	wnc, err := nats.Connect(ns.URL())
	require.NoError(t, err)
	wjs, err := jetstream.New(wnc)
	require.NoError(t, err)
	cons := consumer.New(wjs, s.ccfg, proc, zerolog.Nop(), s.m)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	bctx, bcancel := context.WithCancel(context.Background())
	wg.Go(func() { _ = b.Run(bctx) })
	wg.Go(func() {
		assert.NoError(t, cons.Run(ctx))
		bcancel()
	})
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			wnc.Close()
		})
	}
	t.Cleanup(s.stop)
	return s
}

func tracedProcessing(maxDeliver int, tr *telemetry.Tracing) processing.Config {
	c := defaults.Processing("traced-worker")
	c.MaxDeliver = maxDeliver
	c.RetryBackoff, c.RetryBackoffMax = 20*time.Millisecond, 200*time.Millisecond
	c.Tracing = tr
	return c
}

// TestTraceOnePaymentAcrossTwoDeliveries: a payment whose first charge
// answers 503 and whose second succeeds makes one trace, from the
// publisher's send span through both deliveries, their claims, gateway
// calls (which the gateway saw), records, settlements and the outcome
// event, whose headers carry the trace on.
func TestTraceOnePaymentAcrossTwoDeliveries(t *testing.T) {
	t.Parallel()
	s := newTracedStack(t, 1)

	outcomes := make(chan *nats.Msg, 4)
	sub, err := s.nc.ChanSubscribe(s.ccfg.ResultSubject("*"), outcomes)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	pub, err := publish.New(t.Context(), s.js, publish.Config{Tracing: s.tr})
	require.NoError(t, err)
	req := request(1, 1250)
	_, err = pub.Publish(t.Context(), req)
	require.NoError(t, err)

	var out *nats.Msg
	select {
	case out = <-outcomes:
	case <-time.After(30 * time.Second):
		t.Fatal("no outcome event")
	}
	require.Equal(t, s.ccfg.ResultSubject("succeeded"), out.Subject)
	s.stop() // every span has ended once the worker is stopped

	spans := s.exp.GetSpans()
	t.Log("span tree of one traced payment:\n" + spanTree(spans))

	send := only(t, spans, "send payments.requests")
	traceID := send.SpanContext.TraceID()
	for _, sp := range spans {
		require.Equal(t, traceID, sp.SpanContext.TraceID(), "span %q is in another trace", sp.Name)
	}
	assert.Equal(t, trace.SpanKindProducer, send.SpanKind)
	assert.Equal(t, "nats", attr(send, "messaging.system"))
	assert.Equal(t, req.PaymentID, attr(send, "messaging.message.id"))

	// Two deliveries, each a child of the creation context and linked to
	// it, with the conventions' attributes.
	procs := named(spans, "process payments.requests")
	require.Len(t, procs, 2)
	sort.Slice(procs, func(i, j int) bool {
		return attr(procs[i], "messaging.nats.message.delivery_count") < attr(procs[j], "messaging.nats.message.delivery_count")
	})
	for i, p := range procs {
		assert.Equal(t, trace.SpanKindConsumer, p.SpanKind)
		assert.Equal(t, send.SpanContext.SpanID(), p.Parent.SpanID(), "process %d parent", i+1)
		require.Len(t, p.Links, 1)
		assert.Equal(t, send.SpanContext, p.Links[0].SpanContext.WithRemote(false), "process %d link", i+1)
		assert.Equal(t, "nats", attr(p, "messaging.system"))
		assert.Equal(t, "process", attr(p, "messaging.operation.type"))
		assert.Equal(t, "payments.requests.m001", attr(p, "messaging.destination.name"))
		assert.Equal(t, s.ccfg.Consumer, attr(p, "messaging.consumer.group.name"))
		assert.Equal(t, req.PaymentID, attr(p, "messaging.message.id"))
		assert.Equal(t, fmt.Sprint(i+1), attr(p, "messaging.nats.message.delivery_count"))
		assert.Equal(t, req.PaymentID, attr(p, "paystream.payment_id"))
	}
	assert.Equal(t, "retry", attr(procs[0], "paystream.verdict"))
	assert.Equal(t, "succeeded", attr(procs[1], "paystream.verdict"))

	// Each delivery's own children.
	for i, p := range procs {
		kids := childNames(spans, p)
		for _, want := range []string{"rate limit wait", "claim", "breaker", "settle payments.requests"} {
			assert.Contains(t, kids, want, "delivery %d", i+1)
		}
	}
	assert.Contains(t, childNames(spans, procs[0]), "release")
	assert.Contains(t, childNames(spans, procs[1]), "record")
	assert.Contains(t, childNames(spans, procs[1]), "send payments.results")
	settles := named(spans, "settle payments.requests")
	require.Len(t, settles, 2)
	assert.ElementsMatch(t, []string{"nak", "ack"},
		[]string{attr(settles[0], "messaging.operation.name"), attr(settles[1], "messaging.operation.name")})

	// The gateway calls: resend count 0 then 1, the HTTP span under each,
	// the first answered 503.
	charges := named(spans, "gateway charge")
	require.Len(t, charges, 2)
	sort.Slice(charges, func(i, j int) bool { return charges[i].StartTime.Before(charges[j].StartTime) })
	assert.Equal(t, "0", attr(charges[0], "http.request.resend_count"))
	assert.Equal(t, "1", attr(charges[1], "http.request.resend_count"))
	assert.Equal(t, "trouble", attr(charges[0], "paystream.gateway.result"))
	assert.Equal(t, "succeeded", attr(charges[1], "paystream.gateway.result"))
	posts := named(spans, "POST /v1/charges")
	require.Len(t, posts, 2)
	sort.Slice(posts, func(i, j int) bool { return posts[i].StartTime.Before(posts[j].StartTime) })
	assert.Equal(t, "503", attr(posts[0], "http.response.status_code"))
	assert.Equal(t, "201", attr(posts[1], "http.response.status_code"))
	for i := range posts {
		assert.Equal(t, charges[i].SpanContext.SpanID(), posts[i].Parent.SpanID())
	}

	// The gateway saw the payment's trace: each charge carried the
	// traceparent of its HTTP span.
	seen := s.sim.TraceParents(req.EffectiveKey())
	require.Len(t, seen, 2)
	for i, tp := range seen {
		assert.Equal(t, fmt.Sprintf("00-%s-%s-01", traceID, posts[i].SpanContext.SpanID()), tp)
	}

	// The claim's statements are traced by the pgx tracer under it.
	claims := named(spans, "claim")
	require.Len(t, claims, 2)
	assert.NotEmpty(t, childNames(spans, claims[0]), "the claim's SQL spans")
	for _, sp := range spans {
		if strings.HasSuffix(sp.Name, " postgresql") {
			assert.Equal(t, "postgresql", attr(sp, "db.system.name"))
			assert.NotContains(t, attr(sp, "db.query.text"), "pm_card_visa", "arguments are never recorded")
		}
	}

	// The outcome event carries the trace on, in lower case.
	resultSend := only(t, spans, "send payments.results")
	assert.Equal(t, fmt.Sprintf("00-%s-%s-01", traceID, resultSend.SpanContext.SpanID()), out.Header.Get("traceparent"))
	assert.Empty(t, out.Header.Get("Traceparent"), "no capitalised duplicate")

	// Latency histograms carry the trace as an exemplar.
	assert.Contains(t, exemplarTraceIDs(t, s.reg, "paystream_processing_duration_seconds"), traceID.String())
	assert.Contains(t, exemplarTraceIDs(t, s.reg, "paystream_gateway_call_duration_seconds"), traceID.String())
}

// TestTraceCapitalisedHeader: a request whose publisher wrote the header
// as Traceparent (the usual propagation.HeaderCarrier's spelling) is still
// continued by the worker.
func TestTraceCapitalisedHeader(t *testing.T) {
	t.Parallel()
	s := newTracedStack(t, 0)
	outcomes := make(chan *nats.Msg, 2)
	sub, err := s.nc.ChanSubscribe(s.ccfg.ResultSubject("*"), outcomes)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	req := request(2, 700)
	body, err := req.Marshal()
	require.NoError(t, err)
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	m := nats.NewMsg("payments.requests.m001")
	m.Data = body
	m.Header["Traceparent"] = []string{"00-" + traceID + "-" + spanID + "-01"}
	m.Header.Set(jetstream.MsgIDHeader, req.PaymentID)
	_, err = s.js.PublishMsg(t.Context(), m)
	require.NoError(t, err)

	var out *nats.Msg
	select {
	case out = <-outcomes:
	case <-time.After(30 * time.Second):
		t.Fatal("no outcome event")
	}
	s.stop()
	p := only(t, s.exp.GetSpans(), "process payments.requests")
	assert.Equal(t, traceID, p.SpanContext.TraceID().String())
	assert.Equal(t, spanID, p.Parent.SpanID().String())
	require.Len(t, p.Links, 1)
	assert.Equal(t, spanID, p.Links[0].SpanContext.SpanID().String())
	assert.Contains(t, out.Header.Get("traceparent"), traceID)
	for _, tp := range s.sim.TraceParents(req.EffectiveKey()) {
		assert.Contains(t, tp, traceID)
	}
}

func named(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func only(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	got := named(spans, name)
	require.Len(t, got, 1, "spans named %q", name)
	return got[0]
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

func childNames(spans tracetest.SpanStubs, parent tracetest.SpanStub) []string {
	var out []string
	for _, s := range spans {
		if s.Parent.SpanID() == parent.SpanContext.SpanID() {
			out = append(out, s.Name)
		}
	}
	return out
}

// spanTree prints spans as a tree, children in start order, with the
// attributes worth reading and the links.
func spanTree(spans tracetest.SpanStubs) string {
	byParent := map[trace.SpanID][]tracetest.SpanStub{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		ids[s.SpanContext.SpanID()] = true
	}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		if p := s.Parent.SpanID(); p.IsValid() && ids[p] {
			byParent[p] = append(byParent[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s tracetest.SpanStub, depth int)
	walk = func(s tracetest.SpanStub, depth int) {
		fmt.Fprintf(&b, "%s%s [%s %s %s]", strings.Repeat("  ", depth), s.Name, s.SpanKind,
			s.SpanContext.SpanID(), s.EndTime.Sub(s.StartTime).Round(time.Microsecond))
		var kv []string
		for _, a := range s.Attributes {
			if keep(a) {
				kv = append(kv, string(a.Key)+"="+a.Value.String())
			}
		}
		if len(kv) > 0 {
			fmt.Fprintf(&b, " %s", strings.Join(kv, " "))
		}
		if s.Status.Code != 0 {
			fmt.Fprintf(&b, " status=%s", s.Status.Code)
		}
		for _, l := range s.Links {
			fmt.Fprintf(&b, " link=%s", l.SpanContext.SpanID())
		}
		b.WriteString("\n")
		kids := byParent[s.SpanContext.SpanID()]
		sort.Slice(kids, func(i, j int) bool { return kids[i].StartTime.Before(kids[j].StartTime) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].StartTime.Before(roots[j].StartTime) })
	for _, r := range roots {
		fmt.Fprintf(&b, "trace %s\n", r.SpanContext.TraceID())
		walk(r, 1)
	}
	return b.String()
}

func keep(a attribute.KeyValue) bool {
	switch a.Key {
	case "messaging.operation.name", "messaging.nats.message.delivery_count", "messaging.consumer.group.name",
		"messaging.destination.name", "messaging.message.id", "paystream.verdict", "paystream.claim.kind",
		"paystream.attempt", "http.request.resend_count", "paystream.gateway.result", "http.response.status_code",
		"paystream.status", "paystream.breaker.state", "db.operation.name":
		return true
	}
	return false
}

// exemplarTraceIDs gathers the trace_id exemplars of a histogram family.
func exemplarTraceIDs(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var ids []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, bk := range m.GetHistogram().GetBucket() {
				if ex := bk.GetExemplar(); ex != nil {
					for _, l := range ex.GetLabel() {
						if l.GetName() == "trace_id" {
							ids = append(ids, l.GetValue())
						}
					}
				}
			}
		}
	}
	return ids
}
