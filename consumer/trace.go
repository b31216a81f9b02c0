package consumer

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// The spans of a delivery, after the OpenTelemetry messaging conventions:
// "process <prefix>.requests" (kind consumer) for each delivery, a child of
// the creation context that the publisher put in the message's headers and
// linked to it; under it, processing's spans, "settle <prefix>.requests"
// (ack, nak or term) and "send <prefix>.results" / "send <prefix>.dlq"
// (kind producer) for the outcome event and dead letter, whose context goes
// on in their own headers (lower-case traceparent, tracestate).

// Attributes of a delivery's span beyond the conventions' own.
const (
	attrVerdict  = attribute.Key("paystream.verdict")
	attrDLReason = attribute.Key("paystream.dead_letter.reason")
)

// startProcess starts the process span of one delivery.
func (c *Consumer) startProcess(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) (context.Context, trace.Span) {
	tr := c.cfg.Tracing
	if !tr.Enabled() {
		return ctx, telemetry.NoSpan()
	}
	h := msg.Headers()
	created := trace.SpanContextFromContext(tr.Extract(ctx, h))
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	pctx := ctx
	if created.IsValid() {
		// One trace per payment: every delivery is a child of the creation
		// context, and links to it as the conventions ask.
		pctx = trace.ContextWithRemoteSpanContext(ctx, created)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: created,
			Attributes: []attribute.KeyValue{telemetry.AttrMessagingOperationType.String("send")}}))
	}
	template := c.cfg.SubjectPrefix + ".requests"
	pctx, span := tr.Start(pctx, "process "+template, opts...)
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrMessagingSystem.String(telemetry.SystemNATS),
			telemetry.AttrMessagingOperationType.String("process"),
			telemetry.AttrMessagingOperationName.String("process"),
			telemetry.AttrMessagingDestination.String(msg.Subject()),
			telemetry.AttrMessagingDestTemplate.String(template),
			telemetry.AttrMessagingConsumerGroup.String(c.cfg.Consumer),
			telemetry.AttrMessagingMessageID.String(nats.Header(h).Get(jetstream.MsgIDHeader)),
			telemetry.AttrMessagingBodySize.Int(len(msg.Data())),
			telemetry.AttrNATSDeliveryCount.Int64(int64(md.NumDelivered)),
			telemetry.AttrNATSStreamSequence.Int64(int64(md.Sequence.Stream)),
		)
	}
	return pctx, span
}

// endProcess ends a delivery's span with its verdict.
func endProcess(span trace.Span, v payment.Verdict, d processing.Decision) {
	if span.IsRecording() {
		span.SetAttributes(attrVerdict.String(v.String()))
		if d.DeadLetter != nil {
			span.SetAttributes(attrDLReason.String(string(d.DeadLetter.Reason)))
		}
		if d.Err != nil {
			span.SetStatus(codes.Error, v.String())
		}
	}
	span.End()
}

// settle acks (op "ack"), naks after d.Delay ("nak") or terminates with
// d's dead-letter reason ("term") msg, in a settle span when tracing is on.
func (c *Consumer) settle(ctx context.Context, msg jetstream.Msg, op string, d processing.Decision) error {
	if !c.cfg.Tracing.Enabled() {
		return settleMsg(msg, op, d)
	}
	template := c.cfg.SubjectPrefix + ".requests"
	_, span := c.cfg.Tracing.Start(ctx, "settle "+template, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			telemetry.AttrMessagingSystem.String(telemetry.SystemNATS),
			telemetry.AttrMessagingOperationType.String("settle"),
			telemetry.AttrMessagingOperationName.String(op),
			telemetry.AttrMessagingDestination.String(msg.Subject()),
			telemetry.AttrMessagingConsumerGroup.String(c.cfg.Consumer),
		)
	}
	err := settleMsg(msg, op, d)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "")
	}
	span.End()
	return err
}

func settleMsg(msg jetstream.Msg, op string, d processing.Decision) error {
	switch op {
	case "ack":
		return msg.Ack()
	case "nak":
		return msg.NakWithDelay(d.Delay)
	default:
		return msg.TermWithReason(string(d.DeadLetter.Reason))
	}
}

// send publishes m (see publish) in a producer span "send <template>",
// whose context it writes into m's headers first.
func (c *Consumer) send(ctx context.Context, template string, m *nats.Msg, persist bool) error {
	if !c.cfg.Tracing.Enabled() {
		return c.publish(ctx, m, persist)
	}
	ctx, span := c.cfg.Tracing.StartSend(ctx, template, m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Header)
	err := c.publish(ctx, m, persist)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "")
	}
	span.End()
	return err
}
