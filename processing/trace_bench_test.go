package processing_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/paystream/paystream/processing"
	"github.com/paystream/paystream/telemetry"
)

// benchClaims and benchGateway are in guard_bench_test.go.

// BenchmarkProcessTracing runs one successful delivery through Process (the
// consumer's process span included) with tracing off, on with a sampler
// that drops every trace, and on with one that records every span (to an
// exporter that discards them, synchronously). `make bench` prints the
// ratios (make tracing-bench).
func BenchmarkProcessTracing(b *testing.B) {
	modes := []struct {
		name string
		tp   func() *sdktrace.TracerProvider
	}{
		{"off", nil},
		{"drop", func() *sdktrace.TracerProvider {
			return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
		}},
		{"record", func() *sdktrace.TracerProvider {
			return sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewNoopExporter()))
		}},
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			var tr *telemetry.Tracing
			if mode.tp != nil {
				tp := mode.tp()
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				tr = telemetry.NewTracing(tp)
			}
			cfg := testConfig()
			cfg.Tracing = tr
			proc := processing.New(cfg, benchClaims{}, benchGateway{}, zerolog.Nop(), telemetry.New(prometheus.NewRegistry()))
			msg := delivery(1)
			b.ReportAllocs()
			for b.Loop() {
				ctx, span := tr.Start(context.Background(), "process payments.requests")
				d := proc.Process(ctx, msg)
				span.End()
				if d.Action != processing.ActionAck {
					b.Fatalf("decision %+v", d)
				}
			}
		})
	}
}
