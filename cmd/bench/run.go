package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// results are everything one run measured.
type results struct {
	n       int
	prefill int
	lines   []*line
	// named lines (nil when not run)
	headline, defaults, slow, floor, raw256, rawBest, syncAlways *line
	grown, grownFloor                                            *line
	// contract floors, with JetStream's default sync and sync always
	contractFloor, contractFloorAlways *line
	// traced is the -tracing line; spans, posts and bytes what its sink
	// received.
	traced                            *line
	tracedSpans, tracedPosts, tracedB int64
	// half is the latency at half the headline's rate; latencyPoints
	// the more points of -latency-at.
	half          latencyPoint
	latencyPoints []latencyPoint
	maxRSS        float64
	// directPerSec and relayPerSec are requests per second into the
	// stream, published directly and relayed from the outbox.
	directPerSec, relayPerSec float64
	loadStart, loadEnd        string
}

// latencyPoint is the end-to-end latency at a rate, and what Postgres did
// on its own during its window.
type latencyPoint struct {
	rate     float64
	p50, p99 time.Duration
	tail     tail
	maint    maintenance
}

func (b *bench) runAll(ctx context.Context) (*results, error) {
	res := &results{n: b.o.n, prefill: b.o.prefill, loadStart: loadavg()}
	if err := b.prefill(ctx, b.o.prefill); err != nil {
		return nil, err
	}
	rows := b.o.prefill
	pay := func(name string, workers int, lat time.Duration, conc int) (*line, error) {
		l := &line{name: name, kind: kindPaystream, pg: b.pgLabel, js: b.jsLabel, workers: workers, latency: lat, concurrency: conc, rows: rows}
		if err := b.throughput(ctx, l); err != nil {
			return nil, err
		}
		res.lines = append(res.lines, l)
		res.maxRSS = max(res.maxRSS, l.rssMB)
		rows += b.o.n
		return l, nil
	}
	baseline := func(name string, kind lineKind) (*line, error) {
		b.logf("%s: on the same %d messages", name, b.o.n)
		l := &line{name: name, kind: kind, pg: b.pgLabel, js: b.jsLabel, rows: rows}
		run := b.floor
		if kind == kindContractFloor {
			run = b.contractFloor
		}
		if err := run(ctx, l); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		res.lines = append(res.lines, l)
		rows += b.o.n
		b.logf("%s: %.0f payments/s, %.0f µs CPU per payment", name, l.perSec, l.cost.totalUS())
		return l, nil
	}
	floor := func(name string) (*line, error) { return baseline(name, kindFloor) }
	const contractFloorName = "contract floor: + attempt row, outcome event"
	var err error
	if res.headline, err = pay("paystream, 0ms gateway", 1, 0, b.o.concurrency); err != nil {
		return nil, err
	}
	// The baselines run on the messages the headline line consumed.
	for _, pull := range rawPulls {
		b.logf("raw fetch-and-ack, pulls of %d: the same %d messages", pull, b.o.n)
		l := &line{name: fmt.Sprintf("raw JetStream fetch-and-ack, pull %d", pull), kind: kindRaw, pg: "-", js: b.jsLabel, pull: pull}
		if err := b.raw(ctx, pull, l); err != nil {
			return nil, fmt.Errorf("raw: %w", err)
		}
		if pull == rawPulls[0] {
			res.raw256 = l
			res.lines = append(res.lines, l)
		}
		if res.rawBest == nil || l.perSec > res.rawBest.perSec {
			res.rawBest = l
		}
	}
	if res.rawBest != res.raw256 {
		res.rawBest.name += " (best)"
		res.lines = append(res.lines, res.rawBest)
	}
	if res.floor, err = floor("floor: fetch, INSERT, UPDATE, ack"); err != nil {
		return nil, err
	}
	if res.contractFloor, err = baseline(contractFloorName, kindContractFloor); err != nil {
		return nil, err
	}
	if res.defaults, err = pay("paystream, 0ms gateway, worker defaults", 1, 0, 0); err != nil {
		return nil, err
	}
	if b.o.tracing {
		l := &line{name: "paystream, 0ms gateway, tracing on", kind: kindPaystream, pg: b.pgLabel, js: b.jsLabel,
			workers: 1, concurrency: b.o.concurrency, rows: rows}
		if res.tracedSpans, res.tracedPosts, res.tracedB, err = b.tracingLine(ctx, l); err != nil {
			return nil, err
		}
		res.lines = append(res.lines, l)
		res.maxRSS = max(res.maxRSS, l.rssMB)
		rows += b.o.n
		res.traced = l
	}
	if res.slow, err = pay("paystream, 20ms gateway", 1, 20*time.Millisecond, b.o.concurrency2); err != nil {
		return nil, err
	}

	// JetStream syncing every write.
	if err := b.setNATSConfig(ctx, natsSyncAlways, jsAlways); err != nil {
		return nil, err
	}
	if res.syncAlways, err = pay("paystream, 0ms gateway", 1, 0, b.o.concurrency); err != nil {
		return nil, err
	}
	if _, err = floor("floor"); err != nil {
		return nil, err
	}
	if res.contractFloorAlways, err = baseline("contract floor", kindContractFloor); err != nil {
		return nil, err
	}
	if err := b.setNATSConfig(ctx, "", jsDefault); err != nil {
		return nil, err
	}

	if b.o.fsyncOff {
		if err := b.setPostgresDurable(ctx, false); err != nil {
			return nil, err
		}
		if _, err = pay("paystream, 0ms gateway", 1, 0, b.o.concurrency); err != nil {
			return nil, err
		}
		if _, err = floor("floor"); err != nil {
			return nil, err
		}
		if err := b.setPostgresDurable(ctx, true); err != nil {
			return nil, err
		}
	}
	if b.o.two {
		if _, err = pay("paystream, 0ms gateway, 2 workers", 2, 0, b.o.concurrency); err != nil {
			return nil, err
		}
		if _, err = pay("paystream, 20ms gateway, 2 workers", 2, 20*time.Millisecond, b.o.concurrency2); err != nil {
			return nil, err
		}
	}
	if res.half, err = b.latency(ctx, res.headline.perSec/2, 1, b.o.concurrency); err != nil {
		return nil, err
	}
	for _, rate := range b.o.latencyAt {
		pt, err := b.latency(ctx, rate, 1, b.o.concurrency)
		if err != nil {
			return nil, err
		}
		res.latencyPoints = append(res.latencyPoints, pt)
	}
	if res.directPerSec, res.relayPerSec, err = b.publishing(ctx); err != nil {
		return nil, fmt.Errorf("publishing: %w", err)
	}
	if b.o.grow > 0 {
		if err := b.prefill(ctx, b.o.grow); err != nil {
			return nil, err
		}
		rows = b.o.grow
		if res.grown, err = pay(fmt.Sprintf("paystream, 0ms gateway, %s rows", count(b.o.grow)), 1, 0, b.o.concurrency); err != nil {
			return nil, err
		}
		if res.grownFloor, err = floor(fmt.Sprintf("floor, %s rows", count(b.o.grow))); err != nil {
			return nil, err
		}
	}
	res.loadEnd = loadavg()
	return res, nil
}

