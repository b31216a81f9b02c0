package payment

import "errors"

// ErrInvalid is matched (with errors.Is) by every error that Decode and
// Request.Validate return: the request breaks the contract of docs/contract.md §2
// and must be dead-lettered with reason "invalid", never retried.
var ErrInvalid = errors.New("invalid payment request")

// ValidationError says which rule of the payment request contract a request
// breaks. It unwraps to ErrInvalid.
//
// Field is the JSON name of the offending field ("amount_minor",
// "metadata"), or "body" for the body as a whole and "subject" for the NATS
// subject. Reason is a short lower-case phrase. Neither ever contains a value
// taken from the request, so the error is safe to log and to put in a
// dead-letter header.
type ValidationError struct {
	Field  string
	Reason string
}

// Error returns "invalid payment request: <field>: <reason>".
func (e *ValidationError) Error() string {
	return "invalid payment request: " + e.Field + ": " + e.Reason
}

// Unwrap returns ErrInvalid, so that errors.Is(err, ErrInvalid) holds.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// invalid returns a *ValidationError for field.
func invalid(field, reason string) error {
	return &ValidationError{Field: field, Reason: reason}
}
