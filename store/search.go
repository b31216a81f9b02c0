package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/paystream/paystream/payment"
)

// This file holds the queries of the operator console (package ops serves
// them to the console and to paystreamctl): a payments search with a count
// that stays fast on large tables, outcomes over time in buckets, and the
// rows that need an operator.

// SearchFilter selects rows of the payments table: ListFilter's criteria
// and, when ID is set, the row whose effective idempotency key is ID or the
// rows whose payment_id is ID.
type SearchFilter struct {
	ListFilter
	// ID is a payment id or an idempotency key. The key is the primary key;
	// a payment id that differs from its row's key is found through the
	// partial index of migration 00008, so neither lookup scans the table.
	ID string
}

// where returns the WHERE clause (without the keyword, "" for none) and its
// arguments, numbered from $1.
func (f SearchFilter) where() (string, []any) {
	var (
		conds []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.ID != "" {
		a := arg(f.ID)
		conds = append(conds, "(idempotency_key = "+a+" OR (payment_id = "+a+" AND idempotency_key <> payment_id))")
	}
	if f.Status != "" {
		conds = append(conds, "status = "+arg(string(f.Status)))
	}
	if f.MerchantID != "" {
		conds = append(conds, "merchant_id = "+arg(f.MerchantID))
	}
	if f.ErrorCode != "" {
		conds = append(conds, "error_code = "+arg(f.ErrorCode))
	}
	col := "created_at"
	if f.ByCompleted {
		col = "completed_at"
	}
	if !f.Since.IsZero() {
		conds = append(conds, col+" >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		conds = append(conds, col+" < "+arg(f.Until))
	}
	if f.MinAmount > 0 {
		conds = append(conds, "amount_minor >= "+arg(f.MinAmount))
	}
	if f.MaxAmount > 0 {
		conds = append(conds, "amount_minor <= "+arg(f.MaxAmount))
	}
	return strings.Join(conds, " AND "), args
}

// SearchPayments returns up to limit rows matching f after the position
// after, newest first, and the cursor of the next page ("" when this page is
// the last): ListPayments with the ID criterion, the same keyset order.
func (s *Store) SearchPayments(ctx context.Context, f SearchFilter, after Cursor, limit int) ([]payment.Record, Cursor, error) {
	return s.paymentPage(ctx, "search payments", f, after, limit)
}

// paymentPage is ListPayments and SearchPayments: one keyset page of the
// rows matching f; what names the query in errors.
func (s *Store) paymentPage(ctx context.Context, what string, f SearchFilter, after Cursor, limit int) ([]payment.Record, Cursor, error) {
	if limit <= 0 {
		return nil, Cursor{}, fmt.Errorf("store: %s: limit %d: %w", what, limit, ErrInvalidArgument)
	}
	where, args := f.where()
	conds := []string{}
	if where != "" {
		conds = append(conds, where)
	}
	if after.Key != "" {
		args = append(args, after.CreatedAt, after.Key)
		ts, key := "$"+strconv.Itoa(len(args)-1), "$"+strconv.Itoa(len(args))
		conds = append(conds, "created_at <= "+ts, "(created_at, idempotency_key) < ("+ts+", "+key+")")
	}
	q := `SELECT idempotency_key, payment_id, merchant_id, amount_minor, currency,
	       status, attempts, gateway, gateway_charge_id, error_code,
	       created_at, updated_at, completed_at, ambiguous
	FROM payments`
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, limit+1)
	q += " ORDER BY created_at DESC, idempotency_key DESC LIMIT $" + strconv.Itoa(len(args))
	return s.recordPage(ctx, what, q, args, limit)
}

// RowCount is a number of rows, exact or estimated.
type RowCount struct {
	N int64
	// Estimate is true when N is the planner's estimate (from the table's
	// statistics, pg_class.reltuples and pg_statistic) rather than a count.
	Estimate bool
}

// CountOptions bound the cost of CountPayments.
type CountOptions struct {
	// ExactBelow: when the planner estimates fewer matching rows, they are
	// counted exactly; 0 means 100,000.
	ExactBelow int64
	// Timeout bounds the exact count; when it passes, the estimate is
	// returned. 0 means 500 ms.
	Timeout time.Duration
}

// CountPayments counts the rows matching f. It asks the planner for an
// estimate first (EXPLAIN: no row is read) and counts exactly only when the
// estimate is below opts.ExactBelow and the count ends within opts.Timeout;
// otherwise it returns the estimate, marked so. On ten million rows a
// filter-free count is therefore an estimate and costs a millisecond.
func (s *Store) CountPayments(ctx context.Context, f SearchFilter, opts CountOptions) (RowCount, error) {
	if opts.ExactBelow <= 0 {
		opts.ExactBelow = 100_000
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	where, args := f.where()
	from := "FROM payments"
	if where != "" {
		from += " WHERE " + where
	}
	var plan []byte
	if err := s.pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) SELECT 1 "+from, args...).Scan(&plan); err != nil {
		return RowCount{}, fmt.Errorf("store: estimate payments: %w", translate(err))
	}
	var explained []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		} `json:"Plan"`
	}
	if err := json.Unmarshal(plan, &explained); err != nil || len(explained) == 0 {
		return RowCount{}, fmt.Errorf("store: estimate payments: unexpected plan %q", plan)
	}
	est := RowCount{N: int64(explained[0].Plan.Rows), Estimate: true}
	if est.N >= opts.ExactBelow {
		return est, nil
	}
	var n int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)",
			strconv.FormatInt(opts.Timeout.Milliseconds(), 10)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT count(*) "+from, args...).Scan(&n)
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "57014" && ctx.Err() == nil: // query_canceled: the timeout
		return est, nil
	case err != nil:
		return RowCount{}, fmt.Errorf("store: count payments: %w", translate(err))
	}
	return RowCount{N: n}, nil
}