// setNATSConfig restarts nats-server with a configuration and waits until
// this process's connection is back.
func (b *bench) setNATSConfig(ctx context.Context, text, label string) error {
	b.logf("restarting nats-server with JetStream sync %s", label)
	b.stack.SetNATSConfig(text)
	if err := b.stack.RestartNATS(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := b.js.AccountInfo(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("NATS not back after its restart: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Check that the server runs as labelled.
	var varz struct {
		JetStream struct {
			Config struct {
				SyncAlways bool `json:"sync_always"`
			} `json:"config"`
		} `json:"jetstream"`
	}
	if err := getJSON(ctx, b.stack.NATSMonitorURL()+"/varz", &varz); err != nil {
		return err
	}
	if varz.JetStream.Config.SyncAlways != (label == jsAlways) {
		return fmt.Errorf("nats-server: sync_always is %v, want it for %q", varz.JetStream.Config.SyncAlways, label)
	}
	b.jsLabel = label
	return nil
}

// getJSON decodes the JSON answer of a GET.
func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// setPostgresDurable turns fsync, synchronous_commit and full_page_writes
// off (ALTER SYSTEM and a reload; the throwaway cluster runs with them at
// the server's defaults) or back to the defaults.
func (b *bench) setPostgresDurable(ctx context.Context, durable bool) error {
	if b.stack.Postgres() == nil {
		return fmt.Errorf("-fsync-off needs the throwaway cluster, not -database-url")
	}
	want := "off"
	stmts := []string{`ALTER SYSTEM SET fsync = off`, `ALTER SYSTEM SET synchronous_commit = off`, `ALTER SYSTEM SET full_page_writes = off`}
	if durable {
		want = "on"
		stmts = []string{`ALTER SYSTEM RESET fsync`, `ALTER SYSTEM RESET synchronous_commit`, `ALTER SYSTEM RESET full_page_writes`}
	}
	b.logf("postgres: fsync, synchronous_commit, full_page_writes %s", want)
	for _, q := range append(stmts, `SELECT pg_reload_conf()`) {
		if _, err := b.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	// The reload is asynchronous; new sessions see it once the postmaster
	// has read the file.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var fsync string
		conn, err := b.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		err = conn.QueryRow(ctx, `SELECT current_setting('fsync')`).Scan(&fsync)
		conn.Release()
		if err != nil {
			return err
		}
		if fsync == want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres: fsync still %s after the reload", fsync)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Connections opened before keep their synchronous_commit only if they
	// SET it; ours did not. Reopen the pool anyway, to start clean.
	b.pool.Reset()
	if durable {
		b.pgLabel = pgDurable
	} else {
		b.pgLabel = pgFsyncOff
	}
	return nil
}

// stmtStat is one statement's share of a line, from pg_stat_statements.
type stmtStat struct {
	query                  string
	callsPerPay, msPerCall float64
	rowsPerCall, walPerPay float64
}

func (b *bench) resetStatements(ctx context.Context) error {
	if !b.statements {
		return nil
	}
	_, err := b.pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	return err
}

var spaces = regexp.MustCompile(`\s+`)

// topStatements returns the statements that took the most time since the
// last resetStatements, per payment of n.
func (b *bench) topStatements(ctx context.Context, n int) ([]stmtStat, error) {
	if !b.statements {
		return nil, nil
	}
	rows, err := b.pool.Query(ctx, `
		SELECT query, calls, total_exec_time / greatest(calls, 1), rows::float8 / greatest(calls, 1), wal_bytes::float8
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel
			AND query NOT LIKE '%pg\_stat%' AND query NOT LIKE '%pg_current_wal_lsn%'
		ORDER BY total_exec_time DESC LIMIT 8`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []stmtStat
	for rows.Next() {
		var s stmtStat
		var calls int64
		var wal float64
		if err := rows.Scan(&s.query, &calls, &s.msPerCall, &s.rowsPerCall, &wal); err != nil {
			return nil, err
		}
		s.query = spaces.ReplaceAllString(strings.TrimSpace(s.query), " ")
		if len(s.query) > 90 {
			s.query = s.query[:90] + "…"
		}
		s.callsPerPay = float64(calls) / float64(n)
		s.walPerPay = wal / float64(n)
		out = append(out, s)
	}
	return out, rows.Err()
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// count formats a row count: 10000000 → "10M".
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000 && n%1_000 == 0:
		return fmt.Sprintf("%dk", n/1_000)
	}
	return fmt.Sprint(n)
}

// floorOf returns the floor line with the same durability as l, if any.
func (r *results) floorOf(l *line) *line {
	if l.kind == kindFloor {
		return l
	}
	for _, f := range r.lines {
		if f.kind == kindFloor && f.pg == l.pg && f.js == l.js && (f == r.grownFloor) == (l == r.grown) {
			return f
		}
	}
	return nil
}

func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "\npaystream bench: %d payments per line; payments table prefilled with %d final rows; %d CPUs, load average %s at the start, %s at the end\n",
		r.n, r.prefill, runtime.NumCPU(), r.loadStart, r.loadEnd)
	fmt.Fprintf(w, "postgres: durable = fsync, synchronous_commit, full_page_writes on (the server's defaults); fsync=off = all three off\n")
	fmt.Fprintf(w, "jetstream: file store; default = sync_interval 2m (nats-server's default); always = sync_interval: always\n")
	fmt.Fprintf(w, "cpu µs/payment: worker process (raw and floor lines: the benchmark process, which runs them), nats-server, Postgres (all its processes)\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "line\tpostgres\tjetstream\tconcurrency\tpayments/s\tvs floor\tvs raw 256\tseconds\tworker µs\tnats µs\tpg µs\ttotal µs\tnats msgs\tWAL B\tcommits\tHOT %\tallocs\tpeak RSS MB\t")
	for _, l := range r.lines {
		conc := "-"
		switch {
		case l.kind == kindPaystream && l.concurrency == 0:
			conc = "default"
		case l.kind == kindPaystream:
			conc = fmt.Sprint(l.concurrency)
		}
		vsFloor := "-"
		if f := r.floorOf(l); f != nil && l.kind != kindRaw {
			vsFloor = fmt.Sprintf("%.2f", l.perSec/f.perSec)
		}
		pgUS, total, hot, rss := "-", "-", "-", "-"
		c := l.cost
		if c.pgOK {
			pgUS, total = fmt.Sprintf("%.0f", c.pgUS), fmt.Sprintf("%.0f", c.totalUS())
		}
		if c.hotPct >= 0 {
			hot = fmt.Sprintf("%.0f", c.hotPct)
		}
		if l.rssMB > 0 {
			rss = fmt.Sprintf("%.0f", l.rssMB)
		}
		commits, wal := fmt.Sprintf("%.3f", c.commits), fmt.Sprintf("%.0f", c.walBytes)
		if l.kind == kindRaw {
			commits, wal, pgUS, total = "-", "-", "-", fmt.Sprintf("%.0f", c.workerUS+c.natsUS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\t%s\t%.2f\t%.1f\t%.0f\t%.0f\t%s\t%s\t%.1f\t%s\t%s\t%s\t%.0f\t%s\t\n",
			l.name, l.pg, l.js, conc, l.perSec, vsFloor, l.perSec/r.raw256.perSec, l.elapsed.Seconds(),
			c.workerUS, c.natsUS, pgUS, total, c.natsMsgs, wal, commits, hot, c.allocs, rss)
	}
	_ = tw.Flush()
	for _, l := range r.lines {
		if len(l.stmts) == 0 {
			continue
		}
		fmt.Fprintf(w, "\npg_stat_statements, %s (postgres %s, jetstream %s), per payment:\n", l.name, l.pg, l.js)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  calls\tms/call\trows/call\tWAL B\tstatement")
		for _, s := range l.stmts {
			fmt.Fprintf(tw, "  %.4f\t%.3f\t%.1f\t%.0f\t%s\n", s.callsPerPay, s.msPerCall, s.rowsPerCall, s.walPerPay, s.query)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "\nend-to-end latency at %.0f payments/s (half the 1-worker maximum, durable): p50 %s ms, p99 %s ms\n  %s; Postgres meanwhile: %s\n",
		r.half.rate, ms(r.half.p50), ms(r.half.p99), r.half.tail, r.half.maint)
	for _, pt := range r.latencyPoints {
		fmt.Fprintf(w, "end-to-end latency at %.0f payments/s (-latency-at): p50 %s ms, p99 %s ms\n  %s; Postgres meanwhile: %s\n",
			pt.rate, ms(pt.p50), ms(pt.p99), pt.tail, pt.maint)
	}
	if r.grown != nil {
		fmt.Fprintf(w, "growth: with %s rows in the table, paystream %.0f/s (%.2f of the figure at %s rows), floor %.0f/s (%.2f)\n",
			count(r.grown.rows), r.grown.perSec, r.grown.perSec/r.headline.perSec, count(r.prefill),
			r.grownFloor.perSec, r.grownFloor.perSec/r.floor.perSec)
	}
	if t := r.traced; t != nil {
		fmt.Fprintf(w, "tracing: 0 ms line with every span exported over OTLP/HTTP %.0f/s, %.2f of the tracing-off headline (%.0f/s); worker %.0f µs CPU per payment (off: %.0f); %.1f spans and %.0f bytes of OTLP per payment in %d export requests\n",
			t.perSec, t.perSec/r.headline.perSec, r.headline.perSec, t.cost.workerUS, r.headline.cost.workerUS,
			float64(r.tracedSpans)/float64(r.n), float64(r.tracedB)/float64(r.n), r.tracedPosts)
	}
	h := r.headline
	fmt.Fprintf(w, "contract floor (the floor plus the attempt row and the outcome event every payment must leave): %.0f/s, %.0f µs; paystream %.2f of it",
		r.contractFloor.perSec, r.contractFloor.cost.totalUS(), h.perSec/r.contractFloor.perSec)
	if a := r.contractFloorAlways; a != nil && r.syncAlways != nil {
		fmt.Fprintf(w, "; with sync always %.0f/s, %.0f µs; paystream %.2f of it", a.perSec, a.cost.totalUS(), r.syncAlways.perSec/a.perSec)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "publishing %d requests into the stream, no workers: direct %.0f/s, outbox relay %.0f/s (%.2f of direct)\n\n",
		r.n, r.directPerSec, r.relayPerSec, r.relayPerSec/r.directPerSec)
	fmt.Fprintf(w, "bench payments_per_s=%.0f floor_per_s=%.0f ratio_floor=%.2f cpu_us_per_payment=%.0f p99_ms=%s",
		h.perSec, r.floor.perSec, h.perSec/r.floor.perSec, h.cost.totalUS(), ms(r.half.p99))
	fmt.Fprintf(w, " raw_per_s=%.0f ratio_raw=%.2f raw_best_per_s=%.0f raw_best_pull=%d wal_bytes_per_payment=%.0f commits_per_payment=%.3f allocs_per_payment=%.0f nats_msgs_per_payment=%.1f",
		r.raw256.perSec, h.perSec/r.raw256.perSec, r.rawBest.perSec, r.rawBest.pull, h.cost.walBytes, h.cost.commits, h.cost.allocs, h.cost.natsMsgs)
	fmt.Fprintf(w, " payments_per_s_defaults=%.0f payments_per_s_20ms=%.0f payments_per_s_sync_always=%.0f rss_mb=%.0f publish_per_s=%.0f outbox_relay_per_s=%.0f",
		r.defaults.perSec, r.slow.perSec, r.syncAlways.perSec, r.maxRSS, r.directPerSec, r.relayPerSec)
	fmt.Fprintf(w, " contract_floor_per_s=%.0f ratio_contract_floor=%.2f contract_floor_cpu_us=%.0f",
		r.contractFloor.perSec, h.perSec/r.contractFloor.perSec, r.contractFloor.cost.totalUS())
	checkpoints, vacuumPct := float64(r.half.maint.checkpoints), r.half.maint.vacuumPct()
	if r.half.maint.err != nil {
		checkpoints, vacuumPct = -1, -1 // unknown
	} else if r.half.maint.hidden {
		vacuumPct = -1
	}
	fmt.Fprintf(w, " p99_burst=%.2f p99_checkpoints=%.0f p99_autovacuum_pct=%.0f", r.half.tail.burst, checkpoints, vacuumPct)
	if r.traced != nil {
		fmt.Fprintf(w, " payments_per_s_tracing=%.0f ratio_tracing=%.2f spans_per_payment=%.1f",
			r.traced.perSec, r.traced.perSec/h.perSec, float64(r.tracedSpans)/float64(r.n))
	}
	if r.grown != nil {
		fmt.Fprintf(w, " payments_per_s_grown=%.0f grown_rows=%d", r.grown.perSec, r.grown.rows)
	}
	fmt.Fprintln(w)
}
