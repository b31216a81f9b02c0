package outbox

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceSend makes, when tracing is on, the "send" span of one relayed row:
// the root of the payment's trace (the outbox row keeps no trace context of
// the transaction that wrote it), and writes its context into h as
// lower-case traceparent and tracestate. The span covers the send; the
// PubAck is awaited for the whole batch.
func (r *Relay) traceSend(ctx context.Context, x row, h nats.Header) {
	if r.cfg.TracerProvider == nil {
		return
	}
	template := x.subject
	if i := strings.LastIndexByte(template, '.'); i > 0 {
		template = template[:i]
	}
	ctx, span := r.cfg.TracerProvider.Tracer("github.com/paystream/paystream/publish/outbox").Start(ctx,
		"send "+template, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", x.subject),
			attribute.String("messaging.destination.template", template),
			attribute.String("messaging.message.id", x.paymentID),
		))
	defer span.End()
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier) // writes lower-case keys
	for k, v := range carrier {
		h[k] = []string{v}
	}
}
