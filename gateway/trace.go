package gateway

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/paystream/paystream/telemetry"
)

// traced returns c with its transport wrapped by otelhttp when tracing is
// on: each charge and lookup gets an HTTP client span ("POST /v1/charges",
// "GET /v1/charges"), a child of the caller's span, and the request carries
// the W3C traceparent header, so the gateway joins the payment's trace.
// With tracing off it returns c unchanged.
func traced(c *http.Client, t *telemetry.Tracing) *http.Client {
	if !t.Enabled() {
		return c
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	wrapped := *c
	wrapped.Transport = tracedTransport{base: base, RoundTripper: otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.Provider()),
		otelhttp.WithPropagators(t.Propagator()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path
		}))}
	return &wrapped
}

// tracedTransport is otelhttp's transport that still closes its base
// transport's idle connections (HTTP.Close).
type tracedTransport struct {
	http.RoundTripper
	base http.RoundTripper
}

// CloseIdleConnections closes the base transport's idle connections.
func (t tracedTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
