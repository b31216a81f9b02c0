package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/payment"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	retryAfter := func(v string) http.Header { return http.Header{"Retry-After": []string{v}} }
	longMsg := strings.Repeat("é", 400) // 800 bytes

	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		// want is the Result when wantErr is nil.
		want    payment.ChargeResult
		wantErr *payment.GatewayError // Err is not compared, only whether it is set
		errSet  bool
	}{
		{
			name: "200 succeeded", status: 200, body: `{"id":"ch_1","status":"succeeded"}`,
			want: payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: "ch_1"},
		},
		{
			name: "201 succeeded with extra fields", status: 201,
			body: `{"id":"ch_2","object":"charge","status":"succeeded","amount_minor":1000,"currency":"EUR"}`,
			want: payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: "ch_2"},
		},
		{
			name: "200 declined with decline_code", status: 200,
			body: `{"id":"ch_3","status":"declined","decline_code":"do_not_honor"}`,
			want: payment.ChargeResult{Status: payment.StatusDeclined, ChargeID: "ch_3", DeclineCode: "do_not_honor"},
		},
		{
			name: "200 declined with error code", status: 200,
			body: `{"status":"declined","error":{"code":"expired_card"}}`,
			want: payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "expired_card"},
		},
		{
			name: "200 declined without code", status: 200, body: `{"status":"declined"}`,
			want: payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "declined"},
		},
		{
			name: "200 malformed: not json", status: 200, body: `<html>ok</html>`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 200, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "200 malformed: empty body", status: 200, body: ``,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 200, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "200 malformed: pending status", status: 200, body: `{"id":"ch_4","status":"pending"}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 200, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "200 malformed: succeeded without id", status: 200, body: `{"status":"succeeded"}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 200, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "200 malformed: id with control character", status: 200, body: `{"id":"ch_\n5","status":"succeeded"}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 200, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "200 malformed: json array", status: 200, body: `[]`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 200, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "204 no content", status: 204, body: ``,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 204, Code: payment.CodeMalformedResponse,
				Message: "2xx answer is not a succeeded or declined charge"}, errSet: true,
		},
		{
			name: "402 card_declined", status: 402,
			body: `{"error":{"type":"card_error","code":"card_declined","message":"Your card was declined.","charge":"ch_9"}}`,
			want: payment.ChargeResult{Status: payment.StatusDeclined, ChargeID: "ch_9", DeclineCode: "card_declined"},
		},
		{
			name: "402 decline_code only", status: 402, body: `{"error":{"decline_code":"insufficient_funds"}}`,
			want: payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "insufficient_funds"},
		},
		{
			name: "402 without body", status: 402, body: ``,
			want: payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: "declined"},
		},
		{
			name: "400 invalid request", status: 400,
			body:    `{"error":{"code":"parameter_missing","message":"currency is required"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 400, Code: "parameter_missing", Message: "currency is required"},
		},
		{
			name: "422 idempotency_key_reused", status: 422,
			body:    `{"error":{"code":"idempotency_key_reused","message":"Keys can only be reused with the same parameters."}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 422, Code: "idempotency_key_reused", Message: "Keys can only be reused with the same parameters."},
		},
		{
			name: "409 in flight", status: 409,
			body:    `{"error":{"code":"idempotency_key_in_use","message":"in progress"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 409, Code: "idempotency_key_in_use", Message: "in progress"},
		},
		{
			name: "429 Retry-After seconds", status: 429, header: retryAfter("7"), body: `{"error":{"code":"rate_limited","message":"slow down"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 7 * time.Second},
		},
		{
			name: "429 Retry-After HTTP date", status: 429, header: retryAfter(now.Add(90 * time.Second).Format(http.TimeFormat)),
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Message: "Too Many Requests", RetryAfter: 90 * time.Second},
		},
		{
			name: "429 Retry-After date in the past", status: 429, header: retryAfter(now.Add(-time.Hour).Format(http.TimeFormat)),
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Message: "Too Many Requests"},
		},
		{
			name: "429 Retry-After garbage", status: 429, header: retryAfter("soon"),
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Message: "Too Many Requests"},
		},
		{
			name: "429 Retry-After negative", status: 429, header: retryAfter("-5"),
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Message: "Too Many Requests"},
		},
		{
			name: "429 Retry-After huge is capped", status: 429, header: retryAfter("99999999999999999"),
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Message: "Too Many Requests", RetryAfter: gateway.MaxRetryAfter},
		},
		{
			name: "401 credentials refused", status: 401, body: `{"error":{"code":"unauthorized","message":"bad api key"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassUnauthorized, StatusCode: 401, Code: "unauthorized", Message: "bad api key"},
		},
		{
			name: "403 credentials refused", status: 403, body: "<html>Forbidden</html>",
			wantErr: &payment.GatewayError{Class: payment.ClassUnauthorized, StatusCode: 403, Message: "<html>Forbidden</html>"},
		},
		{
			name: "403 with Retry-After", status: 403, header: retryAfter("30"),
			wantErr: &payment.GatewayError{Class: payment.ClassUnauthorized, StatusCode: 403, Message: "Forbidden", RetryAfter: 30 * time.Second},
		},
		{
			name: "404 other 4xx with text body", status: 404, body: "404 page not found\n",
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 404, Message: "404 page not found"},
		},
		{
			name: "405 other 4xx without body", status: 405,
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 405, Message: "Method Not Allowed"},
		},
		{
			name: "408 request timeout is trouble", status: 408,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 408, Message: "Request Timeout"},
		},
		{
			name: "500", status: 500, body: `{"error":{"code":"internal_error","message":"boom"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 500, Code: "internal_error", Message: "boom"},
		},
		{
			name: "502 html from a proxy", status: 502, body: "<html>\r\n<b>Bad\tGateway</b></html>",
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 502, Message: "<html>  <b>Bad Gateway</b></html>"},
		},
		{
			name: "503 with Retry-After", status: 503, header: retryAfter("120"), body: `{"error":{"code":"service_unavailable"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503, Code: "service_unavailable", Message: "Service Unavailable", RetryAfter: 2 * time.Minute},
		},
		{
			name: "504", status: 504,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 504, Message: "Gateway Timeout"},
		},
		{
			name: "long message is truncated", status: 500, body: `{"error":{"message":"` + longMsg + `"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 500, Message: strings.Repeat("é", 98) + "…"},
		},
		{
			name: "302 redirect is unexpected", status: 302, body: ``,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 302, Code: payment.CodeUnexpectedStatus, Message: "Found"},
		},
		{
			name: "100 informational is unexpected", status: 100,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 100, Code: payment.CodeUnexpectedStatus, Message: "Continue"},
		},
		{
			name: "status 0 is unexpected", status: 0,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 0, Code: payment.CodeUnexpectedStatus},
		},
		{
			name: "status 600 is unexpected", status: 600, body: `{"error":{"message":"what"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 600, Code: payment.CodeUnexpectedStatus, Message: "what"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			header := tt.header
			if header == nil {
				header = http.Header{}
			}
			res, err := gateway.Classify(tt.status, header, []byte(tt.body), now)
			if tt.wantErr == nil {
				require.NoError(t, err)
				require.Equal(t, tt.want, res)
				return
			}
			require.Zero(t, res)
			ge, ok := errors.AsType[*payment.GatewayError](err)
			require.True(t, ok, "want *payment.GatewayError, got %T %v", err, err)
			require.Equal(t, tt.errSet, ge.Err != nil, "Err set")
			got := *ge
			got.Err = nil
			require.Equal(t, *tt.wantErr, got)
			require.NotEmpty(t, ge.Error())
		})
	}
}

func TestIsBreakerFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"trouble", &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503}, true},
		{"wrapped trouble", fmt.Errorf("charge: %w", &payment.GatewayError{Class: payment.ClassTrouble}), true},
		{"retry", &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429}, false},
		{"rejected", &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 422}, false},
		{"rejected wrapping a deadline", &payment.GatewayError{Class: payment.ClassRejected, Err: context.DeadlineExceeded}, false},
		{"unauthorized", &payment.GatewayError{Class: payment.ClassUnauthorized, StatusCode: 401}, true},
		{"caller canceled", fmt.Errorf("charge: %w", context.Canceled), false},
		{"deadline during the call", fmt.Errorf("charge: %w", context.DeadlineExceeded), true},
		{"other error", errors.New("something"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, payment.IsBreakerFailure(tt.err))
		})
	}
}

func TestClassString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "rejected", payment.ClassRejected.String())
	require.Equal(t, "retry", payment.ClassRetry.String())
	require.Equal(t, "trouble", payment.ClassTrouble.String())
	require.Equal(t, "unauthorized", payment.ClassUnauthorized.String())
	require.Equal(t, "unknown", payment.FailureClass(0).String())
	require.Equal(t, "unknown", payment.FailureClass(200).String())
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	err := &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 2 * time.Second}
	require.Equal(t, "gateway retry: status 429: rate_limited: slow down (retry after 2s)", err.Error())
	cause := errors.New("dial tcp: refused")
	err = &payment.GatewayError{Class: payment.ClassTrouble, Code: payment.CodeConnection, Message: "request failed", Err: cause}
	require.Equal(t, "gateway trouble: connection_error: request failed: dial tcp: refused", err.Error())
	require.ErrorIs(t, err, cause)
}