// StatusCounts returns the rows of each status, each counted as
// CountPayments counts (exact when few and quick, else the planner's
// estimate), so that it stays cheap on ten million rows: processing and
// unknown rows are counted through their partial indexes.
func (s *Store) StatusCounts(ctx context.Context, opts CountOptions) (map[payment.Status]RowCount, error) {
	out := map[payment.Status]RowCount{}
	for _, st := range []payment.Status{payment.StatusProcessing, payment.StatusSucceeded, payment.StatusDeclined,
		payment.StatusFailed, payment.StatusUnknown} {
		c, err := s.CountPayments(ctx, SearchFilter{ListFilter: ListFilter{Status: st}}, opts)
		if err != nil {
			return nil, err
		}
		out[st] = c
	}
	return out, nil
}

// OutcomeBucket counts the rows that became final within [Start, Start+step).
type OutcomeBucket struct {
	Start    time.Time
	ByStatus map[payment.Status]int64
}

// ErrTooSlow: a query gave up at its time limit.
var ErrTooSlow = errors.New("store: query took longer than its limit")

// Outcomes returns the rows completed within the last window, by status, in
// buckets of step (oldest first; window/step buckets, the last one ending at
// the database clock's now), through the completed_at index. It reads every
// row completed in the window: limit (0: no limit) bounds it, and a query
// that passes it fails with ErrTooSlow (about a million completions a
// second on a small machine).
func (s *Store) Outcomes(ctx context.Context, window, step, limit time.Duration) ([]OutcomeBucket, error) {
	if window <= 0 || step <= 0 || window/step > 10_000 {
		return nil, fmt.Errorf("store: outcomes: window %s, step %s: %w", window, step, ErrInvalidArgument)
	}
	n := int(window / step)
	var now time.Time
	if err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		return nil, fmt.Errorf("store: outcomes: %w", translate(err))
	}
	start := now.Add(-time.Duration(n) * step)
	out := make([]OutcomeBucket, n)
	for i := range out {
		out[i] = OutcomeBucket{Start: start.Add(time.Duration(i) * step).UTC(), ByStatus: map[payment.Status]int64{}}
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if limit > 0 {
			if _, err := tx.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)",
				strconv.FormatInt(max(limit.Milliseconds(), 1), 10)); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `
			SELECT floor(extract(epoch FROM completed_at - $1::timestamptz) * 1000000 / $2)::bigint, status, count(*)
			FROM payments
			WHERE completed_at IS NOT NULL AND completed_at >= $1 AND completed_at < $3
			GROUP BY 1, 2`, start, step.Microseconds(), now)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				i, c int64
				st   string
			)
			if err := rows.Scan(&i, &st, &c); err != nil {
				return err
			}
			if i >= 0 && i < int64(n) {
				out[i].ByStatus[payment.Status(st)] += c
			}
		}
		return rows.Err()
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "57014" && ctx.Err() == nil:
		return nil, fmt.Errorf("outcomes over %s, limit %s: %w", window, limit, ErrTooSlow)
	case err != nil:
		return nil, fmt.Errorf("store: outcomes: %w", translate(err))
	}
	return out, nil
}

// AttentionRow is a row an operator should look at: stuck in processing
// or unknown.
type AttentionRow struct {
	payment.Record
	// LeaseOwner and LeaseUntil are the row's lease (stuck rows); zero when
	// none.
	LeaseOwner string
	LeaseUntil time.Time
	// ReconcileAfter and ReconcileTries are the reconciler's schedule
	// (unknown rows).
	ReconcileAfter time.Time
	ReconcileTries int
}

// AttentionRows returns at most limit rows of each kind: rows in processing
// whose lease ended more than grace ago (oldest lease end first), and rows
// in unknown (next to be looked up first), both through partial indexes.
func (s *Store) AttentionRows(ctx context.Context, grace time.Duration, limit int) (stuck, unknown []AttentionRow, err error) {
	const cols = `idempotency_key, payment_id, merchant_id, amount_minor, currency,
	       status, attempts, gateway, gateway_charge_id, error_code,
	       created_at, updated_at, completed_at, ambiguous, lease_owner, lease_until, reconcile_after, reconcile_tries`
	read := func(q string, args ...any) ([]AttentionRow, error) {
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := []AttentionRow{}
		for rows.Next() {
			var (
				rs           recordScan
				owner        *string
				until, after *time.Time
				tries        int32
			)
			if err := rows.Scan(append(rs.dest(), &owner, &until, &after, &tries)...); err != nil {
				return nil, err
			}
			out = append(out, AttentionRow{Record: rs.record(), LeaseOwner: deref(owner), LeaseUntil: deref(until),
				ReconcileAfter: deref(after), ReconcileTries: int(tries)})
		}
		return out, rows.Err()
	}
	stuck, err = read(`SELECT `+cols+` FROM payments
		WHERE status = 'processing' AND lease_until < clock_timestamp() - $1 * interval '1 microsecond'
		ORDER BY lease_until LIMIT $2`, grace.Microseconds(), limit)
	if err != nil {
		return nil, nil, fmt.Errorf("store: stuck rows: %w", translate(err))
	}
	unknown, err = read(`SELECT `+cols+` FROM payments WHERE status = 'unknown'
		ORDER BY reconcile_after NULLS FIRST LIMIT $1`, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("store: unknown rows: %w", translate(err))
	}
	return stuck, unknown, nil
}
