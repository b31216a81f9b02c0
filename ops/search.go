package ops

import (
	"context"

	"github.com/paystream/paystream/store"
)

// SearchQuery is a payments search (the console's payments page): the
// criteria of `paystreamctl payments ls` plus a payment id or key.
type SearchQuery struct {
	// Filter is the selection; Filter.ID is a payment id or an
	// idempotency key.
	Filter store.SearchFilter
	// Cursor is the page's position ("" for the newest), as Page.Next gave.
	Cursor string
	// Limit is the page length; 0 means 50.
	Limit int
	// Count bounds the cost of counting the matches.
	Count store.CountOptions
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
	recs, next, err := st.SearchPayments(ctx, q.Filter, after, q.Limit)
	if err != nil {
		return SearchResult{}, err
	}
	res := SearchResult{Page: Page{Payments: make([]PaymentRow, 0, len(recs)), Next: next.String()}}
	for _, r := range recs {
		res.Payments = append(res.Payments, row(r))
	}
	c, err := st.CountPayments(ctx, q.Filter, q.Count)
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
