package payment

import "time"

// MaxBodyBytes is the largest accepted request body (docs/contract.md §2).
const MaxBodyBytes = 65536

// DefaultMaxAmountMinor is the default of PAYSTREAM_MAX_AMOUNT_MINOR.
const DefaultMaxAmountMinor int64 = 100_000_000

// Request is the payment request event v1 (docs/contract.md §2).
type Request struct {
	PaymentID string `json:"payment_id"`
	// IdempotencyKey is optional; EffectiveKey falls back to PaymentID.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	MerchantID     string `json:"merchant_id"`
	CustomerID     string `json:"customer_id,omitempty"`
	// AmountMinor is the amount in the currency's minor units.
	AmountMinor   int64             `json:"amount_minor"`
	Currency      string            `json:"currency"`
	PaymentMethod string            `json:"payment_method"`
	Description   string            `json:"description,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	// CreatedAt is zero when absent.
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// EffectiveKey returns the idempotency key, or the payment id when none was given.
func (r *Request) EffectiveKey() string {
	if r.IdempotencyKey != "" {
		return r.IdempotencyKey
	}
	return r.PaymentID
}
