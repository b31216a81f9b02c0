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
// exhaustFor: it opens connections until the server refuses (too many
// clients), terminates the workers' backends and takes their slots,
// again every 200ms, then closes them all.
func exhaustConnections(ctx context.Context, r *infraRun) error {
	url := r.dbURL + "&application_name=" + hoarderApp
	var held []*pgconn.PgConn
	defer func() {
		for _, c := range held {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	var heldMu sync.Mutex
	// grab opens connections from 8 goroutines at once until the server
	// refuses them: faster than the workers' pools can reconnect.
	grab := func() (refused error) {
		var wg sync.WaitGroup
		var once sync.Once
		for range 8 {
			wg.Go(func() {
				for range exhaustMaxConns {
					cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					c, err := pgconn.Connect(cctx, url)
					cancel()
					if err != nil {
						once.Do(func() { refused = err })
						return
					}
					heldMu.Lock()
					held = append(held, c)
					heldMu.Unlock()
				}
			})
		}
		wg.Wait()
		return refused
	}
	terminated := 0
	terminate := func() {
		if len(held) == 0 {
			return
		}
		rs, err := held[0].Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend'"+
			" AND application_name NOT IN ('"+hoarderApp+"', '"+auditApp+"') AND pid <> pg_backend_pid()").ReadAll()
		if err == nil && len(rs) > 0 {
			terminated += len(rs[0].Rows)
		}
	}
	r.begin("exhaust Postgres connections (max_connections %d) for %s", exhaustMaxConns, exhaustFor)
	err := grab()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		r.logf("hoarder: first refusal was not too_many_connections: %v", err)
	}
	deadline := time.Now().Add(exhaustFor)
	for time.Now().Before(deadline) {
		terminate()
		_ = grab()
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
	r.figure("held", len(held))
	r.figure("terminated", terminated)
	r.logf("hoarder held %d connections, terminated %d worker backends; last refusal: %v", len(held),
		terminated, strings.TrimSpace(fmt.Sprint(err)))
	for _, c := range held {
		_ = c.Close(context.WithoutCancel(ctx))
	}
	held = nil
	r.end("connections released")
	return nil
}
