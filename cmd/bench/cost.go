package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paystream/paystream/internal/testenv/localstack"
)

// clockTicks is the kernel's USER_HZ, the unit of the CPU times in
// /proc/<pid>/stat: 100 on every Linux platform Go supports.
const clockTicks = 100

// benchAppName is the application_name of the benchmark's own Postgres
// connections, so that waits for the workers' backends can leave them out.
const benchAppName = "paystream-bench"

// usage is a snapshot of the counters a line's cost is computed from.
type usage struct {
	at time.Time
	// CPU time (user + system) of the worker processes (or, for lines run
	// inside the benchmark, of the benchmark process itself), nats-server,
	// and Postgres (the postmaster, its live children, and its reaped
	// children through cutime/cstime).
	worker, nats, pg time.Duration
	pgOK             bool
	// mallocs is the number of heap allocations of the workers
	// (go_memstats_mallocs_total) or of the benchmark process.
	mallocs float64
	// walLSN is pg_current_wal_lsn(); commits is pg_stat_database's
	// xact_commit; upd and hotUpd are pg_stat_user_tables' n_tup_upd and
	// n_tup_hot_upd of payments.
	walLSN               string
	commits, upd, hotUpd int64
	// natsMsgs is nats-server's in_msgs + out_msgs (/varz): every message
	// a client published to it and every one it delivered, pull requests,
	// acks and PubAcks included.
	natsMsgs int64
}

// cost is what one payment cost, from two usage snapshots.
type cost struct {
	workerUS, natsUS, pgUS float64
	pgOK                   bool
	walBytes               float64
	commits                float64
	allocs                 float64
	natsMsgs               float64 // messages into and out of nats-server
	hotPct                 float64 // of the updates of payments, -1 when there were none
}

func (c *cost) totalUS() float64 { return c.workerUS + c.natsUS + c.pgUS }

// snapshot reads the counters. workers are the worker processes of the line;
// none means the line runs inside this process.
func (b *bench) snapshot(ctx context.Context, workers []*localstack.Process) (usage, error) {
	u := usage{at: time.Now()}
	if len(workers) == 0 {
		u.worker = selfCPU()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		u.mallocs = float64(ms.Mallocs)
	}
	for _, w := range workers {
		t, err := procCPU(w.PID(), false)
		if err != nil {
			return u, err
		}
		u.worker += t
		m, err := scrapeMallocs(ctx, w.HTTPAddr())
		if err != nil {
			return u, err
		}
		u.mallocs += m
	}
	var err error
	if u.nats, err = procCPU(b.stack.NATS().PID(), false); err != nil {
		return u, err
	}
	var varz struct {
		InMsgs  int64 `json:"in_msgs"`
		OutMsgs int64 `json:"out_msgs"`
	}
	if err := getJSON(ctx, b.stack.NATSMonitorURL()+"/varz", &varz); err != nil {
		return u, fmt.Errorf("nats-server /varz: %w", err)
	}
	u.natsMsgs = varz.InMsgs + varz.OutMsgs
	if pg := b.stack.Postgres(); pg != nil {
		if u.pg, err = postgresCPU(pg.PID()); err != nil {
			return u, err
		}
		u.pgOK = true
	}
	err = b.pool.QueryRow(ctx, `
		SELECT pg_current_wal_lsn()::text,
			(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
			coalesce((SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'payments'), 0),
			coalesce((SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'payments'), 0)`).
		Scan(&u.walLSN, &u.commits, &u.upd, &u.hotUpd)
	return u, err
}

// costOf divides the difference of two snapshots by n payments.
func (b *bench) costOf(ctx context.Context, from, to usage, n int) (*cost, error) {
	f := float64(n)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / f }
	c := &cost{
		workerUS: us(to.worker - from.worker),
		natsUS:   us(to.nats - from.nats),
		pgUS:     us(to.pg - from.pg),
		pgOK:     from.pgOK && to.pgOK,
		commits:  float64(to.commits-from.commits) / f,
		allocs:   (to.mallocs - from.mallocs) / f,
		natsMsgs: float64(to.natsMsgs-from.natsMsgs) / f,
		hotPct:   -1,
	}
	if d := to.upd - from.upd; d > 0 {
		c.hotPct = 100 * float64(to.hotUpd-from.hotUpd) / float64(d)
	}
	var wal float64
	if err := b.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8`, to.walLSN, from.walLSN).Scan(&wal); err != nil {
		return nil, err
	}
	c.walBytes = wal / f
	return c, nil
}

// waitBackendsGone waits until the database has no client backends but the
// benchmark's own: a backend flushes its statistics (commits, tuples) when
// it exits, so the counters are complete only then.
func (b *bench) waitBackendsGone(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND backend_type = 'client backend'
			AND application_name <> $1`, benchAppName).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d backends still connected after 15s", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// procCPU returns the user + system CPU time of process pid, with its
// reaped children's when children is set.
func procCPU(pid int, children bool) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// Fields after the command: state(0) ppid(1) … utime(11) stime(12)
	// cutime(13) cstime(14).
	var ticks int64
	idx := []int{11, 12}
	if children {
		idx = append(idx, 13, 14)
	}
	for _, i := range idx {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// statFields returns the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	f, err := parseStat(string(b))
	if err != nil {
		return nil, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return f, nil
}

// parseStat splits the text of /proc/<pid>/stat after the command name,
// which is in parentheses and may itself hold spaces and parentheses.
func parseStat(s string) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("no command")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return nil, fmt.Errorf("%d fields after the command, want at least 15", len(f))
	}
	return f, nil
}

// postgresCPU is the CPU time of the postmaster, its reaped children (the
// backends that have exited) and its live children.
func postgresCPU(postmaster int) (time.Duration, error) {
	total, err := procCPU(postmaster, true)
	if err != nil {
		return 0, err
	}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	parent := strconv.Itoa(postmaster)
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == postmaster {
			continue
		}
		f, err := statFields(pid)
		if err != nil || f[1] != parent {
			continue // gone meanwhile, or not a child
		}
		if t, err := procCPU(pid, false); err == nil {
			total += t
		}
	}
	return total, nil
}

// selfCPU is this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scrapeMallocs reads go_memstats_mallocs_total from a worker's /metrics.
func scrapeMallocs(ctx context.Context, addr string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("metrics: no go_memstats_mallocs_total")
}

// statCounters re-reads the statistics counters of u (commits, updates),
// for after the line's backends have exited and flushed them.
func (b *bench) statCounters(ctx context.Context, u *usage) error {
	return b.pool.QueryRow(ctx, `
		SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
			coalesce((SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'payments'), 0),
			coalesce((SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'payments'), 0)`).
		Scan(&u.commits, &u.upd, &u.hotUpd)
}
