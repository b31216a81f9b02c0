package gateway_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/payment"
)

// respond returns a handler that answers status with a JSON body and the
// given header pairs.
func respond(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		if body != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// hangUp returns a handler that closes the connection without an answer.
func hangUp(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_ = conn.Close()
	}
}

// rawStatus returns a handler that writes a bare status line, for statuses
// that net/http will not send itself (1xx as a final answer).
func rawStatus(t *testing.T, line string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString(line + "\r\nContent-Length: 0\r\n\r\n")
		_ = buf.Flush()
	}
}

// stall answers only when the client has gone. It reads the body first:
// the server notices a client leaving only once the body is read.
func stall(_ http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// contractRow is one answer of the gateway and what the worker must make of
// it, as the table of docs/contract.md §5 says.
type contractRow struct {
	name  string
	serve http.HandlerFunc
	// Either the gateway decided…
	want *payment.ChargeResult
	// …or the call failed with class, code (when not empty) and retryAfter.
	class      payment.FailureClass
	code       string
	retryAfter time.Duration
	// The table's columns: final is "records failed, dead-letters
	// gateway_rejected", breaker is "breaker failure?", unready is
	// "readiness goes false".
	final, breaker, unready bool
}

func (tt contractRow) check(t *testing.T, gotResult any, zero any, err error) {
	t.Helper()
	if tt.want != nil {
		require.NoError(t, err)
		require.False(t, payment.IsBreakerFailure(err))
		return
	}
	require.Equal(t, zero, gotResult, "no result with an error")
	ge, ok := errors.AsType[*payment.GatewayError](err)
	require.True(t, ok, "want *payment.GatewayError, got %T: %v", err, err)
	require.Equal(t, tt.class, ge.Class, "class of %v", err)
	if tt.code != "" {
		require.Equal(t, tt.code, ge.Code, "code of %v", err)
	}
	require.Equal(t, tt.retryAfter, ge.RetryAfter, "Retry-After of %v", err)
	require.Equal(t, tt.final, ge.Class.Final(), "final")
	require.Equal(t, tt.breaker, payment.IsBreakerFailure(err), "breaker failure")
	require.Equal(t, tt.unready, ge.Class.Misconfigured(), "readiness")
}

// contractClient serves the row's answer and returns a client for it, with
// a short timeout for a row that expects one.
func contractClient(t *testing.T, tt contractRow) *gateway.HTTP {
	t.Helper()
	ts := httptest.NewServer(tt.serve)
	timeout := 10 * time.Second
	if tt.code == payment.CodeTimeout {
		timeout = 200 * time.Millisecond
	}
	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL, Timeout: timeout})
	require.NoError(t, err)
	t.Cleanup(func() {
		g.Close()
		ts.Close()
	})
	return g
}

// redirectRows are a 3xx of each kind, for charges and lookups alike: the
// client follows none and each is gateway trouble.
func redirectRows(followed *atomic.Int64) []contractRow {
	var rows []contractRow
	for _, status := range []int{301, 302, 303, 307, 308} {
		rows = append(rows, contractRow{
			name: "3xx " + http.StatusText(status),
			serve: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					followed.Add(1)
					respond(200, `{"id":"ch_elsewhere","status":"succeeded"}`)(w, r)
					return
				}
				http.Redirect(w, r, "/elsewhere", status)
			},
			class: payment.ClassTrouble, code: payment.CodeUnexpectedStatus, breaker: true,
		})
	}
	return rows
}

