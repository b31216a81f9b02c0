// Package pgmigrate applies a set of embedded goose migrations to a Postgres
// database: the worker's schema (package store) and the upstream outbox
// (package publish/outbox) both go through it, each with its own version
// table and lock.
package pgmigrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Set is one set of migrations.
type Set struct {
	// Files are the migrations, goose format, one file per version.
	Files fs.FS
	// Table records the applied versions, in the connection's default
	// schema.
	Table string
	// LockID is the session advisory lock that serialises concurrent runs
	// of this set on one database.
	LockID int64
}

// ErrInvalidURL is returned when the database URL does not parse; the URL
// itself is not quoted, since it may hold a password.
var ErrInvalidURL = errors.New("invalid database connection string")

// Up applies every pending migration of s to the database at databaseURL
// and returns when the schema is current. It is idempotent and safe to run
// from several processes at once: goose holds a session-level advisory lock
// for the duration (polled once a second, for up to ten minutes), on a
// dedicated connection that Up opens and closes itself. pgxpool's parser
// reads the URL, so pool_* settings a service's URL carries are accepted.
func Up(ctx context.Context, databaseURL string, s Set) error {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return ErrInvalidURL
	}
	db := stdlib.OpenDB(*cfg.ConnConfig)
	defer db.Close()

	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(s.LockID),
		lock.WithLockTimeout(1, 600),
		lock.WithUnlockTimeout(1, 60),
	)
	if err != nil {
		return fmt.Errorf("create locker: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, s.Files,
		goose.WithSessionLocker(locker),
		goose.WithTableName(s.Table),
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
	)
	if err != nil {
		return fmt.Errorf("create provider: %w", err)
	}
	_, err = provider.Up(ctx)
	return err
}
