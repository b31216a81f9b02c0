package ops

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/paystream/paystream/telemetry"
)

const (
	origTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	origSpan  = "00f067aa0ba902b7"
)

// TestDeadLetterTraceContext: the trace context of a dead letter is read in
// the worker's lower case and in another client's capitalised spelling.
func TestDeadLetterTraceContext(t *testing.T) {
	t.Parallel()
	tp := "00-" + origTrace + "-" + origSpan + "-01"
	for _, key := range []string{"traceparent", "Traceparent"} {
		d := decodeDeadLetter("payments.dlq.exhausted", header(key, tp, "tracestate", "v=1"), []byte(`{}`), 3, time.Now())
		assert.Equal(t, tp, d.TraceParent, key)
		assert.Equal(t, "v=1", d.TraceState)
	}
}

// TestReplayStartsNewLinkedTrace: a replay is a new trace whose root links
// to the payment's original trace, and the replayed request carries the new
// trace's context in lower case.
func TestReplayStartsNewLinkedTrace(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	r := Replayer{Tracing: telemetry.NewTracing(tp)}

	d := DeadLetter{Seq: 7, Reason: "exhausted", OriginalSubject: "payments.requests.m1", PaymentID: "p1",
		TraceParent: "00-" + origTrace + "-" + origSpan + "-01"}
	m := nats.NewMsg(d.OriginalSubject)
	m.Header.Set("Nats-Msg-Id", ReplayMsgID(7))
	_, end := r.traceReplay(context.Background(), d, m)
	end(nil)

	spans := exp.GetSpans()
	require.Len(t, spans, 2)
	send, root := spans[0], spans[1]
	require.Equal(t, "replay payments.requests", root.Name)
	require.Equal(t, "send payments.requests", send.Name)
	assert.NotEqual(t, origTrace, root.SpanContext.TraceID().String(), "a new trace")
	assert.False(t, root.Parent.IsValid(), "a root span")
	require.Len(t, root.Links, 1)
	assert.Equal(t, origTrace, root.Links[0].SpanContext.TraceID().String())
	assert.Equal(t, origSpan, root.Links[0].SpanContext.SpanID().String())
	assert.Equal(t, root.SpanContext.SpanID(), send.Parent.SpanID())
	assert.Equal(t, "00-"+send.SpanContext.TraceID().String()+"-"+send.SpanContext.SpanID().String()+"-01",
		m.Header.Get("traceparent"))
	assert.Empty(t, m.Header.Get("Traceparent"))
}
