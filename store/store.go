package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paystream/paystream/payment"
)

// Errors returned by Store besides payment.ErrFenced.
var (
	// ErrNotFound: no row exists for the key.
	ErrNotFound = errors.New("store: payment not found")
	// ErrRetryable wraps database errors that a later attempt can cure:
	// serialization failures (40001), deadlocks (40P01), unique violations
	// from a racing insert (23505), lock timeouts (55P03), a server shutting
	// down or refusing connections, and lost connections. The transaction was
	// rolled back, except that for a lost connection the outcome of a commit
	// in flight is unknown.
	ErrRetryable = errors.New("store: transient database error")
	// ErrInvalidArgument: the request cannot be sent as is (empty key or
	// owner, non-positive lease, non-final completion status, ...).
	ErrInvalidArgument = errors.New("store: invalid argument")
)

// DefaultBusyRetryAfter is ClaimResult.RetryAfter for a ClaimBusy caused by
// another transaction holding the key's advisory lock: claim transactions
// are short, so the key is normally free again within milliseconds.
const DefaultBusyRetryAfter = 50 * time.Millisecond

// Store is the Postgres side of paystream: claims, fenced completions,
// releases, the sweeper's and retention's queries. It is safe for concurrent
// use. Every operation is one statement in its own implicit transaction on
// a connection from the pool; batch forms handle many keys in one round
// trip.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store using pool. The caller keeps ownership of pool and
// closes it after the last use of the Store. The pool should allow as many
// connections as the worker runs concurrent statements (pgxpool's own
// default is only max(4, CPUs)).
func New(pool *pgxpool.Pool) *Store {
	if pool == nil {
		panic("store: New called with a nil pool")
	}
	return &Store{pool: pool}
}

// Ping checks that a connection to the database can be acquired and used.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", translate(err))
	}
	return nil
}

// Get returns the row of key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (payment.Record, error) {
	row := s.pool.QueryRow(ctx, `
		SELECT idempotency_key, payment_id, merchant_id, amount_minor, currency,
		       status, attempts, gateway, gateway_charge_id, error_code,
		       created_at, updated_at, completed_at, ambiguous
		FROM payments WHERE idempotency_key = $1`, key)
	var rs recordScan
	if err := row.Scan(rs.dest()...); err != nil {
		return payment.Record{}, fmt.Errorf("store: get key %q: %w", key, translate(err))
	}
	return rs.record(), nil
}

// recordScan receives the nullable columns of a payments row.
type recordScan struct {
	key, paymentID, merchantID, currency, status pgtype.Text
	amountMinor                                  pgtype.Int8
	attempts                                     pgtype.Int4
	gateway, chargeID, errorCode                 pgtype.Text
	createdAt, updatedAt, completedAt            pgtype.Timestamptz
	ambiguous                                    pgtype.Bool
}

// dest returns the scan targets in the column order of Get and the claim and
// complete functions. They are pgtype values rather than pointers: pgx
// scans a NULL-able pointer by allocating its target through reflection,
// 14 allocations per row on the hot path. One recordScan and its targets
// may serve every row of a result: pgx sets each target on every row (a
// NULL as not Valid) and copies what it keeps (strings, byte slices), so
// that nothing read from one row is shared with the next; made per row,
// the targets escaped to the heap, some eight allocations per row.
func (rs *recordScan) dest() []any {
	return []any{
		&rs.key, &rs.paymentID, &rs.merchantID, &rs.amountMinor, &rs.currency,
		&rs.status, &rs.attempts, &rs.gateway, &rs.chargeID, &rs.errorCode,
		&rs.createdAt, &rs.updatedAt, &rs.completedAt, &rs.ambiguous,
	}
}

// present reports whether a row was returned (the key column is never NULL
// in a real row).
func (rs *recordScan) present() bool { return rs.key.Valid }

// record returns the row; a NULL column is its zero value.
func (rs *recordScan) record() payment.Record {
	return payment.Record{
		IdempotencyKey:  rs.key.String,
		PaymentID:       rs.paymentID.String,
		MerchantID:      rs.merchantID.String,
		AmountMinor:     rs.amountMinor.Int64,
		Currency:        rs.currency.String,
		Status:          payment.Status(rs.status.String),
		Attempts:        int(rs.attempts.Int32),
		Gateway:         rs.gateway.String,
		GatewayChargeID: rs.chargeID.String,
		ErrorCode:       rs.errorCode.String,
		CreatedAt:       rs.createdAt.Time,
		UpdatedAt:       rs.updatedAt.Time,
		CompletedAt:     rs.completedAt.Time,
		Ambiguous:       rs.ambiguous.Bool,
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// retryableCodes are the SQLSTATEs translated to ErrRetryable.
var retryableCodes = map[string]bool{
	"40001": true, // serialization_failure
	"40P01": true, // deadlock_detected
	"23505": true, // unique_violation: a racing insert; the retry sees the row
	"55P03": true, // lock_not_available
	"53300": true, // too_many_connections
	"57P01": true, // admin_shutdown
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now
}

// translate maps driver errors to the package's sentinels, keeping the
// original in the chain: ErrNotFound for pgx.ErrNoRows, ErrRetryable for
// transient conditions. Context errors and everything else pass unchanged.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if retryableCodes[pgErr.Code] || strings.HasPrefix(pgErr.Code, "08") { // class 08: connection exception
			return fmt.Errorf("%w: %w", ErrRetryable, err)
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %w", ErrRetryable, err)
	}
	return err
}
