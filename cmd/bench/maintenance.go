package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// maintenance is what Postgres did on its own during a latency window: the
// checkpoints that started in it and how much of it an autovacuum worker
// ran, and on which tables. A checkpoint (the full-page images that follow
// it, its final fsync) and a vacuum (CPU and I/O on a 2-core host) both
// lengthen commits while they run, so a window that overlaps them has a
// longer tail: the p99 line says so rather than leaving the reader to guess.
type maintenance struct {
	// err, when not nil, is why the watcher could not tell: the line
	// says so and the benchmark goes on.
	err         error
	checkpoints int64 // started during the window (one started before may still run)
	samples     int   // how many times the watcher looked
	vacuuming   int   // of which an autovacuum worker was running
	// tables is what the autovacuum workers seen were doing ("VACUUM
	// public.payments", "ANALYZE public.payment_attempts"), sorted; the
	// system catalogs' are left out.
	tables []string
	// hidden: the benchmark's role may not see other roles' activity
	// (neither superuser nor pg_read_all_stats), so autovacuum workers
	// are invisible to it.
	hidden bool
}

// vacuumPct is the share of the window, in percent, in which an autovacuum
// worker was seen running.
func (m maintenance) vacuumPct() float64 {
	if m.samples == 0 {
		return 0
	}
	return 100 * float64(m.vacuuming) / float64(m.samples)
}

// String says what ran, for the latency line: "no checkpoint started, no
// autovacuum", or "1 checkpoint started; autovacuum running 40 % of it
// (VACUUM public.payments)".
func (m maintenance) String() string {
	if m.err != nil {
		return "unknown (" + m.err.Error() + ")"
	}
	var parts []string
	switch m.checkpoints {
	case 0:
		parts = append(parts, "no checkpoint started")
	case 1:
		parts = append(parts, "1 checkpoint started")
	default:
		parts = append(parts, fmt.Sprintf("%d checkpoints started", m.checkpoints))
	}
	switch {
	case m.hidden:
		parts = append(parts, "autovacuum not visible to this role (needs pg_read_all_stats)")
	case m.vacuuming > 0:
		parts = append(parts, fmt.Sprintf("autovacuum running %.0f %% of it (%s)", m.vacuumPct(), strings.Join(m.tables, ", ")))
	default:
		parts = append(parts, "no autovacuum")
	}
	return strings.Join(parts, "; ")
}

// maintenanceSample is one look at the server: its checkpoint counter and
// what its autovacuum workers are doing now.
type maintenanceSample struct {
	checkpoints int64
	vacuums     []string
}

// checkpointsQuery counts the checkpoints a server has started (timed and
// requested, CHECKPOINT included); PostgreSQL 17 moved the counters from
// pg_stat_bgwriter to pg_stat_checkpointer.
func checkpointsQuery(serverVersion int) string {
	if serverVersion >= 170000 {
		return `SELECT num_timed + num_requested FROM pg_stat_checkpointer`
	}
	return `SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter`
}

// maintenanceWatcher samples a server's checkpoints and autovacuum workers
// every interval, from start until stop.
type maintenanceWatcher struct {
	pool  *pgxpool.Pool
	every time.Duration
	query string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	first  maintenanceSample
	m      maintenance
	seen   map[string]bool
	err    error
}

// watchMaintenance takes a first sample and starts sampling every interval
// in a goroutine that stop (or abort) ends and waits for.
func watchMaintenance(ctx context.Context, pool *pgxpool.Pool, every time.Duration) (*maintenanceWatcher, error) {
	var version int
	var sees bool
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int,
		(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR pg_has_role('pg_read_all_stats', 'USAGE')`).
		Scan(&version, &sees); err != nil {
		return nil, fmt.Errorf("maintenance: %w", err)
	}
	w := &maintenanceWatcher{pool: pool, every: every, query: checkpointsQuery(version), seen: map[string]bool{}}
	w.m.hidden = !sees
	first, err := w.sample(ctx)
	if err != nil {
		return nil, err
	}
	w.first = first
	w.add(first)
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Go(func() { w.run(ctx) })
	return w, nil
}

func (w *maintenanceWatcher) run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, err := w.sample(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.err = err
			}
			return
		}
		w.add(s)
	}
}

// sample looks at the server once. Workers on the system catalogs (short
// ANALYZEs of pg_catalog after DDL) are left out: they are not the load.
func (w *maintenanceWatcher) sample(ctx context.Context) (maintenanceSample, error) {
	var s maintenanceSample
	err := w.pool.QueryRow(ctx, `SELECT (`+w.query+`),
		coalesce((SELECT array_agg(DISTINCT regexp_replace(query, '^autovacuum: ', ''))
			FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND query <> ''
				AND query !~ ' (pg_catalog|information_schema)\.'), '{}')`).
		Scan(&s.checkpoints, &s.vacuums)
	if err != nil {
		return s, fmt.Errorf("maintenance: %w", err)
	}
	return s, nil
}

func (w *maintenanceWatcher) add(s maintenanceSample) {
	w.m.samples++
	w.m.checkpoints = s.checkpoints - w.first.checkpoints
	if len(s.vacuums) > 0 {
		w.m.vacuuming++
	}
	for _, v := range s.vacuums {
		// "VACUUM public.payments (to prevent wraparound)": the command
		// and the table are what the reader needs.
		if i := strings.Index(v, " ("); i > 0 {
			v = v[:i]
		}
		if !w.seen[v] {
			w.seen[v] = true
			w.m.tables = append(w.m.tables, v)
		}
	}
}

// abort ends the watcher's goroutine and waits for it, without a last
// sample: for a window that failed.
func (w *maintenanceWatcher) abort() {
	w.cancel()
	w.wg.Wait()
}

// stop takes a last sample, ends the watcher's goroutine and returns what
// it saw over the whole window.
func (w *maintenanceWatcher) stop(ctx context.Context) (maintenance, error) {
	w.cancel()
	w.wg.Wait()
	if w.err != nil {
		return maintenance{}, w.err
	}
	last, err := w.sample(ctx)
	if err != nil {
		return maintenance{}, err
	}
	w.add(last)
	slices.Sort(w.m.tables)
	return w.m, nil
}
