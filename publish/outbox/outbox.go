package outbox

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/pgmigrate"
	"github.com/paystream/paystream/payment"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationTable is the goose version table of the outbox migrations. It
// differs from the worker's (paystream_schema_migrations), so both sets of
// migrations can be applied to one database.
const MigrationTable = "paystream_outbox_migrations"

// Table is the outbox table.
const Table = "paystream_outbox"

// Partitions is the number of partitions rows are spread over by a hash of
// merchant_id. Rows of one merchant are always in one partition. Changing it
// would move merchants between partitions, so it is fixed.
const Partitions = 16

// migrationLockID is the session advisory lock that serialises concurrent
// Migrate calls on one database ("psoutbmg" in ASCII). It differs from the
// worker's migration lock.
const migrationLockID int64 = 0x70736f7574626d67

// Migrations returns the embedded SQL migrations (goose format).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded tree always has the directory
	}
	return sub
}

// Migrate applies every pending outbox migration to the database at
// databaseURL. It is idempotent and safe to run from several processes at
// once (a session advisory lock serialises them, polled once a second for up
// to ten minutes).
func Migrate(ctx context.Context, databaseURL string) error {
	err := pgmigrate.Up(ctx, databaseURL, pgmigrate.Set{Files: Migrations(), Table: MigrationTable, LockID: migrationLockID})
	switch {
	case errors.Is(err, pgmigrate.ErrInvalidURL):
		return errors.New("outbox: migrate: invalid database connection string")
	case err != nil:
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	return nil
}

// Execer runs one statement. pgx.Tx satisfies it, and so do *pgx.Conn and
// *pgxpool.Pool (without a transaction of the caller's, the row is committed
// at once, which defeats the purpose of an outbox).
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Config configures Enqueue. The zero value means the contract's defaults.
type Config struct {
	// SubjectPrefix is the subject prefix of the deployment
	// (PAYSTREAM_SUBJECT_PREFIX): the request goes to
	// <SubjectPrefix>.requests.<merchant_id>. Default "payments".
	SubjectPrefix string
	// Limits are the validation limits (PAYSTREAM_MAX_AMOUNT_MINOR); the
	// zero value means the contract's defaults. Use the workers' values, or
	// a request accepted here is dead-lettered invalid by the workers.
	Limits payment.Limits
}

// Enqueue validates r as the workers do (payment.Request.Validate with
// cfg.Limits) and inserts it into the outbox through db, which should be the
// caller's transaction: the request is published after, and only if, that
// transaction commits. The body is r.Marshal(), the body the publish package
// sends. An invalid request returns an error matching payment.ErrInvalid and
// inserts nothing; the caller decides whether to roll back. Any other error
// comes from the database; within a transaction it aborts it.
func Enqueue(ctx context.Context, db Execer, r *payment.Request, cfg Config) error {
	if r == nil {
		return fmt.Errorf("outbox: nil request: %w", payment.ErrInvalid)
	}
	prefix := cfg.SubjectPrefix
	if prefix == "" {
		prefix = contract.SubjectPrefix
	}
	lim := cfg.Limits
	lim.SubjectPrefix = prefix
	if err := r.Validate(lim); err != nil {
		return fmt.Errorf("outbox: enqueue: %w", err)
	}
	body, err := r.Marshal()
	if err != nil {
		return fmt.Errorf("outbox: enqueue payment %s: marshal: %w", r.PaymentID, err)
	}
	if len(body) > payment.MaxBodyBytes {
		return fmt.Errorf("outbox: enqueue payment %s: body of %d bytes: %w", r.PaymentID, len(body), payment.ErrInvalid)
	}
	subject := prefix + ".requests." + r.MerchantID
	if _, err := db.Exec(ctx,
		"INSERT INTO "+Table+" (partition, subject, payment_id, body) VALUES ($1, $2, $3, $4)",
		PartitionOf(r.MerchantID), subject, r.PaymentID, body); err != nil {
		return fmt.Errorf("outbox: enqueue payment %s: %w", r.PaymentID, err)
	}
	return nil
}

// PartitionOf returns the partition of a merchant's rows: FNV-1a of the
// merchant id modulo Partitions.
func PartitionOf(merchantID string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(merchantID))
	return int32(h.Sum32() % Partitions)
}
