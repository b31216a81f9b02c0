package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/paystream/paystream/internal/pgmigrate"
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
	err := pgmigrate.Up(ctx, databaseURL, pgmigrate.Set{Files: Migrations(), Table: MigrationTable, LockID: migrationLockID})
	switch {
	case errors.Is(err, pgmigrate.ErrInvalidURL):
		return fmt.Errorf("store: migrate: parse database url: %w", err)
	case err != nil:
		return fmt.Errorf("store: migrate: %w", translate(err))
	}
	return nil
}
