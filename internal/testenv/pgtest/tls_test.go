package pgtest_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/internal/testenv/pgtest"
	"github.com/paystream/paystream/store"
)

func connectErr(t *testing.T, dsn string, tune ...func(*pgconn.Config)) error {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	require.NoError(t, err)
	for _, f := range tune {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		require.NoError(t, conn.Close(ctx))
	}
	return err
}

// TestTLSVerifyFull runs against a server with TLS only: verify-full with
// the right CA connects, and the store migrates and works over it; another
// CA, a host name the certificate does not name, and no TLS at all are
// refused.
func TestTLSVerifyFull(t *testing.T) {
	t.Parallel()
	srv := pgtest.StartTLS(t)
	ctx := context.Background()

	t.Run("verify-full connects and the store works", func(t *testing.T) {
		dbURL := srv.NewDatabase(t)
		require.Contains(t, dbURL, "sslmode=verify-full")
		require.NoError(t, store.Migrate(ctx, dbURL))
		pool, err := pgxpool.New(ctx, dbURL)
		require.NoError(t, err)
		defer pool.Close()
		var ssl bool
		var version string
		require.NoError(t, pool.QueryRow(ctx, "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version))
		require.True(t, ssl, "the connection is not encrypted")
		require.True(t, strings.HasPrefix(version, "TLSv1."), "TLS version %s", version)
		_, err = pool.Exec(ctx, `INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor,
			currency, status, attempts, fingerprint, lease_until) VALUES ('k', 'p', 'm', 1, 'EUR', 'processing', 1, 'f', now())`)
		require.NoError(t, err)
		// By IP address too: the certificate names 127.0.0.1.
		require.NoError(t, connectErr(t, srv.URL("127.0.0.1", "postgres", "sslmode=verify-full")))
	})

	t.Run("another CA is refused", func(t *testing.T) {
		other, err := pgtest.NewTLSFiles(t.TempDir())
		require.NoError(t, err)
		err = connectErr(t, srv.URL("localhost", "postgres", "sslmode=verify-full&sslrootcert="+other.CA))
		var unknown x509.UnknownAuthorityError
		require.True(t, errors.As(err, &unknown), "want x509: unknown authority, got %v", err)
		// verify-ca checks the chain as well.
		err = connectErr(t, srv.URL("localhost", "postgres", "sslmode=verify-ca&sslrootcert="+other.CA))
		require.True(t, errors.As(err, &unknown), "verify-ca: want x509: unknown authority, got %v", err)
	})

	t.Run("a host name not in the certificate is refused under verify-full", func(t *testing.T) {
		// db.example.invalid resolves to the server, as a wrong DNS entry
		// or a spoofed one would make it.
		toServer := func(cfg *pgconn.Config) {
			cfg.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
		}
		err := connectErr(t, srv.URL("db.example.invalid", "postgres", "sslmode=verify-full"), toServer)
		var host x509.HostnameError
		require.True(t, errors.As(err, &host), "want x509: certificate is not valid for db.example.invalid, got %v", err)
		// verify-ca does not check the name: the chain alone passes, so
		// the refusal above is the name check.
		require.NoError(t, connectErr(t, srv.URL("db.example.invalid", "postgres", "sslmode=verify-ca"), toServer))
	})

	t.Run("no TLS is refused by a hostssl-only pg_hba.conf", func(t *testing.T) {
		err := connectErr(t, srv.URL("127.0.0.1", "postgres", "sslmode=disable"))
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "want a refusal from the server, got %v", err)
		require.Equal(t, "28000", pgErr.Code, "invalid_authorization_specification: %s", pgErr.Message)
		require.Contains(t, pgErr.Message, "no encryption")
	})

}
