package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/paystream/paystream/gateway/internal/ledger"
	"github.com/paystream/paystream/payment"
)

// Bounds on text taken from a gateway answer.
const (
	// MaxMessageBytes bounds Error.Message.
	MaxMessageBytes = 200
	// MaxCodeBytes bounds Error.Code and Result.DeclineCode.
	MaxCodeBytes = 64
	// MaxChargeIDBytes is the longest charge id accepted in a 2xx answer;
	// a longer one makes the answer malformed.
	MaxChargeIDBytes = 255
	// MaxRetryAfter caps Error.RetryAfter, whatever the header says.
	MaxRetryAfter = 24 * time.Hour
)

// wireAnswer is the part of a gateway answer body that Classify reads.
type wireAnswer struct {
	ID          string     `json:"id"`
	Status      string     `json:"status"`
	DeclineCode string     `json:"decline_code"`
	Error       *wireError `json:"error"`
}

type wireError struct {
	Code        string `json:"code"`
	DeclineCode string `json:"decline_code"`
	Message     string `json:"message"`
	Charge      string `json:"charge"`
}

var (
	errMalformed       = errors.New("malformed charge result")
	errMalformedLookup = errors.New("malformed lookup answer")
)

// CodeNoSuchCharge is the error code of a lookup's 404 answer that means
// "no charge under this key" (docs/contract.md §5). A 404 without it (a
// proxy's page, a gateway without the lookup endpoint) is no such answer.
const CodeNoSuchCharge = ledger.CodeNoSuchCharge

// wireLookup is the 200 body of a lookup that ClassifyLookup reads.
type wireLookup struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	PaymentID   string `json:"payment_id"`
}

// Classify maps one HTTP answer of the gateway to a Result or an *payment.GatewayError,
// following the table of docs/contract.md §5. It is a pure function of its
// arguments; now is used only to turn a Retry-After HTTP date into a delay.
// Exactly one of the two return values is set: either err is nil and the
// Result's Status is succeeded or declined, or err is a non-nil *payment.GatewayError and
// the Result is zero.
//
//   - 2xx with {"id":…,"status":"succeeded"}: succeeded. With status
//     "declined": declined (code from decline_code or error.code). Any other
//     2xx body is malformed: payment.ClassTrouble.
//   - 402: declined, code from error.code (or error.decline_code; "declined"
//     when the body has none).
//   - 409, 429: payment.ClassRetry.
//   - 401, 403 (paystream's credentials are wrong): payment.ClassUnauthorized.
//   - 408 (the gateway timed out reading the request): payment.ClassTrouble.
//   - 400, 422 and every other 4xx: payment.ClassRejected.
//   - 5xx, 3xx, 1xx and any status outside 100–599: payment.ClassTrouble.
//
// A Retry-After header, in seconds or as an HTTP date, sets Error.RetryAfter
// whatever the status.
func Classify(statusCode int, header http.Header, body []byte, now time.Time) (payment.ChargeResult, error) {
	var ans wireAnswer
	jsonErr := json.Unmarshal(body, &ans)

	switch {
	case statusCode >= 200 && statusCode <= 299:
		if jsonErr == nil {
			switch ans.Status {
			case "succeeded":
				if validChargeID(ans.ID) {
					return payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: ans.ID}, nil
				}
			case "declined":
				code := ans.DeclineCode
				if code == "" && ans.Error != nil {
					code = firstNonEmpty(ans.Error.Code, ans.Error.DeclineCode)
				}
				res := payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: declineCode(code)}
				if validChargeID(ans.ID) {
					res.ChargeID = ans.ID
				}
				return res, nil
			}
		}
		cause := jsonErr
		if cause == nil {
			cause = errMalformed
		}
		return payment.ChargeResult{}, newError(payment.ClassTrouble, statusCode, header, now, payment.CodeMalformedResponse,
			"2xx answer is not a succeeded or declined charge", cause)

	case statusCode == http.StatusPaymentRequired:
		res := payment.ChargeResult{Status: payment.StatusDeclined}
		if jsonErr == nil && ans.Error != nil {
			res.DeclineCode = declineCode(firstNonEmpty(ans.Error.Code, ans.Error.DeclineCode))
			if validChargeID(ans.Error.Charge) {
				res.ChargeID = ans.Error.Charge
			}
		} else {
			res.DeclineCode = declineCode("")
		}
		return res, nil
	}

	return payment.ChargeResult{}, statusError(statusCode, header, body, ans.Error, jsonErr, now)
}