// wantClass is the class of an error answer with the given status, spelled
// out from the table of docs/contract.md §5 (2xx bodies that are not a
// charge result are trouble too).
func wantClass(status int) payment.FailureClass {
	switch {
	case status == 409 || status == 429:
		return payment.ClassRetry
	case status == 401 || status == 403:
		return payment.ClassUnauthorized
	case status >= 400 && status <= 499 && status != 408:
		return payment.ClassRejected
	default:
		return payment.ClassTrouble
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(200, "", []byte(`{"id":"ch_1","status":"succeeded"}`))
	f.Add(201, "", []byte(`{"id":"ch_1","status":"declined","decline_code":"x"}`))
	f.Add(402, "", []byte(`{"error":{"code":"card_declined","message":"no","charge":"ch_2"}}`))
	f.Add(422, "", []byte(`{"error":{"code":"idempotency_key_reused"}}`))
	f.Add(429, "3", []byte(`{"error":{"code":"rate_limited"}}`))
	f.Add(429, "Wed, 21 Oct 2015 07:28:00 GMT", []byte(``))
	f.Add(503, "99999999999999999999", []byte("<html>\x00\xff</html>"))
	f.Add(200, "", []byte(`{"id":"`+strings.Repeat("a", 300)+`","status":"succeeded"}`))
	f.Add(-1, "-1", []byte(`null`))
	f.Add(302, "", []byte(`{"error":"string"}`))
	f.Add(401, "", []byte(`{"error":{"code":"unauthorized"}}`))
	f.Add(403, "", []byte(`forbidden`))
	f.Add(408, "", []byte(``))
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		res, err := gateway.Classify(status, http.Header{"Retry-After": []string{retryAfter}}, body, now)
		if err == nil {
			switch res.Status {
			case payment.StatusSucceeded:
				if res.ChargeID == "" {
					t.Fatalf("succeeded without a charge id: %+v", res)
				}
			case payment.StatusDeclined:
				if res.DeclineCode == "" || len(res.DeclineCode) > gateway.MaxCodeBytes {
					t.Fatalf("declined with a bad code: %+v", res)
				}
			default:
				t.Fatalf("no error and status %q", res.Status)
			}
			if len(res.ChargeID) > gateway.MaxChargeIDBytes || !utf8.ValidString(res.ChargeID) {
				t.Fatalf("bad charge id %q", res.ChargeID)
			}
			return
		}
		if res != (payment.ChargeResult{}) {
			t.Fatalf("both a result %+v and an error %v", res, err)
		}
		ge, ok := errors.AsType[*payment.GatewayError](err)
		if !ok {
			t.Fatalf("error is %T, not *payment.GatewayError", err)
		}
		if ge.Class.String() == "unknown" {
			t.Fatalf("bad class %d", ge.Class)
		}
		if ge.Class != wantClass(status) {
			t.Fatalf("status %d: class %s, want %s", status, ge.Class, wantClass(status))
		}
		if ge.StatusCode != status {
			t.Fatalf("status %d, want %d", ge.StatusCode, status)
		}
		if len(ge.Message) > gateway.MaxMessageBytes || !utf8.ValidString(ge.Message) {
			t.Fatalf("unbounded message %q", ge.Message)
		}
		if len(ge.Code) > gateway.MaxCodeBytes || !utf8.ValidString(ge.Code) {
			t.Fatalf("unbounded code %q", ge.Code)
		}
		if ge.RetryAfter < 0 || ge.RetryAfter > gateway.MaxRetryAfter {
			t.Fatalf("retry after %s out of range", ge.RetryAfter)
		}
		for _, r := range ge.Message + ge.Code {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in %q / %q", ge.Code, ge.Message)
			}
		}
		_ = ge.Error()
	})
}

