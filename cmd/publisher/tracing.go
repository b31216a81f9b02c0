package main

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/telemetry"
)

// startTracing turns tracing on when the standard OTEL_* variables say so
// (telemetry.TracingFromEnv); off by default. stop flushes the spans not
// yet exported, for up to five seconds.
func startTracing(ctx context.Context, getenv func(string) string, service string) (tr *telemetry.Tracing, stop func(), err error) {
	tr, err = telemetry.TracingFromEnv(ctx, getenv, service)
	if err != nil {
		return nil, nil, err
	}
	return tr, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(sctx)
	}, nil
}

// relayTracer is the relay's tracer provider: nil (off) unless tr is on.
func relayTracer(tr *telemetry.Tracing) trace.TracerProvider {
	if !tr.Enabled() {
		return nil
	}
	return tr.Provider()
}
