package payment

import (
	"context"
	"errors"
	"time"
)

// AttemptKind is what a gateway call of an attempt was: a charge or a lookup
// (docs/contract.md §5).
type AttemptKind string

// The kinds of gateway call recorded in payment_attempts.
const (
	AttemptCharge AttemptKind = "charge"
	AttemptLookup AttemptKind = "lookup"
)

// AttemptClassOK is Attempt.Class of a call that got an answer: a charge
// succeeded or declined, a lookup found or not found.
const AttemptClassOK = "ok"

// AttemptClassCanceled is Attempt.Class of a call cut short by the worker's
// own cancellation (a hard stop): it says nothing of the gateway.
const AttemptClassCanceled = "canceled"

// Attempt is one gateway call made under a lease: a row of the
// payment_attempts table (docs/contract.md §7). It is recorded in the same
// fenced transaction that completes or releases the lease (Completion,
// Release), so that a write fenced out adds no attempt either.
type Attempt struct {
	Kind AttemptKind
	// StartedAt is when the call started (the worker's clock).
	StartedAt time.Time
	// Duration is how long the call took.
	Duration time.Duration
	// HTTPStatus is the HTTP status of a failed call (GatewayError.StatusCode);
	// 0 when no response arrived or when the call got an answer (the
	// gateway port carries no status with an answer).
	HTTPStatus int
	// Class is AttemptClassOK for an answer, else the name of the
	// FailureClass (rejected, retry, trouble, unauthorized), or
	// AttemptClassCanceled.
	Class string
	// Result is succeeded or declined for an answered charge, found or
	// not_found for an answered lookup, empty otherwise.
	Result string
	// ErrorCode is the gateway's error or decline code, if any.
	ErrorCode string
	// ChargeID is the gateway's charge id from a succeeded (or declined,
	// when given) charge or a lookup that found one.
	ChargeID string
	// Gateway is the name of the gateway called (docs/contract.md §8,
	// PAYSTREAM_GATEWAYS); empty for calls recorded before it was kept.
	Gateway string
}

// Lookup results recorded in Attempt.Result.
const (
	LookupFound    = "found"
	LookupNotFound = "not_found"
)

// ChargeAttempt describes a charge call that started at start, took d and
// returned res, err.
func ChargeAttempt(start time.Time, d time.Duration, res ChargeResult, err error) Attempt {
	a := Attempt{Kind: AttemptCharge, StartedAt: start, Duration: d}
	if err == nil {
		a.Class, a.Result, a.ChargeID, a.ErrorCode = AttemptClassOK, string(res.Status), res.ChargeID, res.DeclineCode
		return a
	}
	a.failed(err)
	return a
}

// LookupAttempt describes a lookup call that started at start, took d and
// returned res, err.
func LookupAttempt(start time.Time, d time.Duration, res LookupResult, err error) Attempt {
	a := Attempt{Kind: AttemptLookup, StartedAt: start, Duration: d}
	switch {
	case err != nil:
		a.failed(err)
	case res.Found:
		a.Class, a.Result, a.ChargeID = AttemptClassOK, LookupFound, res.ChargeID
	default:
		a.Class, a.Result = AttemptClassOK, LookupNotFound
	}
	return a
}

func (a *Attempt) failed(err error) {
	if ge, ok := errors.AsType[*GatewayError](err); ok {
		a.Class, a.HTTPStatus, a.ErrorCode = ge.Class.String(), ge.StatusCode, ge.Code
		return
	}
	if errors.Is(err, context.Canceled) {
		a.Class = AttemptClassCanceled
		return
	}
	a.Class = ClassTrouble.String()
	if errors.Is(err, context.DeadlineExceeded) {
		a.ErrorCode = CodeTimeout
	}
}
