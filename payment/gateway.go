package payment

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// This file is the gateway port: what the payment flow sends to a payment
// gateway and what it gets back (docs/contract.md §5). The HTTP client and
// the in-process fake in package gateway speak it; processing reads it and
// never imports an adapter.

// Charge is one charge request. The same IdempotencyKey, and the same
// fields, are sent on every attempt for a payment: that is what keeps a
// retry from charging twice.
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

// ChargeResult is a gateway's decision on a charge.
type ChargeResult struct {
	// Status is StatusSucceeded or StatusDeclined.
	Status Status
	// ChargeID is the gateway's id of the charge; always set when
	// succeeded, set for a decline only when the gateway gave one.
	ChargeID string
	// DeclineCode is the gateway's decline code (e.g. card_declined) when
	// declined.
	DeclineCode string
}

// LookupResult is a gateway's answer to a lookup of an idempotency key
// (docs/contract.md §5): whether it made a charge under that key. A
// lookup that ends in an error says nothing either way: only a nil error
// with Found false means that no money moved.
type LookupResult struct {
	// Found is true when the gateway made a charge under the key: the money
	// moved, and ChargeID, AmountMinor, Currency and PaymentID are set. When
	// false, the gateway made no charge under the key and has no call for it
	// in flight: the key was never used, was declined (a decline moves no
	// money), or every call with it failed; the other fields are zero.
	Found bool
	// ChargeID is the gateway's id of the charge.
	ChargeID string
	// AmountMinor is the charged amount in minor units, > 0.
	AmountMinor int64
	// Currency is the currency code of the charge, as the gateway gave it.
	Currency string
	// PaymentID is the payment id sent with the charge.
	PaymentID string
}

// FailureClass says what the payment flow does with a gateway call that
// reached no decision. Each class's behaviour is a row of one table below;
// the flow asks the class (Final, BreakerFailure, Ambiguous, Misconfigured)
// and never switches on its identity, so a new class is a row here plus the
// adapter code that produces it.
type FailureClass uint8

// The failure classes of docs/contract.md §5.
const (
	// ClassRejected: the gateway refuses the request (400, 422 including
	// idempotency_key_reused, other 4xx): record failed and dead-letter with
	// reason gateway_rejected. No money moved.
	ClassRejected FailureClass = iota + 1
	// ClassRetry: the same key is still in flight at the gateway (409) or
	// the caller is too fast (429): retry later, no sooner than
	// GatewayError.RetryAfter. No money moved by this attempt.
	ClassRetry
	// ClassTrouble: 5xx, 408, 3xx, timeout, connection error or a
	// malformed 2xx body: retry later. The gateway may have charged.
	ClassTrouble
	// ClassUnauthorized: 401 or 403, the gateway refuses paystream's
	// credentials. A configuration error, not the payment's fault: retry
	// later, and the worker reports itself not ready (Misconfigured). A
	// breaker failure, since every other call fails alike. No money moved.
	ClassUnauthorized

	classEnd // keep last
)

// failureClasses is the one table of what each class means.
var failureClasses = [classEnd]struct {
	name string
	// final: the attempt ends the payment failed (dead letter
	// gateway_rejected); otherwise it is retried.
	final bool
	// breaker: the attempt counts as a failure for the circuit breaker.
	breaker bool
	// ambiguous: the gateway may have charged although it gave no result.
	ambiguous bool
	// misconfigured: paystream's own settings are wrong (its credentials);
	// the worker's readiness goes false until a call gets past them.
	misconfigured bool
}{
	0:                 {name: "unknown", breaker: true, ambiguous: true},
	ClassRejected:     {name: "rejected", final: true},
	ClassRetry:        {name: "retry"},
	ClassTrouble:      {name: "trouble", breaker: true, ambiguous: true},
	ClassUnauthorized: {name: "unauthorized", breaker: true, misconfigured: true},
}

func (c FailureClass) row() int {
	if c < classEnd {
		return int(c)
	}
	return 0
}

// String returns the lower-case name of c (rejected, retry, trouble,
// unauthorized), as used in metrics labels; "unknown" for a value outside
// the table.
func (c FailureClass) String() string { return failureClasses[c.row()].name }

// Final reports whether an attempt of class c ends the payment failed and
// dead-lettered gateway_rejected rather than retried.
func (c FailureClass) Final() bool { return failureClasses[c.row()].final }

