package main

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paystream/paystream/store"
	"github.com/paystream/paystream/telemetry"
)

// setupTracing turns tracing on when the standard OTEL_* variables say so
// (telemetry.TracingFromEnv: an OTLP endpoint, or OTEL_TRACES_EXPORTER=otlp);
// it is off by default. A value it cannot use stops the worker, naming the
// variable.
func (w *worker) setupTracing(ctx context.Context, lookupEnv func(string) (string, bool)) error {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	tr, err := telemetry.TracingFromEnv(ctx, getenv, "paystream-worker")
	if err != nil {
		return err
	}
	w.tracing = tr
	if tr.Enabled() {
		w.log.Info().Msg("tracing on: exporting spans over OTLP")
	}
	return nil
}

// tracePool sets the pgx tracer that makes a span per statement of a traced
// payment (store.QueryTracer), when tracing is on.
func (w *worker) tracePool(pcfg *pgxpool.Config) {
	if w.tracing.Enabled() {
		pcfg.ConnConfig.Tracer = store.NewQueryTracer(w.tracing.Provider())
	}
}

// flushTraces exports the spans not yet sent, for up to five seconds.
func (w *worker) flushTraces() {
	if !w.tracing.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.tracing.Shutdown(ctx); err != nil {
		w.log.Warn().Err(err).Msg("flush traces")
	}
	w.tracing = nil
}