// ClassifyLookup maps one HTTP answer of the gateway to a lookup of an
// idempotency key (GET /v1/charges?idempotency_key=…) to a LookupResult or a
// *payment.GatewayError, following docs/contract.md §5. Like Classify it is
// pure, now serves only Retry-After dates, and exactly one of the two return
// values is set.
//
//   - 2xx with {"id":…,"status":"succeeded","amount_minor":…,"currency":…,
//     "payment_id":…}, every field present and valid (amount_minor a JSON
//     integer > 0): Found. Any other 2xx body, a declined one included, is
//     malformed: payment.ClassTrouble.
//   - 404 with {"error":{"code":"no_such_charge"}}: not found (the zero
//     LookupResult, nil error). This is the only answer that means no money
//     moved.
//   - Every other status maps to a class as in Classify: 409, 429
//     payment.ClassRetry; 401, 403 payment.ClassUnauthorized; 408, 3xx, 1xx,
//     5xx payment.ClassTrouble; the other 4xx, a 404 without
//     no_such_charge and a 402 included, payment.ClassRejected.
func ClassifyLookup(statusCode int, header http.Header, body []byte, now time.Time) (payment.LookupResult, error) {
	if statusCode >= 200 && statusCode <= 299 {
		var ans wireLookup
		err := json.Unmarshal(body, &ans)
		if err == nil && ans.Status == "succeeded" && validChargeID(ans.ID) && ans.AmountMinor > 0 &&
			validText(ans.Currency, MaxCodeBytes) && validText(ans.PaymentID, MaxChargeIDBytes) {
			return payment.LookupResult{Found: true, ChargeID: ans.ID, AmountMinor: ans.AmountMinor,
				Currency: ans.Currency, PaymentID: ans.PaymentID}, nil
		}
		if err == nil {
			err = errMalformedLookup
		}
		return payment.LookupResult{}, newError(payment.ClassTrouble, statusCode, header, now, payment.CodeMalformedResponse,
			"2xx answer to a lookup is not a succeeded charge", err)
	}
	var ans wireAnswer
	jsonErr := json.Unmarshal(body, &ans)
	if statusCode == http.StatusNotFound && jsonErr == nil && ans.Error != nil && ans.Error.Code == CodeNoSuchCharge {
		return payment.LookupResult{}, nil
	}
	return payment.LookupResult{}, statusError(statusCode, header, body, ans.Error, jsonErr, now)
}

// statusClass maps a status that is neither 2xx nor a decline to its class
// (docs/contract.md §5), for charges and lookups alike.
func statusClass(statusCode int) payment.FailureClass {
	switch {
	case statusCode == http.StatusConflict, statusCode == http.StatusTooManyRequests:
		return payment.ClassRetry
	case statusCode == http.StatusUnauthorized, statusCode == http.StatusForbidden:
		return payment.ClassUnauthorized
	case statusCode == http.StatusRequestTimeout:
		return payment.ClassTrouble
	case statusCode >= 400 && statusCode <= 499:
		return payment.ClassRejected
	default: // 5xx, and statuses outside the table (1xx, 3xx, nonsense)
		return payment.ClassTrouble
	}
}

// statusError builds the *payment.GatewayError of an answer whose status is
// neither 2xx nor a decline. we is the decoded error object of the body, if
// any, and jsonErr the error of decoding the body as JSON.
func statusError(statusCode int, header http.Header, body []byte, we *wireError, jsonErr error, now time.Time) *payment.GatewayError {
	code, msg := "", ""
	if jsonErr == nil && we != nil {
		code, msg = we.Code, we.Message
	} else if jsonErr != nil {
		msg = string(body) // not JSON: an HTML error page from a proxy, say
	}
	if code == "" && (statusCode < 400 || statusCode > 599) {
		code = payment.CodeUnexpectedStatus
	}
	if strings.TrimSpace(msg) == "" {
		msg = http.StatusText(statusCode)
	}
	return newError(statusClass(statusCode), statusCode, header, now, code, msg, nil)
}

func newError(class payment.FailureClass, statusCode int, header http.Header, now time.Time, code, msg string, err error) *payment.GatewayError {
	return &payment.GatewayError{
		Class:      class,
		StatusCode: statusCode,
		Code:       bound(code, MaxCodeBytes),
		Message:    bound(msg, MaxMessageBytes),
		RetryAfter: retryAfter(header, now),
		Err:        err,
	}
}

// retryAfter parses a Retry-After header: a non-negative number of seconds
// or an HTTP date. It returns 0 for none, an invalid value or a date in the
// past, and at most MaxRetryAfter.
func retryAfter(header http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs >= uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now) // saturates on overflow
	return min(max(d, 0), MaxRetryAfter)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// declineCode bounds a gateway decline code and fills in "declined" when
// the gateway gave none.
func declineCode(code string) string {
	code = bound(code, MaxCodeBytes)
	if code == "" {
		return "declined"
	}
	return code
}

// validChargeID reports whether id can be recorded as a charge id: 1 to
// MaxChargeIDBytes bytes of printable text.
func validChargeID(id string) bool { return validText(id, MaxChargeIDBytes) }

// validText reports whether s is 1 to maxBytes bytes of printable text.
func validText(s string, maxBytes int) bool {
	if s == "" || len(s) > maxBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// bound makes gateway text safe to log and store: valid UTF-8, control
// characters replaced by spaces, surrounding space trimmed, and at most max
// bytes, cut at a rune boundary (with "…" when cut).
func bound(s string, maxBytes int) string {
	// Look at a little more than maxBytes, so that a huge body costs little.
	if len(s) > 4*maxBytes {
		s = s[:4*maxBytes]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= maxBytes {
		return s
	}
	const ellipsis = "…"
	cut := maxBytes - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.TrimSpace(s[:cut]) + ellipsis
}