// TestContractChargeTable has one case for each row of the charge table of
// docs/contract.md §5, through the HTTP client against a server that
// answers as the row says.
func TestContractChargeTable(t *testing.T) {
	t.Parallel()
	var followed atomic.Int64
	succeeded := &payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: "ch_1"}
	rows := []contractRow{
		// 2xx with {"id":"ch_…","status":"succeeded"}: charged.
		{name: "200 succeeded", serve: respond(200, `{"id":"ch_1","status":"succeeded"}`), want: succeeded},
		{name: "201 succeeded", serve: respond(201, `{"id":"ch_1","status":"succeeded","amount_minor":1000}`), want: succeeded},
		// 402 card_declined, or 2xx with "status":"declined": declined.
		{name: "402 card_declined", serve: respond(402, `{"error":{"code":"card_declined","message":"no"}}`),
			want: &payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "card_declined"}},
		{name: "402 without a code", serve: respond(402, ``),
			want: &payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "declined"}},
		{name: "200 declined", serve: respond(200, `{"id":"ch_2","status":"declined","decline_code":"expired_card"}`),
			want: &payment.ChargeResult{Status: payment.StatusDeclined, ChargeID: "ch_2", DeclineCode: "expired_card"}},
		// 2xx with any other body: malformed, retries later, breaker failure.
		{name: "200 pending", serve: respond(200, `{"id":"ch_3","status":"pending"}`),
			class: payment.ClassTrouble, code: payment.CodeMalformedResponse, breaker: true},
		{name: "204 empty", serve: respond(204, ``),
			class: payment.ClassTrouble, code: payment.CodeMalformedResponse, breaker: true},
		// 400, 422: refused, records failed, gateway_rejected.
		{name: "400", serve: respond(400, `{"error":{"code":"parameter_missing"}}`),
			class: payment.ClassRejected, code: "parameter_missing", final: true},
		{name: "422 idempotency_key_reused", serve: respond(422, `{"error":{"code":"idempotency_key_reused"}}`),
			class: payment.ClassRejected, code: "idempotency_key_reused", final: true},
		// 409: still running, retries later, no breaker failure.
		{name: "409", serve: respond(409, `{"error":{"code":"idempotency_key_in_use"}}`),
			class: payment.ClassRetry, code: "idempotency_key_in_use"},
		// 429 with Retry-After: retries later, never before Retry-After.
		{name: "429 Retry-After", serve: respond(429, `{"error":{"code":"rate_limited"}}`, "Retry-After", "4"),
			class: payment.ClassRetry, code: "rate_limited", retryAfter: 4 * time.Second},
		{name: "429 without Retry-After", serve: respond(429, ``), class: payment.ClassRetry},
		// 401, 403: configuration error, retries later, readiness false,
		// breaker failure.
		{name: "401", serve: respond(401, `{"error":{"code":"unauthorized"}}`),
			class: payment.ClassUnauthorized, code: "unauthorized", breaker: true, unready: true},
		{name: "403", serve: respond(403, `Forbidden`), class: payment.ClassUnauthorized, breaker: true, unready: true},
		// Any other 4xx but 408: misconfiguration, records failed.
		{name: "404", serve: respond(404, `404 page not found`), class: payment.ClassRejected, final: true},
		{name: "405", serve: respond(405, ``), class: payment.ClassRejected, final: true},
		{name: "413", serve: respond(413, ``), class: payment.ClassRejected, final: true},
		// 408, 3xx, 1xx, 5xx, timeout, connection error: trouble.
		{name: "408", serve: respond(408, ``), class: payment.ClassTrouble, breaker: true},
		{name: "1xx as the final answer", serve: rawStatus(t, "HTTP/1.1 101 Switching Protocols"),
			class: payment.ClassTrouble, breaker: true},
		{name: "500", serve: respond(500, `{"error":{"code":"internal_error"}}`), class: payment.ClassTrouble, code: "internal_error", breaker: true},
		{name: "503 Retry-After", serve: respond(503, ``, "Retry-After", "9"),
			class: payment.ClassTrouble, retryAfter: 9 * time.Second, breaker: true},
		{name: "504", serve: respond(504, ``), class: payment.ClassTrouble, breaker: true},
		{name: "timeout", serve: stall, class: payment.ClassTrouble, code: payment.CodeTimeout, breaker: true},
		{name: "connection error", serve: hangUp(t), class: payment.ClassTrouble, code: payment.CodeConnection, breaker: true},
	}
	rows = append(rows, redirectRows(&followed)...)
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := contractClient(t, tt)
			res, err := g.Charge(t.Context(), testCharge("k", 1000))
			tt.check(t, res, payment.ChargeResult{}, err)
			if tt.want != nil {
				require.Equal(t, *tt.want, res)
			}
		})
	}
	t.Cleanup(func() { require.Zero(t, followed.Load(), "a redirect was followed") })
}

