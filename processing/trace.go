package processing

import (
	"context"
	"errors"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/telemetry"
)

// The spans of processing, children of the consumer's process span: the
// rate-limit wait, the claim, the breaker around each gateway call, the
// call (its HTTP span, made by the gateway client, is its child), the
// record and the release. Attributes are set only on spans that record, so
// that tracing off or a sampler that drops builds none.
const (
	spanRateLimit = "rate limit wait"
	spanClaim     = "claim"
	spanBreaker   = "breaker"
	spanCharge    = "gateway charge"
	spanLookup    = "gateway lookup"
	spanRecord    = "record"
	spanRelease   = "release"
)

// Span attributes of processing.
const (
	attrClaimKind    = attribute.Key("paystream.claim.kind")
	attrAttempt      = attribute.Key("paystream.attempt")
	attrBreakerState = attribute.Key("paystream.breaker.state")
	attrGateway      = attribute.Key("paystream.gateway")
	attrCallResult   = attribute.Key("paystream.gateway.result")
	attrResendCount  = attribute.Key("http.request.resend_count")
	attrStatus       = attribute.Key("paystream.status")
	attrFound        = attribute.Key("paystream.lookup.found")
	attrWaited       = attribute.Key("paystream.rate_limit.waited_seconds")
)

// annotate adds the payment's ids to the span of ctx (the delivery's
// process span).
func annotate(ctx context.Context, req *payment.Request) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.AttrPaymentID.String(req.PaymentID),
			telemetry.AttrIdempotencyKey.String(req.EffectiveKey()))
	}
}

// endSpan ends span, marking it failed with err (when not nil).
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// endClaim ends a claim span with what the claim found.
func endClaim(span trace.Span, c payment.ClaimResult, err error) {
	if err == nil && span.IsRecording() {
		span.SetAttributes(attrClaimKind.String(c.Kind.String()), attrAttempt.Int(c.Attempt))
	}
	endSpan(span, err)
}

// startBreaker starts the span around a breaker's Execute, with the
// breaker's state as the call comes.
func (p *Processor) startBreaker(ctx context.Context, g *routed) (context.Context, trace.Span) {
	ctx, span := p.tr.Start(ctx, spanBreaker)
	if span.IsRecording() {
		span.SetAttributes(attrBreakerState.String(g.guard.BreakerState()), attrGateway.String(g.name))
	}
	return ctx, span
}

// endBreaker ends a breaker span: failed when the breaker refused the
// call, not when the call it let through failed (that is the call's span).
func endBreaker(span trace.Span, err error) {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		endSpan(span, err)
		return
	}
	span.End()
}

// startCall starts the span of a gateway call under lease l: the attempt
// and how many calls this payment's key had before (resends, docs/contract.md
// §5: the same idempotency key again).
func (p *Processor) startCall(ctx context.Context, name string, l *lease) (context.Context, trace.Span) {
	ctx, span := p.tr.Start(ctx, name)
	if span.IsRecording() {
		span.SetAttributes(attrAttempt.Int(l.attempt), attrResendCount.Int(max(l.attempt-1, 0)+len(l.calls)),
			telemetry.AttrIdempotencyKey.String(l.key))
	}
	return ctx, span
}

// endCall ends a gateway charge span with the call's result label.
func endCall(span trace.Span, res payment.ChargeResult, err error) {
	if span.IsRecording() {
		span.SetAttributes(attrCallResult.String(callLabel(res, err)))
	}
	endSpan(span, err)
}

// endLookup ends a gateway lookup span.
func endLookup(span trace.Span, found payment.LookupResult, err error) {
	if err == nil && span.IsRecording() {
		span.SetAttributes(attrFound.Bool(found.Found))
	}
	endSpan(span, err)
}

// endRecord ends a record span with the status written.
func endRecord(span trace.Span, rec payment.Record, err error) {
	if err == nil && span.IsRecording() {
		span.SetAttributes(attrStatus.String(string(rec.Status)))
	}
	endSpan(span, err)
}
