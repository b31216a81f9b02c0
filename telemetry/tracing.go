package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a process's OpenTelemetry tracing: a tracer provider, its
// tracer and the W3C trace-context propagator. A nil *Tracing is tracing
// off, and every method works on it at no cost: Start returns the context
// unchanged and a span that records nothing, Inject and Extract do nothing.
// Tracing is safe for concurrent use.
type Tracing struct {
	tp       trace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	shutdown func(context.Context) error
}

// TracerName is the instrumentation scope of paystream's own spans.
const TracerName = "github.com/paystream/paystream"

// NewTracing returns tracing on tp (tests pass an SDK provider with an
// in-memory exporter). Its Shutdown does nothing: tp belongs to the caller.
func NewTracing(tp trace.TracerProvider) *Tracing {
	return &Tracing{tp: tp, tracer: tp.Tracer(TracerName), prop: propagation.TraceContext{},
		shutdown: func(context.Context) error { return nil }}
}

// The OpenTelemetry environment variables that TracingFromEnv reads.
const (
	EnvSDKDisabled      = "OTEL_SDK_DISABLED"
	EnvTracesExporter   = "OTEL_TRACES_EXPORTER"
	EnvEndpoint         = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint   = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol         = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol   = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvServiceName      = "OTEL_SERVICE_NAME"
	EnvTracesSampler    = "OTEL_TRACES_SAMPLER"
	EnvTracesSamplerArg = "OTEL_TRACES_SAMPLER_ARG"
)

// TracingEnabled reports whether the environment turns tracing on: an OTLP
// endpoint is set (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT) or OTEL_TRACES_EXPORTER is otlp, and neither
// OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none turns it off.
func TracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv(EnvSDKDisabled)), "true") {
		return false
	}
	switch strings.TrimSpace(getenv(EnvTracesExporter)) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return getenv(EnvTracesEndpoint) != "" || getenv(EnvEndpoint) != ""
}

// TracingFromEnv sets tracing up as the standard OTEL_* variables say, read
// through getenv: nil (tracing off, the default) unless TracingEnabled;
// otherwise spans are batched to an OTLP/HTTP endpoint
// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, or OTEL_EXPORTER_OTLP_ENDPOINT
// plus /v1/traces; default http://localhost:4318/v1/traces), sampled as
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG say (default
// parentbased_always_on), under service.name OTEL_SERVICE_NAME (default
// service). The exporter's other variables (OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT, _COMPRESSION, _CERTIFICATE…) and OTEL_RESOURCE_ATTRIBUTES are
// read by the SDK from the process environment. A value it cannot use (an
// unknown sampler or exporter, a ratio outside [0, 1], the grpc protocol)
// is an error naming the variable. Call Shutdown at exit to flush.
func TracingFromEnv(ctx context.Context, getenv func(string) string, service string) (*Tracing, error) {
	if !TracingEnabled(getenv) {
		return nil, nil
	}
	var problems []error
	switch e := strings.TrimSpace(getenv(EnvTracesExporter)); e {
	case "", "otlp":
	default:
		problems = append(problems, fmt.Errorf("%s=%q: paystream exports traces with otlp only (or none)", EnvTracesExporter, e))
	}
	for _, name := range []string{EnvTracesProtocol, EnvProtocol} {
		if p := strings.TrimSpace(getenv(name)); p != "" && p != "http/protobuf" {
			problems = append(problems, fmt.Errorf("%s=%q: paystream exports traces over http/protobuf only", name, p))
		}
	}
	sampler, err := samplerFromEnv(getenv)
	if err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	endpoint := getenv(EnvTracesEndpoint)
	if endpoint == "" {
		if base := getenv(EnvEndpoint); base != "" {
			endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
		}
	}
	var opts []otlptracehttp.Option
	if endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvEndpoint, err)
	}
	if name := getenv(EnvServiceName); name != "" {
		service = name
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	t := NewTracing(tp)
	t.shutdown = tp.Shutdown
	return t, nil
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG as
// the OpenTelemetry specification names them. Unlike the SDK, which falls
// back silently, it refuses a value it does not know.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg := strings.TrimSpace(getenv(EnvTracesSamplerArg)); arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("%s=%q: must be a ratio from 0 to 1", EnvTracesSamplerArg, arg)
		}
		ratio = r
	}
	switch s := strings.TrimSpace(getenv(EnvTracesSampler)); s {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	default:
		return nil, fmt.Errorf("%s=%q: want always_on, always_off, traceidratio, parentbased_always_on, "+
			"parentbased_always_off or parentbased_traceidratio", EnvTracesSampler, s)
	}
}

// Enabled reports whether tracing is on.
func (t *Tracing) Enabled() bool { return t != nil }

// Provider returns the tracer provider: a no-op one when tracing is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil {
		return noop.NewTracerProvider()
	}
	return t.tp
}

