package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paystream/paystream/payment"
)

// This file holds the read-only queries of the operators' tools (package
// ops): a payment's row and gateway calls, filtered listings with keyset
// pagination, and counts for the fleet's status.

// Detail is a payments row with every column an operator may ask about.
type Detail struct {
	payment.Record
	CustomerID string
	// GatewaysTried are the gateways the payment was routed to, in order
	// (docs/contract.md §5, "Several gateways"); empty for rows claimed
	// before they were recorded.
	GatewaysTried []string
	// LeaseOwner, LeaseUntil and LeaseStreamSeq describe the current (or
	// last) lease; zero when none.
	LeaseOwner     string
	LeaseUntil     time.Time
	LeaseStreamSeq uint64
	// RequestSubject and RequestBody are the stored request (kept while the
	// row is processing, failed or unknown); the body is raw and may hold
	// card data: mask it before showing it.
	RequestSubject string
	RequestBody    []byte
	SweptAt        time.Time
	ReconcileAfter time.Time
	ReconcileTries int
}

// AttemptRecord is a row of payment_attempts: one gateway call.
type AttemptRecord struct {
	payment.Attempt
	// Seq orders the calls.
	Seq int64
	// LeaseAttempt is the row's attempts (the lease's fence token) when the
	// call was made.
	LeaseAttempt int
	WorkerID     string
}

const detailColumns = `idempotency_key, payment_id, merchant_id, amount_minor, currency,
	status, attempts, gateway, gateway_charge_id, error_code,
	created_at, updated_at, completed_at, ambiguous,
	customer_id, lease_owner, lease_until, lease_stream_seq, request_subject, request_body,
	swept_at, reconcile_after, reconcile_tries, coalesce(gateways_tried, '{}')`

func scanDetail(row pgx.Row) (Detail, error) {
	var (
		rs                           recordScan
		customer, owner, subject     *string
		leaseUntil, swept, reconcile *time.Time
		seq                          *int64
		body                         []byte
		tries                        int32
		tried                        []string
	)
	err := row.Scan(append(rs.dest(), &customer, &owner, &leaseUntil, &seq, &subject, &body,
		&swept, &reconcile, &tries, &tried)...)
	if err != nil {
		return Detail{}, err
	}
	return Detail{
		Record: rs.record(), CustomerID: deref(customer), LeaseOwner: deref(owner),
		LeaseUntil: deref(leaseUntil), LeaseStreamSeq: uint64(max(deref(seq), 0)),
		RequestSubject: deref(subject), RequestBody: body, SweptAt: deref(swept),
		ReconcileAfter: deref(reconcile), ReconcileTries: int(tries), GatewaysTried: tried,
	}, nil
}

