package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
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

type bench struct {
	o     options
	log   io.Writer
	stack *localstack.Stack
	nc    *nats.Conn
	js    jetstream.JetStream
	pool  *pgxpool.Pool
	ccfg  consumer.Config
	round int
}

func newBench(ctx context.Context, o options, log io.Writer) (_ *bench, err error) {
	b := &bench{o: o, log: log, ccfg: defaults.Consumer().WithDefaults()}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	b.logf("starting NATS and Postgres")
	if b.stack, err = localstack.Start(ctx, localstack.Config{BinDir: o.binDir, DatabaseURL: o.databaseURL, Log: io.Discard}); err != nil {
		return nil, fmt.Errorf("start stack: %w", err)
	}
	if b.nc, err = nats.Connect(b.stack.NATSURL()); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if b.js, err = jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(4096)); err != nil {
		return nil, err
	}
	if b.pool, err = pgxpool.New(ctx, b.stack.DatabaseURL()); err != nil {
		return nil, fmt.Errorf("database: %w", err)
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

// prefill inserts final rows until the table holds at least n of them.
func (b *bench) prefill(ctx context.Context, n int) error {
	var have int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM payments`).Scan(&have); err != nil {
		return fmt.Errorf("count rows: %w", err)
	}
	if have >= n {
		return nil
	}
	b.logf("prefilling %d final rows", n-have)
	const chunk = 200_000
	for from := have; from < n; from += chunk {
		to := min(from+chunk, n)
		_, err := b.pool.Exec(ctx, `
			INSERT INTO payments (idempotency_key, payment_id, merchant_id, amount_minor, currency, status,
				attempts, gateway, gateway_charge_id, fingerprint, created_at, updated_at, completed_at)
			SELECT 'prefill-' || g, 'prefill-' || g, 'm' || (g % 50), 100 + g % 100000, 'EUR', 'succeeded',
				1, 'fake', 'ch_prefill_' || g, md5(g::text), now(), now(), now()
			FROM generate_series($1::bigint, $2::bigint - 1) g
			ON CONFLICT DO NOTHING`, from, to)
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
	}
	_, err := b.pool.Exec(ctx, `VACUUM ANALYZE payments`)
	return err
}

// resetStream empties the requests stream and recreates the consumer, so
// that each scenario starts from nothing pending.
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
		if _, err := b.js.PublishMsgAsync(m); err != nil {
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
	deadline := time.Now().Add(timeout)
	c, err := b.js.Consumer(ctx, b.ccfg.Stream, b.ccfg.Consumer)
	if err != nil {
		return time.Time{}, err
	}
	for {
		info, err := c.Info(ctx)
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("not settled after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// scenario is one throughput measurement.
type scenario struct {
	name        string
	workers     int
	latency     time.Duration
	concurrency int
	perSec      float64
	rssMB       float64
	elapsed     time.Duration
}

func (b *bench) workerEnv(s *scenario, i int) map[string]string {
	env := map[string]string{
		"PAYSTREAM_GATEWAY_URL":  "fake",
		"PAYSTREAM_FAKE_LATENCY": s.latency.String(),
		"PAYSTREAM_CONCURRENCY":  fmt.Sprint(s.concurrency),
		"PAYSTREAM_LOG_LEVEL":    "warn",
		"PAYSTREAM_WORKER_ID":    fmt.Sprintf("bench-%d", i),
		"PAYSTREAM_PPROF":        fmt.Sprint(b.o.profile != ""),
	}
	if b.o.batchSize > 0 {
		env["PAYSTREAM_BATCH_SIZE"] = fmt.Sprint(b.o.batchSize)
	}
	return env
}

// throughput publishes N payments, starts the workers and times them from
// the first claim to the last ack.
func (b *bench) throughput(ctx context.Context, s *scenario) error {
	if err := b.resetStream(ctx); err != nil {
		return err
	}
	if err := b.publish(ctx, b.o.n); err != nil {
		return err
	}
	prefix := fmt.Sprintf("r%d-%%", b.round)
	b.logf("%s: %d payments published; starting %d worker(s)", s.name, b.o.n, s.workers)
	procs := make([]*localstack.Process, s.workers)
	for i := range procs {
		p, err := b.stack.StartWorker(ctx, fmt.Sprintf("bench-%d-%d", b.round, i), b.workerEnv(s, i))
		if err != nil {
			return err
		}
		procs[i] = p
	}
	defer stopAll(procs)
	var profiling sync.WaitGroup
	if b.o.profile != "" && b.round == 1 {
		profiling.Go(func() {
			if err := saveProfile(ctx, procs[0].HTTPAddr(), b.o.profile); err != nil {
				b.logf("profile: %v", err)
			}
		})
	}
	end, err := b.waitSettled(ctx, 10*time.Minute)
	profiling.Wait()
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	var first time.Time
	var final int
	if err := b.pool.QueryRow(ctx, `SELECT min(created_at), count(*) FILTER (WHERE status <> 'processing')
		FROM payments WHERE idempotency_key LIKE $1`, prefix).Scan(&first, &final); err != nil {
		return err
	}
	if final != b.o.n {
		return fmt.Errorf("%s: %d final rows, want %d", s.name, final, b.o.n)
	}
	s.elapsed = end.Sub(first)
	s.perSec = float64(b.o.n) / s.elapsed.Seconds()
	for _, p := range procs {
		if rss, err := p.PeakRSS(); err == nil {
			s.rssMB = max(s.rssMB, float64(rss)/(1<<20))
		}
	}
	b.logf("%s: %.0f payments/s, peak RSS %.0f MB", s.name, s.perSec, s.rssMB)
	return nil
}

func stopAll(procs []*localstack.Process) {
	var wg sync.WaitGroup
	for _, p := range procs {
		if p == nil {
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

// baseline fetches and acks every message of the requests stream with a
// fresh durable consumer, doing nothing else.
func (b *bench) baseline(ctx context.Context) (float64, error) {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.ccfg.Stream, jetstream.ConsumerConfig{
		Durable: "bench-baseline", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20_000,
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = b.js.DeleteConsumer(context.WithoutCancel(ctx), b.ccfg.Stream, "bench-baseline") }()
	start := time.Now()
	got := 0
	for got < b.o.n {
		// Pull batches as large as the worker's largest (consumer.Config.MaxFetch).
		batch, err := cons.Fetch(b.ccfg.MaxFetch, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return 0, err
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				return 0, err
			}
			got++
		}
		if err := batch.Error(); err != nil && got < b.o.n {
			return 0, err
		}
	}
	// Done when the server has processed every ack, as for paystream.
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, err
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return float64(got) / time.Since(start).Seconds(), nil
}

// latency publishes at a fixed rate with the workers running and measures
// publish → outcome event.
func (b *bench) latency(ctx context.Context, perSec float64, workers int, conc int) (p50, p99 time.Duration, err error) {
	if err := b.resetStream(ctx); err != nil {
		return 0, 0, err
	}
	b.round++
	n := min(b.o.n, int(perSec*10)) // about ten seconds of load
	type stamp struct{ sent, got time.Time }
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
			st.got = now
			received++
			if received == n {
				close(done)
			}
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	sub.SetPendingLimits(-1, -1)

	procs := make([]*localstack.Process, workers)
	s := &scenario{latency: 0, concurrency: conc}
	for i := range procs {
		if procs[i], err = b.stack.StartWorker(ctx, fmt.Sprintf("bench-lat-%d-%d", b.round, i), b.workerEnv(s, i)); err != nil {
			return 0, 0, err
		}
	}
	defer stopAll(procs)
	for _, p := range procs {
		if err := waitReady(ctx, p.HTTPAddr()); err != nil {
			return 0, 0, err
		}
	}
	// The first second warms the workers up (connections, caches) and is
	// not counted.
	warm := int(perSec)
	b.logf("latency: publishing %d payments at %.0f/s (the first %d warm up)", n+warm, perSec, warm)
	lim := rate.NewLimiter(rate.Limit(perSec), max(1, int(perSec/100)))
	for i := range n + warm {
		if err := lim.Wait(ctx); err != nil {
			return 0, 0, err
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
		if _, err := b.js.PublishMsgAsync(m); err != nil {
			return 0, 0, err
		}
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		return 0, 0, fmt.Errorf("latency: %d of %d outcomes after 2m", received, n)
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	lat := make([]time.Duration, 0, n)
	for _, st := range stamps {
		lat = append(lat, st.got.Sub(st.sent))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}

type results struct {
	n          int
	prefill    int
	scenarios  []*scenario
	baseline   float64
	p50, p99   time.Duration
	latencyAt  float64
	maxRSS     float64
	headline   *scenario
	headline20 *scenario
	// directPerSec and relayPerSec are requests per second into the
	// stream, published directly and relayed from the outbox.
	directPerSec, relayPerSec float64
}

func (b *bench) runAll(ctx context.Context) (*results, error) {
	if err := b.prefill(ctx, b.o.prefill); err != nil {
		return nil, err
	}
	res := &results{n: b.o.n, prefill: b.o.prefill}
	add := func(name string, workers int, lat time.Duration, conc int) (*scenario, error) {
		s := &scenario{name: name, workers: workers, latency: lat, concurrency: conc}
		if err := b.throughput(ctx, s); err != nil {
			return nil, err
		}
		res.scenarios = append(res.scenarios, s)
		res.maxRSS = max(res.maxRSS, s.rssMB)
		return s, nil
	}
	var err error
	if res.headline, err = add("0ms gateway, 1 worker", 1, 0, b.o.concurrency); err != nil {
		return nil, err
	}
	b.logf("baseline: raw fetch-and-ack of the same %d messages", b.o.n)
	if res.baseline, err = b.baseline(ctx); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if !b.o.skipTwo {
		if _, err = add("0ms gateway, 2 workers", 2, 0, b.o.concurrency); err != nil {
			return nil, err
		}
	}
	if res.headline20, err = add("20ms gateway, 1 worker", 1, 20*time.Millisecond, b.o.concurrency2); err != nil {
		return nil, err
	}
	if !b.o.skipTwo {
		if _, err = add("20ms gateway, 2 workers", 2, 20*time.Millisecond, b.o.concurrency2); err != nil {
			return nil, err
		}
	}
	res.latencyAt = res.headline.perSec / 2
	if res.p50, res.p99, err = b.latency(ctx, res.latencyAt, 1, b.o.concurrency); err != nil {
		return nil, err
	}
	if res.directPerSec, res.relayPerSec, err = b.publishing(ctx); err != nil {
		return nil, fmt.Errorf("publishing: %w", err)
	}
	return res, nil
}

func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "\npaystream bench: %d payments per scenario, payments table prefilled with %d final rows\n\n", r.n, r.prefill)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconcurrency\tpayments/s\tvs baseline\tseconds\tpeak RSS MB\t")
	for _, s := range r.scenarios {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.1f\t%.0f\t\n", s.name, s.concurrency, s.perSec, s.perSec/r.baseline,
			s.elapsed.Seconds(), s.rssMB)
	}
	fmt.Fprintf(tw, "raw JetStream fetch-and-ack (baseline)\t-\t%.0f\t1.00\t-\t-\t\n", r.baseline)
	_ = tw.Flush()
	fmt.Fprintf(w, "\nend-to-end latency at %.0f payments/s (half the 1-worker maximum): p50 %s ms, p99 %s ms\n\n",
		r.latencyAt, ms(r.p50), ms(r.p99))
	fmt.Fprintf(w, "publishing %d requests into the stream, no workers: direct %.0f/s, outbox relay %.0f/s (%.2f of direct)\n\n",
		r.n, r.directPerSec, r.relayPerSec, r.relayPerSec/r.directPerSec)
	fmt.Fprintf(w, "bench payments_per_s=%.0f baseline_per_s=%.0f ratio=%.2f p99_ms=%s rss_mb=%.0f%s publish_per_s=%.0f outbox_relay_per_s=%.0f\n",
		r.headline.perSec, r.baseline, r.headline.perSec/r.baseline, ms(r.p99), r.maxRSS, slow(r), r.directPerSec, r.relayPerSec)
}

func slow(r *results) string {
	if r.headline20 == nil {
		return ""
	}
	return strings.TrimRight(fmt.Sprintf(" payments_per_s_20ms=%.0f", r.headline20.perSec), " ")
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

// saveProfile writes a 2s CPU profile of the worker at addr to path.
func saveProfile(ctx context.Context, addr, path string) error {
	if err := waitReady(ctx, addr); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/profile?seconds=2", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
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