// Propagator returns the W3C trace-context propagator, or one that does
// nothing when tracing is off.
func (t *Tracing) Propagator() propagation.TextMapPropagator {
	if t == nil {
		return propagation.NewCompositeTextMapPropagator()
	}
	return t.prop
}

// Shutdown flushes the spans not yet exported and stops the exporter; it
// does nothing when tracing is off or the provider is the caller's.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// off is the span of tracing off: it records nothing and, being a value of
// a zero-size type, costs no allocation.
var off trace.Span = noop.Span{}

// NoSpan returns a span that records nothing, for code paths with tracing
// off; ending it does nothing, and it costs no allocation.
func NoSpan() trace.Span { return off }

// Start starts an internal span called name as a child of ctx's span. With
// tracing off it returns ctx itself and a span that records nothing. Set
// attributes only when span.IsRecording(), so that tracing off (or a
// sampler that drops) builds none.
func (t *Tracing) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, off
	}
	return t.tracer.Start(ctx, name, opts...)
}

// Inject writes ctx's trace context into the NATS header h in lower case
// (traceparent, tracestate). It does nothing when tracing is off or ctx
// carries no valid span context.
func (t *Tracing) Inject(ctx context.Context, h map[string][]string) {
	if t == nil || h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	t.prop.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote span context found in the NATS header
// h (read case-insensitively), or ctx unchanged when there is none or
// tracing is off.
func (t *Tracing) Extract(ctx context.Context, h map[string][]string) context.Context {
	if t == nil || len(h) == 0 {
		return ctx
	}
	return t.prop.Extract(ctx, HeaderCarrier(h))
}

// HeaderCarrier adapts a NATS header (nats.Header is a
// map[string][]string) to propagation.TextMapCarrier. NATS headers are
// case-sensitive, and W3C trace context asks for lower-case names; the
// usual propagation.HeaderCarrier canonicalises them (Traceparent).
// HeaderCarrier writes keys in lower case, replacing any other spelling,
// and reads them in any case.
type HeaderCarrier map[string][]string

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key in any letter case, or "".
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set sets key, in lower case, to value, removing the key in any other
// spelling.
func (c HeaderCarrier) Set(key, value string) {
	lower := strings.ToLower(key)
	for k := range c {
		if k != lower && strings.EqualFold(k, lower) {
			delete(c, k)
		}
	}
	c[lower] = []string{value}
}

// Keys lists the keys of the header.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Messaging span attributes (OpenTelemetry semantic conventions for
// messaging; the delivery count and stream sequence have no name there and
// are named under messaging.nats).
const (
	AttrMessagingSystem        = attribute.Key("messaging.system")
	AttrMessagingDestination   = attribute.Key("messaging.destination.name")
	AttrMessagingDestTemplate  = attribute.Key("messaging.destination.template")
	AttrMessagingConsumerGroup = attribute.Key("messaging.consumer.group.name")
	AttrMessagingMessageID     = attribute.Key("messaging.message.id")
	AttrMessagingOperationType = attribute.Key("messaging.operation.type")
	AttrMessagingOperationName = attribute.Key("messaging.operation.name")
	AttrMessagingBodySize      = attribute.Key("messaging.message.body.size")
	AttrNATSDeliveryCount      = attribute.Key("messaging.nats.message.delivery_count")
	AttrNATSStreamSequence     = attribute.Key("messaging.nats.message.stream_sequence")
	AttrPaymentID              = attribute.Key("paystream.payment_id")
	AttrIdempotencyKey         = attribute.Key("paystream.idempotency_key")
)

// SystemNATS is messaging.system for NATS.
const SystemNATS = "nats"

// StartSend starts a producer span "send <template>" for a message to
// subject (template is its low-cardinality form, such as
// payments.requests), with the message id, and injects its context into
// the NATS header h. End the span once the publish is acknowledged (or
// failed, with RecordError).
func (t *Tracing) StartSend(ctx context.Context, template, subject, msgID string, h map[string][]string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, off
	}
	ctx, span := t.tracer.Start(ctx, "send "+template, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			AttrMessagingSystem.String(SystemNATS),
			AttrMessagingOperationType.String("send"),
			AttrMessagingOperationName.String("send"),
			AttrMessagingDestination.String(subject),
			AttrMessagingDestTemplate.String(template),
		))
	if msgID != "" && span.IsRecording() {
		span.SetAttributes(AttrMessagingMessageID.String(msgID))
	}
	t.Inject(ctx, h)
	return ctx, span
}

// ObserveWithTrace observes v on o, with the trace id of ctx's span as an
// exemplar when that span is sampled (and o takes exemplars).
func ObserveWithTrace(ctx context.Context, o prometheus.Observer, v float64) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	o.Observe(v)
}
