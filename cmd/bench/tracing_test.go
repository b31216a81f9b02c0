package main

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
)

// TestOTLPSinkCountsSpans: the OpenTelemetry SDK's own OTLP/HTTP exporter,
// pointed at the sink as the worker is (OTEL_EXPORTER_OTLP_ENDPOINT), gets
// its spans accepted and counted, plain and gzipped.
func TestOTLPSinkCountsSpans(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	sink, err := startOTLPSink()
	require.NoError(t, err)
	for _, gz := range []bool{false, true} {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint())
		opts := []otlptracehttp.Option{}
		if gz {
			opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}
		exp, err := otlptracehttp.New(t.Context(), opts...)
		require.NoError(t, err)
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		tr := tp.Tracer("bench-test")
		for range 3 {
			_, span := tr.Start(context.Background(), "payment.process")
			span.End()
		}
		require.NoError(t, tp.Shutdown(t.Context()), "the sink answers the exporter")
	}
	require.NoError(t, sink.close())
	require.EqualValues(t, 6, sink.spans.Load())
	require.EqualValues(t, 2, sink.posts.Load())
	require.Zero(t, sink.badPosts.Load())
	require.Positive(t, sink.bytes.Load())
}

func TestTracingOption(t *testing.T) {
	o, err := parseOptions([]string{"-tracing"}, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.True(t, o.tracing)
	b := &bench{o: o}
	off := b.workerEnv(&line{}, 0)
	require.Equal(t, "true", off["OTEL_SDK_DISABLED"], "an OTEL_* variable of the shell does not turn tracing on")
	on := b.workerEnv(&line{env: map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}}, 0)
	require.NotContains(t, on, "OTEL_SDK_DISABLED")
	require.Equal(t, "always_on", on["OTEL_TRACES_SAMPLER"])
}
