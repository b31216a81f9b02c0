package ledger

import (
	"fmt"
	"strconv"
)

// Decline codes of the simulated gateways.
const (
	// CodeCardDeclined is the decline of every amount ending in 13.
	CodeCardDeclined = "card_declined"
	// CodeRandomDecline is the decline drawn by a decline rate.
	CodeRandomDecline = "insufficient_funds"
)

// Error codes of the simulated gateways, as sent in error.code.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeIdempotencyKeyReused = "idempotency_key_reused"
	CodeIdempotencyKeyInUse  = "idempotency_key_in_use"
	CodeRateLimited          = "rate_limited"
	CodeUnavailable          = "service_unavailable"
	CodeResponseLost         = "internal_error"
	CodeTimeout              = "timeout"
	// CodeNoSuchCharge is the code of a lookup's 404: no charge under the
	// key and none in flight (docs/contract.md §5).
	CodeNoSuchCharge = "no_such_charge"
)

// MaxKeyBytes is the longest idempotency key accepted.
const MaxKeyBytes = 255

// DeclinesAmount reports whether the simulated gateways always decline
// amount: every amount whose last two digits are 13.
func DeclinesAmount(amountMinor int64) bool { return amountMinor%100 == 13 }

// ChargeFields are the fields of a charge request that the simulated
// gateways check and fingerprint.
type ChargeFields struct {
	Key           string
	PaymentID     string
	MerchantID    string
	Currency      string
	PaymentMethod string
	Description   string
	AmountMinor   int64
}

// Validate returns a description of the first problem with f, or "" when f
// is a valid charge request: a key of 1–255 bytes of printable ASCII without
// space, non-empty payment_id, merchant_id, currency and payment_method, and
// amount_minor > 0.
func (f ChargeFields) Validate() string {
	if problem := ValidateKey(f.Key); problem != "" {
		return "Idempotency-Key: " + problem
	}
	switch {
	case f.PaymentID == "":
		return "payment_id is required"
	case f.MerchantID == "":
		return "merchant_id is required"
	case f.Currency == "":
		return "currency is required"
	case f.PaymentMethod == "":
		return "payment_method is required"
	case f.AmountMinor <= 0:
		return "amount_minor must be an integer > 0"
	}
	return ""
}

// ValidateKey returns a description of the problem with an idempotency key,
// or "" when it is 1–255 bytes of printable ASCII without space.
func ValidateKey(key string) string {
	switch {
	case key == "":
		return "missing"
	case len(key) > MaxKeyBytes:
		return fmt.Sprintf("longer than %d bytes", MaxKeyBytes)
	case !printable(key):
		return "must be printable ASCII without space"
	}
	return ""
}

// Fingerprint returns the body fingerprint of f (all fields but the key).
func (f ChargeFields) Fingerprint() uint64 {
	return Fingerprint(f.PaymentID, f.MerchantID, f.Currency, f.PaymentMethod,
		f.Description, strconv.FormatInt(f.AmountMinor, 10))
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] < 0x21 || s[i] > 0x7E {
			return false
		}
	}
	return true
}
