package main

import (
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/natstest"
	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/payment"
)

// rolesSQL is the least-privilege script of the deployment.
var rolesSQL = filepath.Join("..", "..", "deploy", "postgres", "roles.sql") //nolint:gochecknoglobals // a constant path

// Roles of rolesSQL.
const (
	migratorRole = "paystream_migrator"
	runtimeRole  = "paystream_runtime"
)

// applyRoles runs rolesSQL as the superuser on the database at dbURL, as
// psql -f would (one simple-protocol query).
func applyRoles(t *testing.T, dbURL string) {
	t.Helper()
	script, err := os.ReadFile(rolesSQL)
	require.NoError(t, err)
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, string(script)).ReadAll()
	require.NoError(t, err, "apply %s", rolesSQL)
}

// asRole returns dbURL with its user replaced by role (the throwaway cluster
// trusts loopback connections: no password).
func asRole(t *testing.T, dbURL, role string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.User(role)
	return u.String()
}

// requireInsufficientPrivilege requires err to be Postgres's
// insufficient_privilege (SQLSTATE 42501).
func requireInsufficientPrivilege(t *testing.T, err error, what string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%s: want SQLSTATE 42501, got %v", what, err)
	require.Equal(t, "42501", pgErr.Code, "%s: %s", what, pgErr.Message)
}

// TestLeastPrivilegeRoles applies deploy/postgres/roles.sql to an empty
// database, migrates as the migrator with `worker migrate` and
// PAYSTREAM_MIGRATE_DATABASE_URL, runs the worker as the runtime role, and
// checks that the runtime role can change no schema. Its subtests share the
// cluster-wide roles, so they run one after the other.
func TestLeastPrivilegeRoles(t *testing.T) {
	ctx := context.Background()

	t.Run("worker migrate as the migrator, worker as the runtime role", func(t *testing.T) {
		superURL := pgtest.NewEmptyDatabase(t)
		applyRoles(t, superURL)
		migratorURL, runtimeURL := asRole(t, superURL, migratorRole), asRole(t, superURL, runtimeRole)

		// The runtime role cannot migrate: it may not create in the schema.
		err := run(ctx, []string{"migrate"}, envFrom(map[string]string{"PAYSTREAM_DATABASE_URL": runtimeURL}), io.Discard, io.Discard)
		require.Error(t, err, "the runtime role ran the migrations")
		require.Contains(t, err.Error(), "permission denied")

		require.NoError(t, run(ctx, []string{"migrate"}, envFrom(map[string]string{
			"PAYSTREAM_DATABASE_URL":         runtimeURL,
			"PAYSTREAM_MIGRATE_DATABASE_URL": migratorURL,
		}), io.Discard, io.Discard), "worker migrate with the migrator's URL")
		applyRoles(t, superURL) // after a migration: idempotent, takes the version table back

		super := newPool(t, superURL)
		var owner string
		require.NoError(t, super.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'payments'").Scan(&owner))
		require.Equal(t, migratorRole, owner)

		ns := natstest.New(t)
		env := baseEnv(t, runtimeURL)
		env["PAYSTREAM_NATS_URL"] = ns.URL()
		w := startRun(t, env)
		js := clientJS(t, ns.URL())
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: "p-runtime", MerchantID: "m1",
			AmountMinor: 1250, Currency: "EUR", PaymentMethod: "pm_card_visa"})
		require.Equal(t, payment.StatusSucceeded, waitFinal(t, super, "p-runtime"))
		w.stop(t)

		// No DDL, no TRUNCATE, no version table for the runtime role.
		rt, err := pgx.Connect(ctx, runtimeURL)
		require.NoError(t, err)
		defer rt.Close(ctx)
		for _, stmt := range []string{
			"CREATE TABLE evil (id int)",
			"CREATE TEMP TABLE evil (id int)",
			"DROP TABLE payments",
			"ALTER TABLE payments ADD COLUMN evil int",
			"ALTER TABLE payments DROP CONSTRAINT payments_status_check",
			"TRUNCATE payments",
			"CREATE INDEX evil ON payments (merchant_id)",
			"CREATE OR REPLACE FUNCTION paystream_claim() RETURNS int LANGUAGE sql AS 'SELECT 1'",
			"DROP FUNCTION paystream_claim",
			"SELECT count(*) FROM paystream_schema_migrations",
			"DELETE FROM paystream_schema_migrations",
		} {
			_, err := rt.Exec(ctx, stmt)
			requireInsufficientPrivilege(t, err, stmt)
		}
		var n int
		require.NoError(t, rt.QueryRow(ctx, "SELECT count(*) FROM payments").Scan(&n), "the runtime role reads the ledger")
		require.Equal(t, 1, n)
	})

	t.Run("worker --migrate uses the migrator's URL", func(t *testing.T) {
		superURL := pgtest.NewEmptyDatabase(t)
		applyRoles(t, superURL)
		runtimeURL := asRole(t, superURL, runtimeRole)
		ns := natstest.New(t)
		env := baseEnv(t, runtimeURL)
		env["PAYSTREAM_NATS_URL"] = ns.URL()
		env["PAYSTREAM_MIGRATE"] = "true"
		env["PAYSTREAM_MIGRATE_DATABASE_URL"] = asRole(t, superURL, migratorRole)
		w := startRun(t, env)
		js := clientJS(t, ns.URL())
		publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: "p-migrate", MerchantID: "m1",
			AmountMinor: 990, Currency: "EUR", PaymentMethod: "pm_card_visa"})
		require.Equal(t, payment.StatusSucceeded, waitFinal(t, newPool(t, superURL), "p-migrate"))
		w.stop(t)
	})
}

// TestWorkerOverVerifiedTLS runs the worker, migrations included, against a
// server that accepts TLS only, with PAYSTREAM_DATABASE_URL in
// sslmode=verify-full with the CA of the server's certificate.
func TestWorkerOverVerifiedTLS(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartTLS(t)
	dbURL := srv.NewDatabase(t)
	require.Contains(t, dbURL, "sslmode=verify-full")
	require.Contains(t, dbURL, "sslrootcert=")
	ns := natstest.New(t)
	env := baseEnv(t, dbURL)
	env["PAYSTREAM_NATS_URL"] = ns.URL()
	env["PAYSTREAM_MIGRATE"] = "true"
	w := startRun(t, env)
	js := clientJS(t, ns.URL())
	publishJSON(t, js, "payments.requests.m1", payment.Request{PaymentID: "p-tls", MerchantID: "m1",
		AmountMinor: 700, Currency: "EUR", PaymentMethod: "pm_card_visa"})
	pool := newPool(t, dbURL)
	require.Equal(t, payment.StatusSucceeded, waitFinal(t, pool, "p-tls"))
	var ssl bool
	require.NoError(t, pool.QueryRow(context.Background(),
		"SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = current_database()").Scan(&ssl))
	require.True(t, ssl, "a connection to the database is not encrypted")
	w.stop(t)
}
