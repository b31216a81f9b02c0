package gateway

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/paystream/paystream/payment"
)

// Charge is one charge request. The same IdempotencyKey must be sent on every
// attempt for a payment: it is what keeps a retry from charging twice.
type Charge struct {
	// IdempotencyKey is the effective key of the payment: 1–255 bytes of
	// printable ASCII without space (docs/contract.md §2).
	IdempotencyKey string
	PaymentID      string
	MerchantID     string
	// Currency is the upper-case ISO 4217 code.
	Currency string
	// PaymentMethod is a token such as pm_card_visa; never log it.
	PaymentMethod string
	// Description is optional; it is left out of the request when empty.
	Description string
	// AmountMinor is the amount in the currency's minor units, > 0.
	AmountMinor int64
}

// Result is the gateway's decision on a charge.
type Result struct {
	// Status is payment.StatusSucceeded or payment.StatusDeclined.
	Status payment.Status
	// ChargeID is the gateway's id of the charge; always set when
	// succeeded, set for a decline only when the gateway gave one.
	ChargeID string
	// DeclineCode is the gateway's decline code (e.g. card_declined) when
	// declined.
	DeclineCode string
}

// Class says what a caller does with a failed charge attempt.
type Class uint8

// The classes of *Error (docs/contract.md §5).
const (
	// ClassRejected: the gateway refuses the request (400, 422 including
	// idempotency_key_reused, other 4xx): record failed and dead-letter with
	// reason gateway_rejected. Not a circuit-breaker failure.
	ClassRejected Class = iota + 1
	// ClassRetry: the same key is still in flight at the gateway (409) or
	// the caller is too fast (429): retry later, no sooner than
	// Error.RetryAfter. Not a circuit-breaker failure.
	ClassRetry
	// ClassTrouble: 5xx, timeout, connection error or malformed 2xx body:
	// retry later. A circuit-breaker failure.
	ClassTrouble
)

var classNames = [...]string{"unknown", "rejected", "retry", "trouble"}

// String returns the lower-case name of c: rejected, retry, trouble, or
// unknown.
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Error is a charge attempt that did not reach a decision. Charge returns it
// as a *Error; match it with errors.As.
type Error struct {
	// Class says what to do next.
	Class Class
	// StatusCode is the HTTP status, or 0 when no response arrived
	// (connection error, timeout, request refused before sending).
	StatusCode int
	// Code is the gateway's error code (error.code in the body) when it gave
	// one, or one of the Code* constants of this package; at most 64 bytes.
	Code string
	// Message is a human-readable description from the gateway or this
	// package, at most MaxMessageBytes bytes of valid UTF-8 without control
	// characters.
	Message string
	// RetryAfter is the delay from a Retry-After header (seconds or HTTP
	// date), at most MaxRetryAfter; 0 when there was none.
	RetryAfter time.Duration
	// Err is the underlying error (transport, decoding, timeout), if any.
	Err error
}

// Codes set by this package in Error.Code when the gateway gave none.
const (
	// CodeTimeout: no complete response within the call's timeout.
	CodeTimeout = "timeout"
	// CodeConnection: the request could not be sent or the response not read.
	CodeConnection = "connection_error"
	// CodeMalformedResponse: a 2xx answer whose body is not a charge result.
	CodeMalformedResponse = "malformed_response"
	// CodeUnexpectedStatus: a status outside the §5 table (1xx, 3xx, …).
	CodeUnexpectedStatus = "unexpected_status"
	// CodeInvalidCharge: the charge was refused before sending (e.g. an
	// idempotency key that is empty or not printable ASCII).
	CodeInvalidCharge = "invalid_charge"
)

// Error returns a one-line description: class, status, code and message.
// It never contains the payment method.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("gateway ")
	b.WriteString(e.Class.String())
	if e.StatusCode != 0 {
		b.WriteString(": status ")
		b.WriteString(strconv.Itoa(e.StatusCode))
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// IsBreakerFailure reports whether err counts as a failure for the circuit
// breaker: a ClassTrouble *Error, or a context deadline that expired during
// the call (the gateway was too slow). A declined charge is no error at all;
// ClassRejected and ClassRetry are not failures, and neither is the caller's
// own cancellation (context.Canceled), for example at shutdown.
func IsBreakerFailure(err error) bool {
	if err == nil {
		return false
	}
	if ge, ok := errors.AsType[*Error](err); ok {
		return ge.Class == ClassTrouble
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// Stats are the counters of an idempotent gateway (Fake, or the simulator in
// gateway/sim), used by tests to check that no payment was charged twice.
type Stats struct {
	// Charges is the number of real charges: the first success per key.
	Charges int64 `json:"real_charges"`
	// Keys is the number of distinct idempotency keys that got a result.
	Keys int `json:"distinct_keys"`
	// InFlight is the number of keys whose first request is still running.
	InFlight int `json:"in_flight"`
	// DoubleCharged lists the payment ids charged under more than one key
	// (at most 10,000 of them); empty when all is well.
	DoubleCharged []string `json:"double_charged_payment_ids"`
}
