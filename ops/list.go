package ops

import (
	"context"
	"time"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// PaymentRow is one payment of a listing (paystreamctl payments ls).
type PaymentRow struct {
	IdempotencyKey  string     `json:"idempotency_key"`
	PaymentID       string     `json:"payment_id"`
	MerchantID      string     `json:"merchant_id"`
	AmountMinor     int64      `json:"amount_minor"`
	Currency        string     `json:"currency"`
	Status          string     `json:"status"`
	AttemptCount    int        `json:"attempt_count"`
	Gateway         string     `json:"gateway"`
	GatewayChargeID string     `json:"gateway_charge_id"`
	ErrorCode       string     `json:"error_code"`
	CreatedAt       time.Time  `json:"created_at"`
	CompletedAt     *time.Time `json:"completed_at"`
}

// Page is one page of a listing; Next is the cursor of the next page, ""
// after the last.
type Page struct {
	Payments []PaymentRow `json:"payments"`
	Next     string       `json:"next"`
}

// ListPayments returns the page of payments matching f after cursor
// (newest first; "" starts at the newest), at most limit long. A cursor not
// made by a listing wraps store.ErrBadCursor.
func ListPayments(ctx context.Context, st *store.Store, f store.ListFilter, cursor string, limit int) (Page, error) {
	after, err := store.ParseCursor(cursor)
	if err != nil {
		return Page{}, err
	}
	recs, next, err := st.ListPayments(ctx, f, after, limit)
	if err != nil {
		return Page{}, err
	}
	p := Page{Payments: make([]PaymentRow, 0, len(recs)), Next: next.String()}
	for _, r := range recs {
		p.Payments = append(p.Payments, row(r))
	}
	return p, nil
}

func row(r payment.Record) PaymentRow {
	return PaymentRow{
		IdempotencyKey: r.IdempotencyKey, PaymentID: r.PaymentID, MerchantID: r.MerchantID,
		AmountMinor: r.AmountMinor, Currency: r.Currency, Status: string(r.Status), AttemptCount: r.Attempts,
		Gateway: r.Gateway, GatewayChargeID: r.GatewayChargeID, ErrorCode: r.ErrorCode,
		CreatedAt: r.CreatedAt.UTC(), CompletedAt: timePtr(r.CompletedAt),
	}
}
