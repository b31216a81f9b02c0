package telemetry_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/paystream/paystream/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestHeaderCarrier(t *testing.T) {
	t.Parallel()
	t.Run("reads any case", func(t *testing.T) {
		for _, key := range []string{"traceparent", "Traceparent", "TRACEPARENT", "TraceParent"} {
			h := telemetry.HeaderCarrier{key: {parent}}
			assert.Equal(t, parent, h.Get("traceparent"), key)
		}
		assert.Empty(t, telemetry.HeaderCarrier{}.Get("traceparent"))
	})
	t.Run("writes lower case, replacing other spellings", func(t *testing.T) {
		h := telemetry.HeaderCarrier{"Traceparent": {"old"}, "Nats-Msg-Id": {"x"}}
		h.Set("Traceparent", parent)
		assert.Equal(t, map[string][]string{"traceparent": {parent}, "Nats-Msg-Id": {"x"}}, map[string][]string(h))
		assert.ElementsMatch(t, []string{"traceparent", "Nats-Msg-Id"}, h.Keys())
	})
	t.Run("the W3C propagator through it", func(t *testing.T) {
		h := map[string][]string{"Traceparent": {parent}, "Tracestate": {"vendor=1"}}
		ctx := propagation.TraceContext{}.Extract(context.Background(), telemetry.HeaderCarrier(h))
		sc := trace.SpanContextFromContext(ctx)
		require.True(t, sc.IsValid())
		assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
		assert.Equal(t, "vendor=1", sc.TraceState().String())

		out := map[string][]string{}
		propagation.TraceContext{}.Inject(ctx, telemetry.HeaderCarrier(out))
		assert.Equal(t, map[string][]string{"traceparent": {parent}, "tracestate": {"vendor=1"}}, out)
	})
}

func TestTracingEnabled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "w", "OTEL_TRACES_SAMPLER": "always_on"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, telemetry.TracingEnabled(getenv(tc.env)), "%v", tc.env)
	}
}

func TestTracingFromEnv(t *testing.T) {
	t.Parallel()
	t.Run("off by default", func(t *testing.T) {
		tr, err := telemetry.TracingFromEnv(t.Context(), getenv(nil), "svc")
		require.NoError(t, err)
		assert.Nil(t, tr)
		assert.False(t, tr.Enabled())
		require.NoError(t, tr.Shutdown(t.Context()))
	})
	t.Run("on with an endpoint", func(t *testing.T) {
		tr, err := telemetry.TracingFromEnv(t.Context(), getenv(map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
			"OTEL_TRACES_SAMPLER_ARG": "0.25", "OTEL_SERVICE_NAME": "paystream-worker-test",
		}), "svc")
		require.NoError(t, err)
		require.True(t, tr.Enabled())
		require.NoError(t, tr.Shutdown(t.Context()))
	})
	bad := []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "OTEL_TRACES_EXPORTER"},
	}
	for _, tc := range bad {
		_, err := telemetry.TracingFromEnv(t.Context(), getenv(tc.env), "svc")
		require.Error(t, err, "%v", tc.env)
		assert.Contains(t, err.Error(), tc.name)
	}
}

// TestTracingOffCostsNothing: with tracing off, starting and ending a span,
// injecting and extracting allocate nothing.
func TestTracingOffCostsNothing(t *testing.T) {
	var tr *telemetry.Tracing
	h := map[string][]string{"traceparent": {parent}}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, span := tr.Start(ctx, "claim")
		if span.IsRecording() {
			t.Fatal("a span of tracing off records")
		}
		span.End()
		tr.Inject(c, h)
		_ = tr.Extract(c, h)
		telemetry.ObserveWithTrace(c, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x"}), 1)
	})
	// The histogram itself allocates; the tracing calls add nothing.
	base := testing.AllocsPerRun(100, func() {
		prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x"}).Observe(1)
	})
	assert.Equal(t, base, allocs)
}

func TestObserveWithTraceExemplar(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tr := telemetry.NewTracing(tp)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1}})
	ctx, span := tr.Start(context.Background(), "x")
	telemetry.ObserveWithTrace(ctx, h, 0.5)
	span.End()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	ex := mfs[0].GetMetric()[0].GetHistogram().GetBucket()[0].GetExemplar()
	require.NotNil(t, ex)
	assert.Equal(t, span.SpanContext().TraceID().String(), ex.GetLabel()[0].GetValue())

	// Unsampled: no exemplar.
	h2 := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h2", Buckets: []float64{1}})
	telemetry.ObserveWithTrace(context.Background(), h2, 0.5)
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(h2)
	mfs, err = reg2.Gather()
	require.NoError(t, err)
	assert.Nil(t, mfs[0].GetMetric()[0].GetHistogram().GetBucket()[0].GetExemplar())
}

func getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}
