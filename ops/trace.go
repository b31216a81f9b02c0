package ops

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/telemetry"
)

// traceHeader reads a trace-context header of a dead letter in the case
// paystream writes it (lower) or the case other clients use (Traceparent,
// TRACEPARENT).
func traceHeader(h headerGetter, name string) string {
	for _, k := range []string{name, strings.ToUpper(name[:1]) + name[1:], strings.ToUpper(name)} {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// attrReplayOf marks the link from a replay to the trace it replays.
const attrReplayOf = attribute.Key("paystream.replay_of_dead_letter")

// traceReplay starts, when tracing is on, a new trace for the replay of d:
// a root span "replay <subject template>" linked to the payment's original
// trace (the dead letter's traceparent, when it has one), and under it the
// "send" span whose context goes into m's headers, so that the workers'
// spans of the replayed request join the new trace. end ends both spans.
func (r Replayer) traceReplay(ctx context.Context, d DeadLetter, m *nats.Msg) (context.Context, func(error)) {
	tr := r.Tracing
	if !tr.Enabled() {
		return ctx, func(error) {}
	}
	template := d.OriginalSubject
	if i := strings.LastIndexByte(template, '.'); i > 0 {
		template = template[:i]
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal)}
	if d.TraceParent != "" {
		orig := tr.Extract(context.Background(), map[string][]string{
			"traceparent": {d.TraceParent}, "tracestate": {d.TraceState}})
		if sc := trace.SpanContextFromContext(orig); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc,
				Attributes: []attribute.KeyValue{attrReplayOf.Int64(int64(d.Seq))}}))
		}
	}
	ctx, root := tr.Start(ctx, "replay "+template, opts...)
	if root.IsRecording() {
		root.SetAttributes(attribute.Int64("paystream.dead_letter.seq", int64(d.Seq)),
			attribute.String("paystream.dead_letter.reason", d.Reason),
			telemetry.AttrPaymentID.String(d.PaymentID))
	}
	ctx, send := tr.StartSend(ctx, template, m.Subject, m.Header.Get("Nats-Msg-Id"), m.Header)
	return ctx, func(err error) {
		if err != nil {
			send.RecordError(err)
			send.SetStatus(codes.Error, "")
		}
		send.End()
		root.End()
	}
}
