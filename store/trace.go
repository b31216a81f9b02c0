package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// QueryTracer is a pgx.QueryTracer and pgx.BatchTracer that makes one
// client span per statement or batch, a child of the span in the query's
// context, following the OpenTelemetry database conventions:
// db.system.name postgresql, db.operation.name, db.query.text (the SQL with
// its placeholders; arguments, which carry payment data, are never
// recorded). Set it as the Tracer of the pool's ConnConfig.
//
// No pgx tracer is in the module set paystream builds from (otelpgx is
// not), and this one is small: it also adds, as links, the callers of a
// Batcher flush that are not the span's parent, so that every payment whose
// claim rode in a batch points at the batch's statement.
type QueryTracer struct {
	tracer trace.Tracer
}

var (
	_ pgx.QueryTracer = (*QueryTracer)(nil)
	_ pgx.BatchTracer = (*QueryTracer)(nil)
)

// NewQueryTracer returns a tracer making spans with tp.
func NewQueryTracer(tp trace.TracerProvider) *QueryTracer {
	return &QueryTracer{tracer: tp.Tracer("github.com/paystream/paystream/store")}
}

// TraceQueryStart starts the statement's span.
func (q *QueryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// No trace to join (a sweep, a migration): no span of its own.
		return ctx
	}
	op := operation(data.SQL)
	ctx, span := q.tracer.Start(ctx, op+" postgresql", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(batchLinks(ctx)...))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("db.system.name", "postgresql"),
			attribute.String("db.operation.name", op),
			attribute.String("db.query.text", data.SQL),
		)
	}
	return ctx
}

// TraceQueryEnd ends the statement's span.
func (q *QueryTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	end(ctx, data.Err)
}

// TraceBatchStart starts a span for a pgx batch.
func (q *QueryTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	ctx, span := q.tracer.Start(ctx, "BATCH postgresql", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(batchLinks(ctx)...))
	if span.IsRecording() && data.Batch != nil {
		span.SetAttributes(attribute.String("db.system.name", "postgresql"),
			attribute.Int("db.operation.batch.size", data.Batch.Len()))
	}
	return ctx
}

// TraceBatchQuery records nothing per statement of a batch.
func (q *QueryTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

// TraceBatchEnd ends the batch's span.
func (q *QueryTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	end(ctx, data.Err)
}

func end(ctx context.Context, err error) {
	span := trace.SpanFromContext(ctx)
	if err != nil && err != pgx.ErrNoRows {
		span.RecordError(err)
		span.SetStatus(codes.Error, "statement failed")
	}
	span.End()
}

// operation is the first word of a statement, upper-cased (WITH, SELECT,
// INSERT…).
func operation(sql string) string {
	sql = strings.TrimSpace(sql)
	for strings.HasPrefix(sql, "--") {
		_, sql, _ = strings.Cut(sql, "\n")
		sql = strings.TrimSpace(sql)
	}
	if i := strings.IndexAny(sql, " \t\n("); i > 0 {
		sql = sql[:i]
	}
	if len(sql) > 16 {
		sql = sql[:16]
	}
	return strings.ToUpper(sql)
}

type batchLinksKey struct{}

// tracedBatch returns ctx (the Batcher's) carrying the trace of the
// callers of a flush, whose requests share one statement: the first traced
// caller as the parent of the statement's spans, the others as links. With
// no traced caller it returns ctx unchanged, allocating nothing.
func tracedBatch[Req, Res any](ctx context.Context, live []*call[Req, Res]) context.Context {
	var parent trace.SpanContext
	var links []trace.Link
	for _, c := range live {
		sc := trace.SpanContextFromContext(c.ctx)
		if !sc.IsValid() {
			continue
		}
		if !parent.IsValid() {
			parent = sc
			continue
		}
		links = append(links, trace.Link{SpanContext: sc})
	}
	if !parent.IsValid() {
		return ctx
	}
	ctx = trace.ContextWithSpanContext(ctx, parent)
	if len(links) > 0 {
		ctx = context.WithValue(ctx, batchLinksKey{}, links)
	}
	return ctx
}

func batchLinks(ctx context.Context) []trace.Link {
	links, _ := ctx.Value(batchLinksKey{}).([]trace.Link)
	return links
}
