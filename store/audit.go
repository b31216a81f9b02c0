package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// ActionFilter selects operator_actions rows. Zero fields select all.
type ActionFilter struct {
	// Actor and Action keep the rows of this actor, of this action.
	Actor, Action string
	// BeforeID keeps rows whose id is below it: the cursor of the next page
	// (0 starts at the newest).
	BeforeID int64
}

// ListActions returns up to limit operator actions matching f, newest
// first, and the BeforeID of the next page (0 after the last page). Keyset
// pagination on the primary key: a page costs the same however deep.
func (s *Store) ListActions(ctx context.Context, f ActionFilter, limit int) ([]OperatorAction, int64, error) {
	if limit <= 0 {
		return nil, 0, fmt.Errorf("store: list operator actions: limit %d: %w", limit, ErrInvalidArgument)
	}
	var (
		conds []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Actor != "" {
		conds = append(conds, "actor = "+arg(f.Actor))
	}
	if f.Action != "" {
		conds = append(conds, "action = "+arg(f.Action))
	}
	if f.BeforeID > 0 {
		conds = append(conds, "id < "+arg(f.BeforeID))
	}
	q := `SELECT id, actor, at, action, arguments, dry_run, published, duplicates, refused, failed, published_seqs, result
		FROM operator_actions`
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY id DESC LIMIT " + arg(limit+1)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("store: list operator actions: %w", translate(err))
	}
	defer rows.Close()
	out := []OperatorAction{}
	for rows.Next() {
		var (
			a          OperatorAction
			argsJSON   []byte
			res        []byte
			p, d, r, x int32
		)
		if err := rows.Scan(&a.ID, &a.Actor, &a.At, &a.Action, &argsJSON, &a.DryRun, &p, &d, &r, &x, &a.PublishedSeqs, &res); err != nil {
			return nil, 0, fmt.Errorf("store: list operator actions: %w", translate(err))
		}
		a.Arguments, a.Result = argsJSON, res
		a.Published, a.Duplicates, a.Refused, a.Failed = int(p), int(d), int(r), int(x)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("store: list operator actions: %w", translate(err))
	}
	var next int64
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].ID
	}
	return out, next, nil
}
