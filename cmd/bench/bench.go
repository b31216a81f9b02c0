package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/paystream/paystream/consumer"
	"github.com/paystream/paystream/internal/testenv/defaults"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/payment"
)

// Durability labels of the table's lines.
const (
	pgDurable  = "durable"
	pgFsyncOff = "fsync=off"
	jsDefault  = "default"
	jsAlways   = "always"
)

// natsSyncAlways is the nats-server configuration of the sync-always lines:
// JetStream's file store syncs every write, as docker-compose.yml runs it.
const natsSyncAlways = "jetstream { sync_interval: always }"

type bench struct {
	o     options
	log   io.Writer
	stack *localstack.Stack
	nc    *nats.Conn
	js    jetstream.JetStream
	pool  *pgxpool.Pool
	ccfg  consumer.Config
	round int
	// floorRound numbers the floor's runs, for their key prefixes.
	floorRound int
	// pgLabel and jsLabel are the current durability labels.
	pgLabel, jsLabel string
	// statements: pg_stat_statements is installed.
	statements bool
	// profiled: the -profile line has run.
	profiled bool
}

func newBench(ctx context.Context, o options, log io.Writer) (_ *bench, err error) {
	b := &bench{o: o, log: log, ccfg: defaults.Consumer().WithDefaults(), pgLabel: pgDurable, jsLabel: jsDefault}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	b.logf("starting NATS and Postgres (fsync, synchronous_commit, full_page_writes on)")
	cfg := localstack.Config{BinDir: o.binDir, DatabaseURL: o.databaseURL, Log: io.Discard, PostgresDurable: true}
	if o.statements {
		cfg.PostgresSettings = []string{"shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all"}
	}
	if b.stack, err = localstack.Start(ctx, cfg); err != nil {
		return nil, fmt.Errorf("start stack: %w", err)
	}
	if b.nc, err = nats.Connect(b.stack.NATSURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if b.js, err = jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(b.stack.DatabaseURL())
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = benchAppName
	if b.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	var fsync, syncCommit, fpw string
	if err := b.pool.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit'),
		current_setting('full_page_writes')`).Scan(&fsync, &syncCommit, &fpw); err != nil {
		return nil, err
	}
	if fsync != "on" || syncCommit != "on" || fpw != "on" {
		// An external database (-database-url) runs as it is configured.
		b.pgLabel = fmt.Sprintf("fsync=%s,synchronous_commit=%s,full_page_writes=%s", fsync, syncCommit, fpw)
	}
	if o.statements {
		if _, err := b.pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			return nil, fmt.Errorf("pg_stat_statements: %w", err)
		}
		b.statements = true
	}
	return b, nil
}

func (b *bench) close() {
	if b.pool != nil {
		b.pool.Close()
	}
	if b.nc != nil {
		b.nc.Close()
	}
	if b.stack != nil {
		_ = b.stack.Close()
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// prefill inserts final rows with generate_series until the table holds at
// least n of them (setting up, not measured: its transactions commit
// asynchronously), then vacuums, analyzes and checkpoints, so that the
// lines start from a clean table and a fresh checkpoint.
func (b *bench) prefill(ctx context.Context, n int) error {
	var have int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM payments`).Scan(&have); err != nil {
		return fmt.Errorf("count rows: %w", err)
	}
	if have >= n {
		return nil
	}
	b.logf("prefilling %d final rows", n-have)
	start := time.Now()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `RESET synchronous_commit`) //nolint:errcheck // the connection goes back to the pool either way
	const chunk = 1_000_000
	for from := have; from < n; from += chunk {
		to := min(from+chunk, n)
		_, err := conn.Exec(ctx, `
			INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor, currency, status,
				attempts, gateway, gateway_charge_id, fingerprint, created_at, updated_at, completed_at)
			SELECT 'prefill-' || g, 'prefill-' || g, 'm' || (g % 50), 100 + g % 100000, 'EUR', 'succeeded',
				1, 'fake', 'ch_prefill_' || g, md5(g::text), now(), now(), now()
			FROM generate_series($1::bigint, $2::bigint - 1) g
			ON CONFLICT DO NOTHING`, from, to)
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
		b.logf("prefill: %d rows", to)
	}
	for _, q := range []string{`VACUUM ANALYZE payments`, `CHECKPOINT`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("prefill: %s: %w", q, err)
		}
	}
	b.logf("prefill: done in %s", time.Since(start).Round(time.Second))
	return nil
}

