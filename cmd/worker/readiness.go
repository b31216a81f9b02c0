package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Dependencies a worker reports on /readyz, in its heartbeat and as
// paystream_dependency_up{dependency} (docs/contract.md §9).
const (
	depNATS     = "nats"
	depDatabase = "database"
	// depJetStream is the consumer: bound, pulling, and its outcome and
	// dead-letter publishes stored (a full JetStream store fails them).
	depJetStream = "jetstream"
	depGateway   = "gateway"
)

// depCheck is one dependency's state: err nil when it is up.
type depCheck struct {
	name string
	err  error
}

// dependencies checks each dependency: NATS connected, the database
// answering a ping, the consumer bound with its publishes going through,
// and the gateway taking our credentials with its breaker not open. Only
// the first three decide readiness (an open breaker is the fleet pausing on
// purpose, not this worker failing).
func (w *worker) dependencies(ctx context.Context) []depCheck {
	out := make([]depCheck, 0, 4)
	var natsErr error
	if !w.nc.IsConnected() {
		natsErr = fmt.Errorf("nats: %s", w.nc.Status())
	}
	out = append(out, depCheck{depNATS, natsErr})
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var dbErr error
	if err := w.pool.Ping(pctx); err != nil {
		dbErr = fmt.Errorf("database unreachable: %s", dbCause(err))
	}
	out = append(out, depCheck{depDatabase, dbErr})
	var consErr error
	if err := w.cons.Ready(); err != nil {
		consErr = fmt.Errorf("consumer: %w", err)
	}
	out = append(out, depCheck{depJetStream, consErr})
	gwErr := w.proc.Ready()
	if open, n := w.proc.BreakersOpen(); gwErr == nil && open == n {
		// With several gateways a payment fails over past an open
		// breaker: the worker is not ready only when every one is open.
		gwErr = errors.New("gateway breaker open")
		if n > 1 {
			gwErr = fmt.Errorf("every gateway's breaker open (%d)", n)
		}
	}
	return append(out, depCheck{depGateway, gwErr})
}

// dbCause names why a database ping failed, in words that carry no
// connection string: too many connections, no read-write server (a
// standby, or a failover under way), a timeout, a refused connection.
func dbCause(err error) string {
	var pgErr *pgconn.PgError
	var opErr *net.OpError
	msg := err.Error()
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "53300":
		return "too many connections (SQLSTATE 53300): the server's max_connections is reached"
	case errors.As(err, &pgErr) && (pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"):
		return fmt.Sprintf("server shutting down or starting (SQLSTATE %s)", pgErr.Code)
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code
	case strings.Contains(msg, "read only connection") || strings.Contains(msg, "target_session_attrs"):
		return "no read-write server (target_session_attrs=read-write): a standby only, or a failover under way"
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return "timeout"
	case errors.As(err, &opErr) && strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "unexpected EOF") || strings.Contains(msg, "conn closed") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe"):
		return "connection lost"
	default:
		return "connection failed"
	}
}
