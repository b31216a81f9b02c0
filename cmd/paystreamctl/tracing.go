package main

import (
	"context"
	"time"

	"github.com/paystream/paystream/telemetry"
)

// replayTracing turns tracing on for `dlq replay` when the standard OTEL_*
// variables say so (telemetry.TracingFromEnv; off by default): each replay
// then starts a new trace linked to the payment's original one. stop
// flushes the spans, for up to five seconds.
func replayTracing(ctx context.Context, e *env) (tr *telemetry.Tracing, stop func(), err error) {
	getenv := func(k string) string { v, _ := e.lookupEnv(k); return v }
	tr, err = telemetry.TracingFromEnv(ctx, getenv, "paystreamctl")
	if err != nil {
		return nil, nil, err
	}
	return tr, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(sctx)
	}, nil
}
