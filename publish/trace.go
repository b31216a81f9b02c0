package publish

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/telemetry"
)

// startSend starts the producer span of one publish (all its attempts):
// "send <prefix>.requests" for a request subject, "send <subject>" for
// any other. Each attempt injects the span's context into its headers.
func (p *Publisher) startSend(ctx context.Context, m Msg) (context.Context, trace.Span) {
	if !p.cfg.Tracing.Enabled() {
		return ctx, telemetry.NoSpan()
	}
	template := p.cfg.SubjectPrefix + ".requests"
	if !strings.HasPrefix(m.Subject, template+".") {
		template = m.Subject
	}
	return p.cfg.Tracing.StartSend(ctx, template, m.Subject, m.MsgID, nil)
}

// endSend ends a publish's span with its result.
func endSend(span trace.Span, res Result) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(
		telemetry.AttrMessagingBodySize.Int(len(res.Msg.Body)),
		telemetry.AttrNATSStreamSequence.Int64(int64(res.Sequence)),
	)
	if res.Err != nil {
		span.RecordError(res.Err)
		span.SetStatus(codes.Error, "")
	}
	span.End()
}