// FindPayments returns the row whose effective key is idOrKey or, when
// there is none, the rows whose payment_id is idOrKey (a payment id that is
// not its own key; several keys may share it), oldest first. None found is
// ErrNotFound. The lookup by payment_id scans the table: it has no index,
// to spare the write path; the key lookup uses the primary key.
func (s *Store) FindPayments(ctx context.Context, idOrKey string) ([]Detail, error) {
	d, err := scanDetail(s.pool.QueryRow(ctx, `SELECT `+detailColumns+` FROM payments WHERE idempotency_key = $1`, idOrKey))
	switch {
	case err == nil:
		return []Detail{d}, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("store: find payment %q: %w", idOrKey, translate(err))
	}
	rows, err := s.pool.Query(ctx, `SELECT `+detailColumns+` FROM payments WHERE payment_id = $1
		ORDER BY created_at, idempotency_key LIMIT 100`, idOrKey)
	if err != nil {
		return nil, fmt.Errorf("store: find payment %q: %w", idOrKey, translate(err))
	}
	defer rows.Close()
	var out []Detail
	for rows.Next() {
		d, err := scanDetail(rows)
		if err != nil {
			return nil, fmt.Errorf("store: find payment %q: %w", idOrKey, translate(err))
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: find payment %q: %w", idOrKey, translate(err))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("store: find payment %q: %w", idOrKey, ErrNotFound)
	}
	return out, nil
}

// Attempts returns the gateway calls recorded for key, in the order they
// were made.
func (s *Store) Attempts(ctx context.Context, key string) ([]AttemptRecord, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT seq, attempt, kind, worker_id, started_at, duration_us, http_status, class,
		       result, error_code, charge_id, coalesce(gateway, '')
		FROM payment_attempts WHERE idempotency_key = $1 ORDER BY seq`, key)
	if err != nil {
		return nil, fmt.Errorf("store: attempts of %q: %w", key, translate(err))
	}
	defer rows.Close()
	var out []AttemptRecord
	for rows.Next() {
		var (
			a                      AttemptRecord
			attempt                int32
			kind                   string
			durUs                  int64
			http                   *int32
			result, code, chargeID *string
		)
		if err := rows.Scan(&a.Seq, &attempt, &kind, &a.WorkerID, &a.StartedAt, &durUs, &http, &a.Class,
			&result, &code, &chargeID, &a.Gateway); err != nil {
			return nil, fmt.Errorf("store: attempts of %q: %w", key, translate(err))
		}
		a.LeaseAttempt, a.Kind, a.Duration = int(attempt), payment.AttemptKind(kind), time.Duration(durUs)*time.Microsecond
		a.HTTPStatus, a.Result, a.ErrorCode, a.ChargeID = int(deref(http)), deref(result), deref(code), deref(chargeID)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: attempts of %q: %w", key, translate(err))
	}
	return out, nil
}

// ListFilter selects rows of the payments table. Zero fields select all.
type ListFilter struct {
	Status     payment.Status
	MerchantID string
	ErrorCode  string
	// Since and Until bound the creation time (or, with ByCompleted, the
	// completion time): Since ≤ t < Until.
	Since, Until time.Time
	ByCompleted  bool
	// MinAmount and MaxAmount bound amount_minor (inclusive); 0 is no bound.
	MinAmount, MaxAmount int64
}

// ErrBadCursor: a pagination cursor that ListPayments did not give.
var ErrBadCursor = errors.New("store: invalid cursor")

// Cursor is a position in the listing order of ListPayments (newest first
// by created_at, then key): opaque text for the command line.
type Cursor struct {
	CreatedAt time.Time
	Key       string
}

// String encodes c; the empty Cursor encodes as "".
func (c Cursor) String() string {
	if c.Key == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(
		fmt.Appendf(nil, "%d|%s", c.CreatedAt.UnixMicro(), c.Key))
}

// ParseCursor decodes a cursor made by Cursor.String; "" is the start.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	us, key, ok := strings.Cut(string(b), "|")
	n, perr := strconv.ParseInt(us, 10, 64)
	if !ok || perr != nil || key == "" {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{CreatedAt: time.UnixMicro(n).UTC(), Key: key}, nil
}

// ListPayments returns up to limit rows matching f after the position
// after, newest first (created_at, then key, both descending), and the
// cursor of the next page ("" when this page is the last). Keyset
// pagination: every row that exists throughout appears exactly once across
// the pages, whatever is written meanwhile. The index on created_at serves
// the order (ties sorted by key after it).
func (s *Store) ListPayments(ctx context.Context, f ListFilter, after Cursor, limit int) ([]payment.Record, Cursor, error) {
	return s.paymentPage(ctx, "list payments", SearchFilter{ListFilter: f}, after, limit)
}

// recordPage runs q, a query of payment rows in keyset order that asks for
// limit+1 of them, and returns the first limit and the cursor of the next
// page (zero when there is none); what names the query in errors.
func (s *Store) recordPage(ctx context.Context, what, q string, args []any, limit int) ([]payment.Record, Cursor, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, Cursor{}, fmt.Errorf("store: %s: %w", what, translate(err))
	}
	defer rows.Close()
	var out []payment.Record
	for rows.Next() {
		var rs recordScan
		if err := rows.Scan(rs.dest()...); err != nil {
			return nil, Cursor{}, fmt.Errorf("store: %s: %w", what, translate(err))
		}
		out = append(out, rs.record())
	}
	if err := rows.Err(); err != nil {
		return nil, Cursor{}, fmt.Errorf("store: %s: %w", what, translate(err))
	}
	var next Cursor
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = Cursor{CreatedAt: last.CreatedAt, Key: last.IdempotencyKey}
	}
	return out, next, nil
}

// Counts is the state of the payments table for the fleet's status.
type Counts struct {
	// ByStatus counts rows per status.
	ByStatus map[payment.Status]int64
	// StuckProcessing counts rows in processing whose lease ended more than
	// the given grace ago; OldestStuck is the age of the oldest lease end
	// among them.
	StuckProcessing int64
	OldestStuck     time.Duration
	// Unknown counts rows in unknown; OldestUnknown is the age of the
	// oldest (since its last update).
	Unknown       int64
	OldestUnknown time.Duration
	// Recent counts rows completed within the window, per status.
	Recent map[payment.Status]int64
	// Now is the database clock when counted.
	Now time.Time
}

// Count returns the state of the payments table: rows per status (a full
// count: one scan of the table), processing rows whose lease ended more
// than grace ago, unknown rows, and rows completed within window per
// status (through the completed_at index).
func (s *Store) Count(ctx context.Context, grace, window time.Duration) (Counts, error) {
	c := Counts{ByStatus: map[payment.Status]int64{}, Recent: map[payment.Status]int64{}}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&c.Now); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT status, count(*) FROM payments GROUP BY status`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				st string
				n  int64
			)
			if err := rows.Scan(&st, &n); err != nil {
				rows.Close()
				return err
			}
			c.ByStatus[payment.Status(st)] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var stuckUs, unknownUs *int64
		if err := tx.QueryRow(ctx, stuckQuery, grace.Microseconds()).Scan(&c.StuckProcessing, &stuckUs); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, unknownQuery).Scan(&c.Unknown, &unknownUs); err != nil {
			return err
		}
		c.OldestStuck = time.Duration(deref(stuckUs)) * time.Microsecond
		c.OldestUnknown = time.Duration(deref(unknownUs)) * time.Microsecond
		rows, err = tx.Query(ctx, `
			SELECT status, count(*) FROM payments
			WHERE completed_at IS NOT NULL AND completed_at >= clock_timestamp() - $1 * interval '1 microsecond'
			GROUP BY status`, window.Microseconds())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				st string
				n  int64
			)
			if err := rows.Scan(&st, &n); err != nil {
				return err
			}
			c.Recent[payment.Status(st)] = n
		}
		return rows.Err()
	})
	if err != nil {
		return Counts{}, fmt.Errorf("store: count: %w", translate(err))
	}
	return c, nil
}

// stuckQuery counts the rows in processing whose lease ended more than $1
// microseconds ago, and the age of the oldest such lease end.
const stuckQuery = `
	SELECT count(*), (extract(epoch FROM clock_timestamp() - min(lease_until)) * 1000000)::bigint
	FROM payments
	WHERE status = 'processing' AND lease_until < clock_timestamp() - $1 * interval '1 microsecond'`

// StuckStats returns the number of rows in processing whose lease ended
// more than grace ago — no worker holds them and the sweeper has not brought
// them back — and how long ago the oldest one's lease ended (0 when none),
// for metrics.
func (s *Store) StuckStats(ctx context.Context, grace time.Duration) (count int64, oldest time.Duration, err error) {
	var ageUs *int64
	if err := s.pool.QueryRow(ctx, stuckQuery, grace.Microseconds()).Scan(&count, &ageUs); err != nil {
		return 0, 0, fmt.Errorf("store: stuck stats: %w", translate(err))
	}
	return count, time.Duration(deref(ageUs)) * time.Microsecond, nil
}
