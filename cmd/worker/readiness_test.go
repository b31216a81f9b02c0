package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestDBCause: readiness names why the database failed without quoting the
// connection error (which names hosts and users).
func TestDBCause(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("connect: %w", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"too many connections", fmt.Errorf("failed to connect to `user=app`: %w", &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}),
			"too many connections (SQLSTATE 53300)"},
		{"shutting down", &pgconn.PgError{Code: "57P01"}, "server shutting down or starting (SQLSTATE 57P01)"},
		{"other server error", &pgconn.PgError{Code: "28P01"}, "SQLSTATE 28P01"},
		{"standby only", errors.New("failed to connect to `user=app database=p`: 127.0.0.1:5433: read only connection"), "no read-write server"},
		{"timeout", fmt.Errorf("ping: %w", context.DeadlineExceeded), "timeout"},
		{"refused", fmt.Errorf("failed to connect to `user=app password=secret`: %w", refused), "connection refused"},
		{"lost", errors.New("failed to write startup message: unexpected EOF"), "connection lost"},
		{"anything else", errors.New("tls: bad certificate password=secret"), "connection failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := dbCause(tc.err)
			require.Contains(t, got, tc.want)
			require.NotContains(t, got, "secret")
			require.NotContains(t, got, "user=")
		})
	}
}
