package ops

import (
	"context"
	"time"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/store"
)

// ErrBadCursor: a page cursor that no search or listing gave.
var ErrBadCursor = store.ErrBadCursor

// PaymentFilter selects payments. Zero fields select all.
type PaymentFilter struct {
	// ID is a payment id or an idempotency key.
	ID         string
	Status     payment.Status
	MerchantID string
	ErrorCode  string
	// Since and Until bound the creation time: Since ≤ created_at < Until.
	Since, Until time.Time
	// MinAmount and MaxAmount bound amount_minor (inclusive); 0 is no bound.
	MinAmount, MaxAmount int64
}

func (f PaymentFilter) store() store.SearchFilter {
	return store.SearchFilter{ID: f.ID, ListFilter: store.ListFilter{Status: f.Status, MerchantID: f.MerchantID,
		ErrorCode: f.ErrorCode, Since: f.Since, Until: f.Until, MinAmount: f.MinAmount, MaxAmount: f.MaxAmount}}
}

// SearchQuery is a payments search (the console's payments page): the
// criteria of `paystreamctl payments ls` plus a payment id or key.
type SearchQuery struct {
	// Filter is the selection.
	Filter PaymentFilter
	// Cursor is the page's position ("" for the newest), as Page.Next gave.
	Cursor string
	// Limit is the page length; 0 means 50.
	Limit int
	// ExactBelow and CountTimeout bound the cost of counting the matches:
	// they are counted exactly when the planner expects fewer than
	// ExactBelow (0: 100,000) and the count ends within CountTimeout (0:
	// 500 ms); otherwise the planner's estimate is returned.
	ExactBelow   int64
	CountTimeout time.Duration
}

// Count is a number of rows; Estimate says it is the planner's estimate
// (shown as "≈").
type Count struct {
	N        int64 `json:"n"`
	Estimate bool  `json:"estimate"`
}

// SearchResult is one page of a search and the number of matches.
type SearchResult struct {
	Page
	Matches Count `json:"matches"`
}

// SearchPayments returns the page of payments matching q and how many match
// in all: counted exactly when few match and the count is quick, otherwise
// estimated by the planner (store.CountPayments), so that it stays fast on
// ten million rows. A cursor not made by a search or a listing wraps
// store.ErrBadCursor.
func SearchPayments(ctx context.Context, st *store.Store, q SearchQuery) (SearchResult, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	after, err := store.ParseCursor(q.Cursor)
	if err != nil {
		return SearchResult{}, err
	}
	recs, next, err := st.SearchPayments(ctx, q.Filter.store(), after, q.Limit)
	if err != nil {
		return SearchResult{}, err
	}
	res := SearchResult{Page: Page{Payments: make([]PaymentRow, 0, len(recs)), Next: next.String()}}
	for _, r := range recs {
		res.Payments = append(res.Payments, row(r))
	}
	c, err := st.CountPayments(ctx, q.Filter.store(), store.CountOptions{ExactBelow: q.ExactBelow, Timeout: q.CountTimeout})
	if err != nil {
		return SearchResult{}, err
	}
	res.Matches = Count{N: c.N, Estimate: c.Estimate}
	// A page that holds every match tells the exact number.
	if q.Cursor == "" && next.Key == "" {
		res.Matches = Count{N: int64(len(recs))}
	}
	return res, nil
}
