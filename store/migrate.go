package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// MigrationTable is the table in which goose records the applied migration
// versions, in the connection's default schema.
const MigrationTable = "paystream_schema_migrations"

// migrationLockID is the session advisory lock that serialises concurrent
// Migrate calls on one database ("paystrmg" in ASCII).
const migrationLockID int64 = 0x7061797374726d67

// Migrations returns the embedded SQL migrations (goose format, one file per
// version). Test harnesses use it to tell schema versions apart.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded tree always has the directory
	}
	return sub
}

// Migrate applies every pending migration to the database at databaseURL
// and returns when the schema is current. It is idempotent and safe to run
// from several processes at once: goose holds a session-level advisory lock
// for the duration (polled once a second, for up to ten minutes), on a
// dedicated connection that Migrate opens and closes itself.
func Migrate(ctx context.Context, databaseURL string) error {
	// pgxpool's parser accepts (and drops) the pool_* settings a worker's
	// database URL may carry.
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("store: migrate: parse database url: %w", err)
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	defer db.Close()

	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(migrationLockID),
		lock.WithLockTimeout(1, 600),
		lock.WithUnlockTimeout(1, 60),
	)
	if err != nil {
		return fmt.Errorf("store: migrate: create locker: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithSessionLocker(locker),
		goose.WithTableName(MigrationTable),
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
	)
	if err != nil {
		return fmt.Errorf("store: migrate: create provider: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate: %w", translate(err))
	}
	return nil
}