// BreakerFailure reports whether an attempt of class c counts as a failure
// for the gateway circuit breaker.
func (c FailureClass) BreakerFailure() bool { return failureClasses[c.row()].breaker }

// Ambiguous reports whether the gateway may have charged on an attempt of
// class c although it returned no result (a timeout, a 5xx).
func (c FailureClass) Ambiguous() bool { return failureClasses[c.row()].ambiguous }

// Misconfigured reports whether an attempt of class c says that paystream's
// own configuration is wrong (the gateway refuses its credentials): the
// payment is not at fault and is retried, nothing is dead-lettered, and the
// worker reports itself not ready until a gateway call gets past the
// credentials again.
func (c FailureClass) Misconfigured() bool { return failureClasses[c.row()].misconfigured }

// FailureClasses returns every failure class, in order.
func FailureClasses() []FailureClass {
	out := make([]FailureClass, 0, classEnd-1)
	for c := ClassRejected; c < classEnd; c++ {
		out = append(out, c)
	}
	return out
}

// Codes that a gateway adapter sets in GatewayError.Code when the gateway
// gave none.
const (
	// CodeTimeout: no complete response within the call's timeout.
	CodeTimeout = "timeout"
	// CodeConnection: the request could not be sent or the response not read.
	CodeConnection = "connection_error"
	// CodeConnectionRefused: the gateway refused the connection; the
	// request was never sent (GatewayError.NotSent).
	CodeConnectionRefused = "connection_refused"
	// CodeMalformedResponse: a 2xx answer whose body is not a charge result.
	CodeMalformedResponse = "malformed_response"
	// CodeUnexpectedStatus: a status outside the §5 table (1xx, 3xx, …).
	CodeUnexpectedStatus = "unexpected_status"
	// CodeInvalidCharge: the charge was refused before sending (e.g. an
	// idempotency key that is empty or not printable ASCII).
	CodeInvalidCharge = "invalid_charge"
	// CodeInvalidKey: a lookup was refused before sending, because its
	// idempotency key is not 1–255 bytes of printable ASCII without space.
	CodeInvalidKey = "invalid_key"
)

// GatewayError is a charge attempt that reached no decision, or a lookup
// that got no answer. Gateways return it as a *GatewayError; match it with
// errors.As.
//
// For a lookup, the class says when to ask again: ClassRetry (409: a call
// with the key is still running; 429) soon, no sooner than RetryAfter;
// ClassTrouble (5xx, timeout, connection error, malformed answer) and
// ClassUnauthorized later, both breaker failures; ClassRejected (the
// gateway refuses the lookup itself: 400, a 404 that is not no_such_charge,
// other 4xx) only once the gateway or its settings change. Final never
// means "no charge" for a lookup: only LookupResult.Found false does.
type GatewayError struct {
	// Class says what to do next.
	Class FailureClass
	// StatusCode is the HTTP status, or 0 when no response arrived
	// (connection error, timeout, request refused before sending).
	StatusCode int
	// Code is the gateway's error code (error.code in the body) when it gave
	// one, or one of the Code* constants; at most 64 bytes.
	Code string
	// Message is a human-readable description from the gateway or the
	// adapter: bounded, valid UTF-8 without control characters.
	Message string
	// RetryAfter is the delay from a Retry-After header; 0 when there was
	// none. The flow never retries sooner.
	RetryAfter time.Duration
	// Err is the underlying error (transport, decoding, timeout), if any.
	Err error
	// NotSent says that the request surely never reached the gateway (the
	// connection could not be made: refused, no route, no such host), so
	// that the gateway cannot have charged, whatever the class says. Only
	// such a failure (or a breaker that refused the call) lets a payment
	// fail over to another gateway (docs/contract.md §5).
	NotSent bool
}

// Error returns a one-line description: class, status, code and message.
// It never contains the payment method.
func (e *GatewayError) Error() string {
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
func (e *GatewayError) Unwrap() error { return e.Err }

// IsBreakerFailure reports whether err counts as a failure for the circuit
// breaker: a *GatewayError whose class is a breaker failure, or a context
// deadline that expired during the call (the gateway was too slow). A
// declined charge is no error at all, and the caller's own cancellation
// (context.Canceled), for example at shutdown, is no failure either.
func IsBreakerFailure(err error) bool {
	if err == nil {
		return false
	}
	if ge, ok := errors.AsType[*GatewayError](err); ok {
		return ge.Class.BreakerFailure()
	}
	return errors.Is(err, context.DeadlineExceeded)
}
