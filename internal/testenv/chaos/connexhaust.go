package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The connection-exhaustion scenario: Postgres allows few connections,
// and a hoarding client takes every free one and the workers' too.
const (
	exhaustMaxConns = 40
	exhaustWorkerDB = 12 // PAYSTREAM_DB_MAX_CONNS of each worker
	exhaustFor      = 12 * time.Second
	hoarderApp      = "chaos-hoarder"
	auditApp        = "chaos-audit"
)

func connScenarios() []Scenario {
	return []Scenario{{
		Name: "pg-conn-exhaust", CI: true,
		Doc: fmt.Sprintf("Postgres out of connections for %s (max_connections %d): another client takes every free slot "+
			"and the workers' connections as they are terminated", exhaustFor, exhaustMaxConns),
		PostgresSettings: []string{fmt.Sprintf("max_connections=%d", exhaustMaxConns)},
		WorkerEnv:        map[string]string{"PAYSTREAM_DB_MAX_CONNS": fmt.Sprint(exhaustWorkerDB)},
		prepare: func(_ context.Context, r *infraRun) error {
			r.auditURL = r.dbURL + "&application_name=" + auditApp
			return nil
		},
		fault: exhaustConnections,
	}}
}

// exhaustConnections holds every connection Postgres will give for
// exhaustFor: four grabbers open connections without pause (20ms after a
// refusal) and keep them, and every 200ms the workers' backends are
// terminated, so that their slots go to the grabbers; then it closes them
// all.
func exhaustConnections(ctx context.Context, r *infraRun) error {
	url := r.dbURL + "&application_name=" + hoarderApp
	var (
		mu          sync.Mutex
		held        []*pgconn.PgConn
		lastRefusal error
	)
	defer func() {
		for _, c := range held {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	r.begin("exhaust Postgres connections (max_connections %d) for %s", exhaustMaxConns, exhaustFor)
	fctx, stop := context.WithTimeout(ctx, exhaustFor)
	defer stop()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for fctx.Err() == nil {
				cctx, cancel := context.WithTimeout(fctx, 2*time.Second)
				c, err := pgconn.Connect(cctx, url)
				cancel()
				if err != nil {
					mu.Lock()
					if fctx.Err() == nil {
						lastRefusal = err
					}
					mu.Unlock()
					sleep(fctx, 20*time.Millisecond)
					continue
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		})
	}
	terminated := 0
	for sleep(fctx, 200*time.Millisecond) {
		mu.Lock()
		var c *pgconn.PgConn
		if len(held) > 0 {
			c = held[0]
		}
		mu.Unlock()
		if c == nil {
			continue
		}
		rs, err := c.Exec(fctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend'"+
			" AND application_name NOT IN ('"+hoarderApp+"', '"+auditApp+"') AND pid <> pg_backend_pid()").ReadAll()
		if err == nil && len(rs) > 0 {
			terminated += len(rs[0].Rows)
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var pgErr *pgconn.PgError
	if !errors.As(lastRefusal, &pgErr) || pgErr.Code != "53300" {
		r.logf("hoarder: last refusal was not too_many_connections: %v", lastRefusal)
	}
	r.figure("held", len(held))
	r.figure("terminated", terminated)
	r.logf("hoarder held %d connections, terminated %d worker backends; last refusal: %v", len(held),
		terminated, strings.TrimSpace(fmt.Sprint(lastRefusal)))
	for _, c := range held {
		_ = c.Close(context.WithoutCancel(ctx))
	}
	held = nil
	r.end("connections released")
	return nil
}
