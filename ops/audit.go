package ops

import (
	"context"

	"github.com/paystream/paystream/store"
)

// AuditQuery selects operator actions (the console's audit page).
type AuditQuery struct {
	// Actor and Action keep the actions of this actor, of this kind
	// (ActionReplay, ActionRetention); empty keeps all.
	Actor, Action string
	// Before is the cursor of the page: actions with a lower id; 0 starts
	// at the newest.
	Before int64
	// Limit is the page length; 0 means 50.
	Limit int
}

// AuditPage is a page of operator actions, newest first; Next is the
// Before of the next page, 0 after the last.
type AuditPage struct {
	Actions []store.OperatorAction `json:"actions"`
	Next    int64                  `json:"next"`
}

// Audit returns a page of the operator_actions audit: every replay (dry
// runs included) and retention run, whoever made it, from paystreamctl or
// the console.
func Audit(ctx context.Context, st *store.Store, q AuditQuery) (AuditPage, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	acts, next, err := st.ListActions(ctx, store.ActionFilter{Actor: q.Actor, Action: q.Action, BeforeID: q.Before}, q.Limit)
	if err != nil {
		return AuditPage{}, err
	}
	return AuditPage{Actions: acts, Next: next}, nil
}