func TestClassifyLookup(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const charge = `{"id":"ch_1","object":"charge","status":"succeeded","amount_minor":2500,"currency":"EUR","payment_id":"pay_1"}`
	foundCharge := payment.LookupResult{Found: true, ChargeID: "ch_1", AmountMinor: 2500, Currency: "EUR", PaymentID: "pay_1"}
	malformed := func(status int) *payment.GatewayError {
		return &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: status, Code: payment.CodeMalformedResponse,
			Message: "2xx answer to a lookup is not a succeeded charge"}
	}
	tests := []struct {
		name    string
		status  int
		header  http.Header
		body    string
		want    payment.LookupResult
		wantErr *payment.GatewayError // Err is not compared
	}{
		{name: "200 found", status: 200, body: charge, want: foundCharge},
		{name: "201 found", status: 201, body: charge, want: foundCharge},
		{name: "404 no_such_charge", status: 404, body: `{"error":{"code":"no_such_charge","message":"none"}}`},
		{name: "200 declined is no lookup answer", status: 200,
			body: `{"id":"ch_1","status":"declined","amount_minor":2500,"currency":"EUR","payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 without amount", status: 200, body: `{"id":"ch_1","status":"succeeded","currency":"EUR","payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 zero amount", status: 200, body: `{"id":"ch_1","status":"succeeded","amount_minor":0,"currency":"EUR","payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 fractional amount", status: 200, body: `{"id":"ch_1","status":"succeeded","amount_minor":25.5,"currency":"EUR","payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 amount as string", status: 200, body: `{"id":"ch_1","status":"succeeded","amount_minor":"2500","currency":"EUR","payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 without currency", status: 200, body: `{"id":"ch_1","status":"succeeded","amount_minor":2500,"payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 without payment id", status: 200, body: `{"id":"ch_1","status":"succeeded","amount_minor":2500,"currency":"EUR"}`, wantErr: malformed(200)},
		{name: "200 without id", status: 200, body: `{"status":"succeeded","amount_minor":2500,"currency":"EUR","payment_id":"pay_1"}`, wantErr: malformed(200)},
		{name: "200 not json", status: 200, body: `<html>ok</html>`, wantErr: malformed(200)},
		{name: "204 empty", status: 204, wantErr: malformed(204)},
		{name: "404 without no_such_charge: a proxy, or no lookup endpoint", status: 404, body: "404 page not found\n",
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 404, Message: "404 page not found"}},
		{name: "404 with another code", status: 404, body: `{"error":{"code":"resource_missing"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 404, Code: "resource_missing", Message: "Not Found"}},
		{name: "409 in flight", status: 409, body: `{"error":{"code":"idempotency_key_in_use"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 409, Code: "idempotency_key_in_use", Message: "Conflict"}},
		{name: "429", status: 429, header: http.Header{"Retry-After": {"2"}},
			wantErr: &payment.GatewayError{Class: payment.ClassRetry, StatusCode: 429, Message: "Too Many Requests", RetryAfter: 2 * time.Second}},
		{name: "401", status: 401, wantErr: &payment.GatewayError{Class: payment.ClassUnauthorized, StatusCode: 401, Message: "Unauthorized"}},
		{name: "403", status: 403, wantErr: &payment.GatewayError{Class: payment.ClassUnauthorized, StatusCode: 403, Message: "Forbidden"}},
		{name: "402 is no decline here", status: 402, body: `{"error":{"code":"card_declined"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 402, Code: "card_declined", Message: "Payment Required"}},
		{name: "400", status: 400, body: `{"error":{"code":"invalid_request","message":"idempotency_key: missing"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassRejected, StatusCode: 400, Code: "invalid_request", Message: "idempotency_key: missing"}},
		{name: "408", status: 408, wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 408, Message: "Request Timeout"}},
		{name: "301", status: 301, wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 301, Code: payment.CodeUnexpectedStatus, Message: "Moved Permanently"}},
		{name: "500", status: 500, body: `{"error":{"code":"internal_error","message":"lost"}}`,
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 500, Code: "internal_error", Message: "lost"}},
		{name: "503 Retry-After", status: 503, header: http.Header{"Retry-After": {"60"}},
			wantErr: &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: 503, Message: "Service Unavailable", RetryAfter: time.Minute}},
		{name: "status 0", status: 0, wantErr: &payment.GatewayError{Class: payment.ClassTrouble, Code: payment.CodeUnexpectedStatus}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			header := tt.header
			if header == nil {
				header = http.Header{}
			}
			res, err := gateway.ClassifyLookup(tt.status, header, []byte(tt.body), now)
			if tt.wantErr == nil {
				require.NoError(t, err)
				require.Equal(t, tt.want, res)
				return
			}
			require.Zero(t, res)
			ge, ok := errors.AsType[*payment.GatewayError](err)
			require.True(t, ok, "want *payment.GatewayError, got %T %v", err, err)
			got := *ge
			got.Err = nil
			require.Equal(t, *tt.wantErr, got)
		})
	}
}

