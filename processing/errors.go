package processing

import (
	"errors"
	"fmt"
	"time"

	"github.com/paystream/paystream/payment"
)

// Sentinels naming the conditions a delivery can end in.
var (
	// ErrConflict: the effective key is stored with a different fingerprint.
	ErrConflict = errors.New("idempotency key reused with a different request")
	// ErrLeaseHeld: a live lease on the key is held for this same message.
	ErrLeaseHeld = errors.New("lease held by an earlier delivery of this message")
	// ErrShutdown: the worker stopped before the delivery could finish.
	ErrShutdown = errors.New("worker shutting down")
	// ErrExhausted: the last allowed delivery failed with a retryable error.
	ErrExhausted = errors.New("retries exhausted")
)

// PermanentError is an error that no retry can fix: the message is
// dead-lettered with Reason and terminated.
type PermanentError struct {
	Reason payment.DeadLetterReason
	Err    error
}

// Error returns "<reason>: <cause>".
func (e *PermanentError) Error() string {
	return fmt.Sprintf("%s: %v", e.Reason, e.Err)
}

// Unwrap returns the cause.
func (e *PermanentError) Unwrap() error { return e.Err }

// RetryableError is an error that a later delivery may fix. After, when
// non-zero, is the earliest time a retry makes sense (a gateway's
// Retry-After, a lease's end).
type RetryableError struct {
	After time.Duration
	Err   error
}

// Error describes the cause and, when set, the earliest retry.
func (e *RetryableError) Error() string {
	if e.After > 0 {
		return fmt.Sprintf("retryable (not before %s): %v", e.After, e.Err)
	}
	return fmt.Sprintf("retryable: %v", e.Err)
}

// Unwrap returns the cause.
func (e *RetryableError) Unwrap() error { return e.Err }