// resetStream empties the requests stream and recreates the consumer, so
// that each line starts from nothing pending.
func (b *bench) resetStream(ctx context.Context) error {
	if err := consumer.Provision(ctx, b.js, b.ccfg); err != nil {
		return err
	}
	_ = b.js.DeleteConsumer(ctx, b.ccfg.Stream, b.ccfg.Consumer)
	s, err := b.js.Stream(ctx, b.ccfg.Stream)
	if err != nil {
		return err
	}
	if err := s.Purge(ctx); err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	return consumer.Provision(ctx, b.js, b.ccfg)
}

// request returns the i-th payment of a round.
func (b *bench) request(i int) *payment.Request {
	return &payment.Request{
		PaymentID:     fmt.Sprintf("r%d-%d", b.round, i),
		MerchantID:    fmt.Sprintf("m%02d", i%20),
		CustomerID:    fmt.Sprintf("c%d", i%5000),
		AmountMinor:   int64(1000 + (i*10)%90000), // never ends in 13: no declines
		Currency:      "EUR",
		PaymentMethod: "pm_card_visa",
		Description:   "bench order",
	}
}

// publish publishes n payments of a new round as fast as possible.
func (b *bench) publish(ctx context.Context, n int) error {
	b.round++
	for i := range n {
		r := b.request(i)
		body, err := r.Marshal()
		if err != nil {
			return err
		}
		m := nats.NewMsg(b.ccfg.SubjectPrefix + ".requests." + r.MerchantID)
		m.Header.Set(jetstream.MsgIDHeader, r.PaymentID)
		m.Data = body
		if _, err := b.js.PublishMsgAsync(m, stallWait); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	if e := b.js.PublishAsyncPending(); e != 0 {
		return fmt.Errorf("%d publishes unacknowledged", e)
	}
	return nil
}

// waitSettled polls the consumer until every message is acked.
func (b *bench) waitSettled(ctx context.Context, timeout time.Duration) (time.Time, error) {
	c, err := b.js.Consumer(ctx, b.ccfg.Stream, b.ccfg.Consumer)
	if err != nil {
		return time.Time{}, err
	}
	if err := waitConsumerSettled(ctx, c, timeout); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// lineKind tells what a line measured.
type lineKind int

const (
	kindPaystream lineKind = iota
	kindRaw
	kindFloor
	kindContractFloor
)

// line is one row of the table.
type line struct {
	name   string
	kind   lineKind
	pg, js string // durability labels
	// paystream lines
	workers     int
	latency     time.Duration
	concurrency int // 0: the worker's default
	rssMB       float64
	pull        int // raw lines
	// variant is the A/B comparison's side the line runs (-ab-bin,
	// -ab-env); nil outside it.
	variant *variant
	// results
	perSec  float64
	elapsed time.Duration
	cost    *cost
	stmts   []stmtStat
	rows    int // final rows in payments before the line
	// env is added to the workers' environment (the tracing line's OTEL_*).
	env map[string]string
}

func (b *bench) workerEnv(l *line, i int) map[string]string {
	env := map[string]string{
		"PAYSTREAM_GATEWAY_URL":  "fake",
		"PAYSTREAM_FAKE_LATENCY": l.latency.String(),
		"PAYSTREAM_LOG_LEVEL":    "warn",
		"PAYSTREAM_WORKER_ID":    fmt.Sprintf("bench-%d", i),
		"PAYSTREAM_PPROF":        fmt.Sprint(b.o.profile != ""),
	}
	// Tracing is off unless the line turns it on: an OTEL_* variable of
	// the shell running the benchmark must not turn it on for every line.
	env["OTEL_SDK_DISABLED"] = "true"
	if l.env != nil {
		delete(env, "OTEL_SDK_DISABLED")
		maps.Copy(env, l.env)
	}
	if l.concurrency > 0 {
		env["PAYSTREAM_CONCURRENCY"] = fmt.Sprint(l.concurrency)
		if b.o.batchSize > 0 {
			env["PAYSTREAM_BATCH_SIZE"] = fmt.Sprint(b.o.batchSize)
		}
	}
	if l.variant != nil {
		maps.Copy(env, l.variant.env)
	}
	return env
}

// throughput publishes N payments, starts the workers and times them from
// the first claim to the last ack. The cost counters of nats-server and
// Postgres are read before the workers start (so they include the
// workers' connecting) and when the consumer has settled; the workers'
// CPU time and allocations from when they answer /healthz to then.
func (b *bench) throughput(ctx context.Context, l *line) error {
	if err := b.resetStream(ctx); err != nil {
		return err
	}
	if err := b.publish(ctx, b.o.n); err != nil {
		return err
	}
	prefix := fmt.Sprintf("r%d-%%", b.round)
	b.logf("%s: %d payments published; starting %d worker(s)", l.name, b.o.n, l.workers)
	if err := b.resetStatements(ctx); err != nil {
		return err
	}
	from, err := b.snapshot(ctx, nil)
	if err != nil {
		return err
	}
	from.worker, from.mallocs = 0, 0
	procs := make([]*localstack.Process, l.workers)
	for i := range procs {
		bin := ""
		if l.variant != nil {
			bin = l.variant.bin
		}
		p, err := b.stack.StartWorkerFrom(ctx, fmt.Sprintf("bench-%d-%d", b.round, i), bin, b.workerEnv(l, i))
		if err != nil {
			return err
		}
		procs[i] = p
		t, err := procCPU(p.PID(), false)
		if err != nil {
			return err
		}
		m, err := scrapeMallocs(ctx, p.HTTPAddr())
		if err != nil {
			return err
		}
		from.worker += t
		from.mallocs += m
	}
	defer stopAll(procs)
	var profiling sync.WaitGroup
	if b.o.profile != "" && !b.profiled && strings.Contains(l.name, b.o.profileLine) {
		b.profiled = true
		profiling.Go(func() {
			if err := saveProfile(ctx, procs[0].HTTPAddr(), b.o.profile, b.o.profileSeconds); err != nil {
				b.logf("profile: %v", err)
			}
		})
	}
	end, err := b.waitSettled(ctx, 10*time.Minute)
	profiling.Wait()
	if err != nil {
		return fmt.Errorf("%s: %w", l.name, err)
	}
	to, err := b.snapshot(ctx, procs)
	if err != nil {
		return err
	}
	if l.stmts, err = b.topStatements(ctx, b.o.n); err != nil {
		return err
	}
	for _, p := range procs {
		if rss, err := p.PeakRSS(); err == nil {
			l.rssMB = max(l.rssMB, float64(rss)/(1<<20))
		}
	}
	stopAll(procs)
	if err := b.waitBackendsGone(ctx); err != nil {
		return err
	}
	if err := b.statCounters(ctx, &to); err != nil {
		return err
	}
	var first time.Time
	var final int
	if err := b.pool.QueryRow(ctx, `SELECT min(created_at), count(*) FILTER (WHERE status <> 'processing')
		FROM payments WHERE idempotency_key LIKE $1`, prefix).Scan(&first, &final); err != nil {
		return err
	}
	if final != b.o.n {
		return fmt.Errorf("%s: %d final rows, want %d", l.name, final, b.o.n)
	}
	l.elapsed = end.Sub(first)
	l.perSec = float64(b.o.n) / l.elapsed.Seconds()
	if l.cost, err = b.costOf(ctx, from, to, b.o.n); err != nil {
		return err
	}
	b.logf("%s: %.0f payments/s, %.0f µs CPU per payment, peak RSS %.0f MB", l.name, l.perSec, l.cost.totalUS(), l.rssMB)
	return nil
}

func stopAll(procs []*localstack.Process) {
	var wg sync.WaitGroup
	for _, p := range procs {
		if p == nil || p.Exited() {
			continue
		}
		wg.Go(func() {
			_ = p.Signal(syscall.SIGTERM)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := p.Wait(ctx); err != nil {
				_ = p.Kill()
			}
		})
	}
	wg.Wait()
}

// maintenanceEvery is how often a latency window looks for Postgres's
// checkpoints and autovacuum workers.
const maintenanceEvery = 100 * time.Millisecond

// latency publishes at a fixed rate with the workers running and measures
// publish → outcome event, and what Postgres did on its own meanwhile.
func (b *bench) latency(ctx context.Context, perSec float64, workers int, conc int) (pt latencyPoint, err error) {
	pt.rate = perSec
	if err := b.resetStream(ctx); err != nil {
		return pt, err
	}
	b.round++
	n := min(b.o.n, int(perSec*10)) // about ten seconds of load
	var mu sync.Mutex
	stamps := make(map[string]*stamp, n)
	done := make(chan struct{})
	received := 0
	sub, err := b.nc.Subscribe(b.ccfg.SubjectPrefix+".results.>", func(m *nats.Msg) {
		var o payment.Outcome
		if json.Unmarshal(m.Data, &o) != nil {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if st, ok := stamps[o.IdempotencyKey]; ok && st.got.IsZero() {
			st.got, st.completed = now, o.CompletedAt
			received++
			if received == n {
				close(done)
			}
		}
	})
	if err != nil {
		return pt, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	procs := make([]*localstack.Process, workers)
	l := &line{concurrency: conc}
	for i := range procs {
		if procs[i], err = b.stack.StartWorker(ctx, fmt.Sprintf("bench-lat-%d-%d", b.round, i), b.workerEnv(l, i)); err != nil {
			return pt, err
		}
	}
	defer stopAll(procs)
	for _, p := range procs {
		if err := waitReady(ctx, p.HTTPAddr()); err != nil {
			return pt, err
		}
	}
	// The first second warms the workers up (connections, caches) and is
	// not counted.
	warm := int(perSec)
	b.logf("latency: publishing %d payments at %.0f/s (the first %d warm up)", n+warm, perSec, warm)
	lim := rate.NewLimiter(rate.Limit(perSec), max(1, int(perSec/100)))
	// Postgres's own maintenance during the counted payments, from the
	// first sent to the last outcome received.
	var watch *maintenanceWatcher
	defer func() {
		if watch != nil {
			watch.abort()
		}
	}()
	for i := range n + warm {
		if err := lim.Wait(ctx); err != nil {
			return pt, err
		}
		if i == warm {
			// The watcher only explains the tail: when it cannot start,
			// the line says why and the benchmark goes on.
			if watch, err = watchMaintenance(ctx, b.pool, maintenanceEvery); err != nil {
				pt.maint.err = err
			}
		}
		r := b.request(i)
		body, _ := r.Marshal()
		m := nats.NewMsg(b.ccfg.SubjectPrefix + ".requests." + r.MerchantID)
		m.Header.Set(jetstream.MsgIDHeader, r.PaymentID)
		m.Data = body
		if i >= warm {
			mu.Lock()
			stamps[r.PaymentID] = &stamp{sent: time.Now()}
			mu.Unlock()
		}
		if _, err := b.js.PublishMsgAsync(m, stallWait); err != nil {
			return pt, err
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		return pt, fmt.Errorf("latency: %d of %d outcomes after 2m", received, n)
	case <-ctx.Done():
		return pt, ctx.Err()
	}
	if w := watch; w != nil {
		watch = nil
		if pt.maint, err = w.stop(ctx); err != nil {
			pt.maint = maintenance{err: err}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	all := make([]stamp, 0, len(stamps))
	for _, st := range stamps {
		all = append(all, *st)
	}
	pt.p50, pt.p99, pt.tail = latencies(all)
	return pt, nil
}

// stamp is one counted payment of a latency window: when it was published,
// when the row was completed (the outcome event's completed_at: Postgres's
// clock_timestamp() in the completing statement, before its commit; the
// same host's clock as the benchmark's, which an external -database-url
// need not share) and when its outcome event arrived.
type stamp struct{ sent, completed, got time.Time }

// tail describes the slowest 1 % of a latency window's payments.
type tail struct {
	n int // how many
	// burst is the share of them published within the 250 ms in which
	// most of them were: near 1, one stall made the tail; near 0, it is
	// spread over the window.
	burst float64
	// toCompleted and toOutcome are their medians from publishing to the
	// row's completion (fetch, claim and its commit, gateway, the
	// completing statement) and from there to the outcome event's arrival
	// (the completion's commit, publish, ack, delivery).
	toCompleted, toOutcome time.Duration
}

// burstWindow is the span within which tail.burst counts the slowest
// payments' publishing.
const burstWindow = 250 * time.Millisecond

// latencies returns the median and 99th percentile of sent → got, and the
// tail from the 99th percentile up.
func latencies(stamps []stamp) (p50, p99 time.Duration, t tail) {
	if len(stamps) == 0 {
		return 0, 0, t
	}
	slices.SortFunc(stamps, func(a, b stamp) int { return cmp.Compare(a.got.Sub(a.sent), b.got.Sub(b.sent)) })
	p50 = stamps[len(stamps)/2].got.Sub(stamps[len(stamps)/2].sent)
	i99 := len(stamps) * 99 / 100
	p99 = stamps[i99].got.Sub(stamps[i99].sent)
	slow := slices.Clone(stamps[i99:])
	t.n = len(slow)
	toCompleted := make([]time.Duration, len(slow))
	toOutcome := make([]time.Duration, len(slow))
	for i, st := range slow {
		toCompleted[i], toOutcome[i] = st.completed.Sub(st.sent), st.got.Sub(st.completed)
	}
	slices.Sort(toCompleted)
	slices.Sort(toOutcome)
	t.toCompleted, t.toOutcome = toCompleted[len(slow)/2], toOutcome[len(slow)/2]
	// The densest burstWindow of their publishing times: slide a window
	// over them in order.
	slices.SortFunc(slow, func(a, b stamp) int { return a.sent.Compare(b.sent) })
	most := 0
	for lo, hi := 0, 0; hi < len(slow); hi++ {
		for slow[hi].sent.Sub(slow[lo].sent) >= burstWindow {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	t.burst = float64(most) / float64(len(slow))
	return p50, p99, t
}

// String is the tail for the latency line.
func (t tail) String() string {
	return fmt.Sprintf("the slowest 1 %% (%d): %.0f %% published within one %s, median %s ms to the row's completion (before its commit) and %s ms from there to the outcome event",
		t.n, 100*t.burst, burstWindow, ms(t.toCompleted), ms(t.toOutcome))
}

// waitReady polls a worker's /readyz until it answers 200.
func waitReady(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("worker at %s not ready after 30s", addr)
}

// saveProfile writes a CPU profile of the worker at addr to path, and
// then the worker's allocations since it started (the allocs profile) to
// path+".allocs".
func saveProfile(ctx context.Context, addr, path string, seconds int) error {
	if err := waitReady(ctx, addr); err != nil {
		return err
	}
	if err := fetchProfile(ctx, "http://"+addr+"/debug/pprof/profile?seconds="+strconv.Itoa(seconds), path); err != nil {
		return err
	}
	return fetchProfile(ctx, "http://"+addr+"/debug/pprof/allocs", path+".allocs")
}

// fetchProfile saves the profile at url to path.
func fetchProfile(ctx context.Context, url, path string) error {
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
		return fmt.Errorf("profile %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// stallWait lets an async publish wait for a free slot (4,096 in flight)
// as long as a slow server needs: with sync_interval: always every write
// is synced, and the default 200 ms is not enough.
var stallWait = jetstream.WithStallWait(time.Minute)