func FuzzClassifyLookup(f *testing.F) {
	f.Add(200, "", []byte(`{"id":"ch_1","status":"succeeded","amount_minor":1,"currency":"EUR","payment_id":"p"}`))
	f.Add(200, "", []byte(`{"id":"ch_1","status":"declined","amount_minor":1,"currency":"EUR","payment_id":"p"}`))
	f.Add(200, "", []byte(`{"id":"ch_1","status":"succeeded","amount_minor":-1,"currency":"\u0000","payment_id":"p"}`))
	f.Add(404, "", []byte(`{"error":{"code":"no_such_charge"}}`))
	f.Add(404, "", []byte(`not found`))
	f.Add(409, "1", []byte(`{"error":{"code":"idempotency_key_in_use"}}`))
	f.Add(401, "", []byte(``))
	f.Add(503, "Wed, 21 Oct 2015 07:28:00 GMT", []byte("<html>\x00\xff</html>"))
	f.Add(302, "", []byte(`{"error":"string"}`))
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		res, err := gateway.ClassifyLookup(status, http.Header{"Retry-After": []string{retryAfter}}, body, now)
		if err == nil {
			if !res.Found {
				// "No charge" is the one answer that lets the worker record
				// failed: only a 404 with no_such_charge may say it.
				if status != http.StatusNotFound {
					t.Fatalf("not found from status %d", status)
				}
				if res != (payment.LookupResult{}) {
					t.Fatalf("not found with fields set: %+v", res)
				}
				return
			}
			if status < 200 || status > 299 {
				t.Fatalf("found from status %d", status)
			}
			if res.ChargeID == "" || len(res.ChargeID) > gateway.MaxChargeIDBytes || !utf8.ValidString(res.ChargeID) ||
				res.AmountMinor <= 0 || res.Currency == "" || len(res.Currency) > gateway.MaxCodeBytes ||
				res.PaymentID == "" || len(res.PaymentID) > gateway.MaxChargeIDBytes ||
				!utf8.ValidString(res.Currency) || !utf8.ValidString(res.PaymentID) {
				t.Fatalf("found with a bad field: %+v", res)
			}
			for _, r := range res.ChargeID + res.Currency + res.PaymentID {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("control character in %+v", res)
				}
			}
			return
		}
		if res != (payment.LookupResult{}) {
			t.Fatalf("both a result %+v and an error %v", res, err)
		}
		ge, ok := errors.AsType[*payment.GatewayError](err)
		if !ok {
			t.Fatalf("error is %T, not *payment.GatewayError", err)
		}
		if ge.StatusCode != status {
			t.Fatalf("status %d, want %d", ge.StatusCode, status)
		}
		if ge.Class != wantClass(status) {
			t.Fatalf("status %d: class %s, want %s", status, ge.Class, wantClass(status))
		}
		if len(ge.Message) > gateway.MaxMessageBytes || !utf8.ValidString(ge.Message) ||
			len(ge.Code) > gateway.MaxCodeBytes || !utf8.ValidString(ge.Code) {
			t.Fatalf("unbounded code %q or message %q", ge.Code, ge.Message)
		}
		for _, r := range ge.Message + ge.Code {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in %q / %q", ge.Code, ge.Message)
			}
		}
		if ge.RetryAfter < 0 || ge.RetryAfter > gateway.MaxRetryAfter {
			t.Fatalf("retry after %s out of range", ge.RetryAfter)
		}
		_ = ge.Error()
	})
}