// TestHTTPRedirectNotFollowedWithOwnClient: a client handed in through
// HTTPConfig.Client follows no redirect either, and is left as it was.
func TestHTTPRedirectNotFollowedWithOwnClient(t *testing.T) {
	t.Parallel()
	var followed atomic.Int64
	h := redirectRows(&followed)[4].serve // 308 keeps the method and body
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	own := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(own.CloseIdleConnections)
	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: ts.URL, Client: own})
	require.NoError(t, err)
	t.Cleanup(g.Close)

	_, err = g.Charge(t.Context(), testCharge("k", 1000))
	ge := requireGatewayError(t, err, payment.ClassTrouble, http.StatusPermanentRedirect)
	require.Equal(t, payment.CodeUnexpectedStatus, ge.Code)
	require.Zero(t, followed.Load(), "the redirect was followed")
	require.Nil(t, own.CheckRedirect, "the caller's client is not changed")
}

// TestContractLookupTable has one case for each row of the lookup table of
// docs/contract.md §5, and for the answers that the table leaves out,
// through the HTTP client against a server that answers as the row says.
func TestContractLookupTable(t *testing.T) {
	t.Parallel()
	var followed atomic.Int64
	const charge = `{"id":"ch_1","status":"succeeded","amount_minor":2500,"currency":"EUR","payment_id":"pay_1"}`
	rows := []struct {
		contractRow
		found bool // when the row is an answer (want set): Found
	}{
		// 200 with the charge: the gateway made a charge under this key.
		{contractRow{name: "200 charge", serve: respond(200, charge), want: &payment.ChargeResult{}}, true},
		// 404 no_such_charge: no charge, none in flight.
		{contractRow{name: "404 no_such_charge", serve: respond(404, `{"error":{"code":"no_such_charge"}}`), want: &payment.ChargeResult{}}, false},
		// 409: still running, ask again later; no breaker failure.
		{contractRow{name: "409", serve: respond(409, `{"error":{"code":"idempotency_key_in_use"}}`),
			class: payment.ClassRetry, code: "idempotency_key_in_use"}, false},
		// 5xx, timeout, connection error: trouble, a breaker failure.
		{contractRow{name: "500", serve: respond(500, ``), class: payment.ClassTrouble, breaker: true}, false},
		{contractRow{name: "503", serve: respond(503, `{"error":{"code":"service_unavailable"}}`),
			class: payment.ClassTrouble, code: "service_unavailable", breaker: true}, false},
		{contractRow{name: "timeout", serve: stall, class: payment.ClassTrouble, code: payment.CodeTimeout, breaker: true}, false},
		{contractRow{name: "connection error", serve: hangUp(t), class: payment.ClassTrouble, code: payment.CodeConnection, breaker: true}, false},
		// Not in the lookup table; classified as for a charge, and never as
		// "no charge".
		{contractRow{name: "200 declined", serve: respond(200, `{"id":"ch_1","status":"declined"}`),
			class: payment.ClassTrouble, code: payment.CodeMalformedResponse, breaker: true}, false},
		{contractRow{name: "404 without no_such_charge", serve: respond(404, `404 page not found`),
			class: payment.ClassRejected, final: true}, false},
		{contractRow{name: "429", serve: respond(429, ``, "Retry-After", "3"), class: payment.ClassRetry, retryAfter: 3 * time.Second}, false},
		{contractRow{name: "401", serve: respond(401, ``), class: payment.ClassUnauthorized, breaker: true, unready: true}, false},
		{contractRow{name: "403", serve: respond(403, ``), class: payment.ClassUnauthorized, breaker: true, unready: true}, false},
		{contractRow{name: "408", serve: respond(408, ``), class: payment.ClassTrouble, breaker: true}, false},
	}
	for _, r := range redirectRows(&followed) {
		rows = append(rows, struct {
			contractRow
			found bool
		}{r, false})
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := contractClient(t, tt.contractRow)
			res, err := g.Lookup(t.Context(), "k")
			tt.check(t, res, payment.LookupResult{}, err)
			if tt.want != nil {
				require.Equal(t, tt.found, res.Found)
				if tt.found {
					require.Equal(t, payment.LookupResult{Found: true, ChargeID: "ch_1", AmountMinor: 2500, Currency: "EUR", PaymentID: "pay_1"}, res)
				} else {
					require.Zero(t, res)
				}
			}
		})
	}
	t.Cleanup(func() { require.Zero(t, followed.Load(), "a redirect was followed") })
}
