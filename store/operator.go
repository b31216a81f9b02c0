package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// OperatorAction is one row of operator_actions (docs/contract.md §7): who
// did what with paystreamctl, when, and how it went.
type OperatorAction struct {
	ID     int64     `json:"id"`
	Actor  string    `json:"actor"`
	At     time.Time `json:"at"`
	Action string    `json:"action"`
	// Arguments is the command's selection as a JSON object.
	Arguments json.RawMessage `json:"arguments"`
	DryRun    bool            `json:"dry_run"`
	// Published, Duplicates, Refused and Failed count a replay's items.
	Published  int `json:"published"`
	Duplicates int `json:"duplicates"`
	Refused    int `json:"refused"`
	Failed     int `json:"failed"`
	// PublishedSeqs are the dead-letter sequences a replay re-published.
	PublishedSeqs []int64 `json:"published_seqs"`
	// Result is the rest of the outcome as a JSON object.
	Result json.RawMessage `json:"result"`
}

// RecordAction inserts a into operator_actions and returns it with its id
// and time (the database clock). ID and At of a are ignored; empty
// Arguments and Result are stored as {}.
func (s *Store) RecordAction(ctx context.Context, a OperatorAction) (OperatorAction, error) {
	if a.Actor == "" || a.Action == "" {
		return a, fmt.Errorf("store: record operator action: actor and action are required: %w", ErrInvalidArgument)
	}
	if len(a.Arguments) == 0 {
		a.Arguments = json.RawMessage("{}")
	}
	if len(a.Result) == 0 {
		a.Result = json.RawMessage("{}")
	}
	if a.PublishedSeqs == nil {
		a.PublishedSeqs = []int64{}
	}
	err := s.pool.QueryRow(ctx, `
		INSERT INTO operator_actions (actor, action, arguments, dry_run, published, duplicates, refused, failed,
		                              published_seqs, result)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		RETURNING id, at`,
		a.Actor, a.Action, string(a.Arguments), a.DryRun, a.Published, a.Duplicates, a.Refused, a.Failed,
		a.PublishedSeqs, string(a.Result)).Scan(&a.ID, &a.At)
	if err != nil {
		return a, fmt.Errorf("store: record operator action %s: %w", a.Action, translate(err))
	}
	return a, nil
}

// ReplayedSeqs returns, for each of seqs that an earlier action (not a dry
// run) re-published, the id of the first such action.
func (s *Store) ReplayedSeqs(ctx context.Context, action string, seqs []int64) (map[int64]int64, error) {
	out := map[int64]int64{}
	if len(seqs) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT seq, min(a.id)
		FROM operator_actions a, unnest(a.published_seqs) AS seq
		WHERE a.action = $1 AND NOT a.dry_run AND a.published_seqs && $2::bigint[] AND seq = ANY ($2::bigint[])
		GROUP BY seq`, action, seqs)
	if err != nil {
		return nil, fmt.Errorf("store: replayed seqs: %w", translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var seq, id int64
		if err := rows.Scan(&seq, &id); err != nil {
			return nil, fmt.Errorf("store: replayed seqs: %w", translate(err))
		}
		out[seq] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: replayed seqs: %w", translate(err))
	}
	return out, nil
}

// Actions returns the latest operator actions of a kind ("" for every
// kind), newest first, at most limit.
func (s *Store) Actions(ctx context.Context, action string, limit int) ([]OperatorAction, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, actor, at, action, arguments, dry_run, published, duplicates, refused, failed, published_seqs, result
		FROM operator_actions
		WHERE $1 = '' OR action = $1
		ORDER BY id DESC
		LIMIT $2`, action, limit)
	if err != nil {
		return nil, fmt.Errorf("store: operator actions: %w", translate(err))
	}
	defer rows.Close()
	var out []OperatorAction
	for rows.Next() {
		var (
			a          OperatorAction
			args, res  []byte
			p, d, r, f int32
		)
		if err := rows.Scan(&a.ID, &a.Actor, &a.At, &a.Action, &args, &a.DryRun, &p, &d, &r, &f, &a.PublishedSeqs, &res); err != nil {
			return nil, fmt.Errorf("store: operator actions: %w", translate(err))
		}
		a.Arguments, a.Result = args, res
		a.Published, a.Duplicates, a.Refused, a.Failed = int(p), int(d), int(r), int(f)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: operator actions: %w", translate(err))
	}
	return out, nil
}
