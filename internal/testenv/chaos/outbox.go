package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/testenv/localstack"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish/outbox"
)

// OutboxConfig configures RunOutbox, the transactional outbox's scenario:
// an upstream service enqueues payment requests inside its own transactions
// (some rolled back) while the relay processes that move them to JetStream
// are killed with SIGKILL and restarted.
type OutboxConfig struct {
	// BinDir holds the binaries (make build nats-server). Default "bin".
	BinDir string
	// Payments is the number of transactions that enqueue one request each.
	// Default 5000.
	Payments int
	// Rollback is the fraction of those transactions rolled back after the
	// enqueue. Default 0.1.
	Rollback float64
	// Merchants is the number of merchants; each merchant's requests are
	// enqueued one after the other, so the stream must hold them in that
	// order. Default 8.
	Merchants int
	// Relays is the number of relay processes. Default 3.
	Relays int
	// Duration is how long the enqueueing takes; the kills are spread over
	// it. Default 20s.
	Duration time.Duration
	// MinKills is the least number of relay kills. Default 10.
	MinKills int
	// SettleTimeout bounds the wait for the outbox to drain and the worker
	// to record every committed payment. Default 2m.
	SettleTimeout time.Duration
	// Seed seeds the choices; 0 picks one.
	Seed int64
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c OutboxConfig) WithDefaults() OutboxConfig {
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.Payments <= 0 {
		c.Payments = 5000
	}
	if c.Rollback <= 0 {
		c.Rollback = 0.1
	}
	if c.Merchants <= 0 {
		c.Merchants = 8
	}
	if c.Relays <= 0 {
		c.Relays = 3
	}
	if c.Duration <= 0 {
		c.Duration = 20 * time.Second
	}
	if c.MinKills <= 0 {
		c.MinKills = 10
	}
	if c.SettleTimeout <= 0 {
		c.SettleTimeout = 2 * time.Minute
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano()
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

// OutboxResult is what RunOutbox found.
type OutboxResult struct {
	Seed       int64
	Committed  int // transactions committed with a request in them
	RolledBack int
	Kills      int // relay processes killed with SIGKILL
	Published  int // messages in the requests stream
	// Lost are committed requests missing from the stream; Extra are
	// messages of rolled-back requests or second copies of a committed one;
	// OutOfOrder are merchants whose requests the stream holds in another
	// order than they were committed; Unprocessed are committed requests the
	// worker recorded no final row for; Left is the outbox rows left.
	Lost, Extra, OutOfOrder, Unprocessed []string
	Left                                 int
	Duration                             time.Duration
	Problems                             []string
	// Dir is the working directory, kept when the run failed.
	Dir string
}

// OK reports whether every invariant held.
func (r *OutboxResult) OK() bool { return len(r.Problems) == 0 }

// FigureLine is the scenario's one-line summary.
func (r *OutboxResult) FigureLine() string {
	return fmt.Sprintf("chaos-outbox committed=%d rolled_back=%d relay_kills=%d published=%d lost=%d extra=%d out_of_order=%d unprocessed=%d left=%d duration=%s",
		r.Committed, r.RolledBack, r.Kills, r.Published, len(r.Lost), len(r.Extra), len(r.OutOfOrder),
		len(r.Unprocessed), r.Left, r.Duration.Round(time.Second))
}

// RunOutbox runs the outbox scenario against real processes: NATS,
// Postgres, one worker on the fake gateway (it provisions the streams and
// records every request), cfg.Relays `publisher outbox relay` processes and
// an upstream that enqueues through outbox.Enqueue. It checks that every
// committed request is published exactly once and in its merchant's order,
// that no rolled-back one is, that the outbox drains, and that the worker
// records each committed payment.
func RunOutbox(ctx context.Context, cfg OutboxConfig) (*OutboxResult, error) {
	cfg = cfg.WithDefaults()
	start := time.Now()
	res := &OutboxResult{Seed: cfg.Seed}
	dir, err := os.MkdirTemp("", "paystream-chaos-outbox-")
	if err != nil {
		return nil, fmt.Errorf("chaos outbox: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach it
		return nil, fmt.Errorf("chaos outbox: %w", err)
	}
	res.Dir = dir
	fmt.Fprintf(cfg.Out, "chaos-outbox: %d transactions (%.0f%% rolled back) from %d merchants over %s, %d relays, seed %d\n",
		cfg.Payments, cfg.Rollback*100, cfg.Merchants, cfg.Duration, cfg.Relays, cfg.Seed)

	err = runOutbox(ctx, cfg, dir, res)
	res.Duration = time.Since(start)
	if err == nil && res.OK() {
		_ = os.RemoveAll(dir)
		res.Dir = ""
	}
	return res, err
}

func runOutbox(ctx context.Context, cfg OutboxConfig, dir string, res *OutboxResult) (err error) {
	out := &lockedWriter{w: cfg.Out}
	stack, err := localstack.Start(ctx, localstack.Config{Dir: dir, BinDir: cfg.BinDir, Log: out,
		PostgresSettings: []string{"synchronous_commit=on"}, StopTimeout: 20 * time.Second})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stack.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if _, err := stack.StartWorker(ctx, "w1", map[string]string{"PAYSTREAM_GATEWAY_URL": "fake"}); err != nil {
		return err
	}
	relays := make([]*localstack.Process, cfg.Relays)
	for i := range relays {
		if relays[i], err = stack.StartOutboxRelay(ctx, fmt.Sprintf("relay%d", i+1)); err != nil {
			return err
		}
	}
	pool, err := pgxpool.New(ctx, stack.DatabaseURL())
	if err != nil {
		return fmt.Errorf("chaos outbox: %w", err)
	}
	defer pool.Close()

	// The upstream enqueues while the killer kills relays.
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x0b0c)) //nolint:gosec // chaos, not secrets
	plan := planOutbox(rng, cfg)
	killCtx, stopKills := context.WithCancel(ctx)
	var kills atomic.Int64
	killed := make(chan error, 1)
	go func() {
		killed <- killRelays(killCtx, stack, relays, rng.Int64(), cfg, &kills, out)
	}()
	committed, rolledBack, enqErr := enqueueAll(ctx, pool, plan, cfg.Duration)
	// At least MinKills before the killer stops: the relays keep draining.
	for enqErr == nil && int(kills.Load()) < cfg.MinKills && ctx.Err() == nil {
		if !sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	stopKills()
	if kerr := <-killed; kerr != nil && enqErr == nil {
		enqErr = kerr
	}
	res.Kills = int(kills.Load())
	if enqErr != nil {
		return enqErr
	}
	for _, ids := range committed {
		res.Committed += len(ids)
	}
	res.RolledBack = len(rolledBack)
	fmt.Fprintf(out, "chaos-outbox: enqueued, %d committed, %d rolled back, %d relay kills\n", res.Committed, res.RolledBack, res.Kills)

	settle, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	defer cancel()
	if res.Left, err = waitOutboxEmpty(settle, pool); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("outbox not drained: %d rows left: %v", res.Left, err))
	}
	if err := checkStream(ctx, stack.NATSURL(), committed, rolledBack, res); err != nil {
		return err
	}
	if res.Unprocessed, err = waitRecorded(settle, pool, committed); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("%d committed payments not recorded: %v", len(res.Unprocessed), err))
	}
	for what, ids := range map[string][]string{"lost": res.Lost, "extra": res.Extra, "out of order": res.OutOfOrder} {
		if len(ids) > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: %d (e.g. %s)", what, len(ids), ids[0]))
		}
	}
	return nil
}

// outboxItem is one transaction of the upstream: enqueue req, then commit
// or roll back.
type outboxItem struct {
	req      *payment.Request
	rollback bool
}

// planOutbox deals the transactions out to the merchants.
func planOutbox(rng *rand.Rand, cfg OutboxConfig) [][]outboxItem {
	plan := make([][]outboxItem, cfg.Merchants)
	for i := range cfg.Payments {
		m := i % cfg.Merchants
		plan[m] = append(plan[m], outboxItem{
			req: &payment.Request{
				PaymentID:     fmt.Sprintf("obx_%x_%06d", uint32(cfg.Seed), i),
				MerchantID:    fmt.Sprintf("om%02d", m),
				CustomerID:    "cus_outbox",
				AmountMinor:   int64(100 + rng.IntN(100_000)),
				Currency:      "EUR",
				PaymentMethod: "pm_card_visa",
			},
			rollback: rng.Float64() < cfg.Rollback,
		})
	}
	return plan
}

// enqueueAll runs each merchant's transactions one after the other, the
// merchants side by side, paced to take about d. It returns the committed
// payment ids per merchant, in commit order, and the rolled-back ones.
func enqueueAll(ctx context.Context, pool *pgxpool.Pool, plan [][]outboxItem, d time.Duration) (committed map[string][]string, rolledBack []string, err error) {
	ok := make([][]string, len(plan))
	rolled := make([][]string, len(plan))
	errs := make([]error, len(plan))
	var wg sync.WaitGroup
	for m, items := range plan {
		wg.Go(func() {
			pace := d / time.Duration(max(1, len(items)))
			next := time.Now()
			for _, it := range items {
				if !sleepUntil(ctx, next) {
					errs[m] = ctx.Err()
					return
				}
				next = next.Add(pace)
				if err := enqueueOne(ctx, pool, it); err != nil {
					errs[m] = fmt.Errorf("enqueue %s: %w", it.req.PaymentID, err)
					return
				}
				if it.rollback {
					rolled[m] = append(rolled[m], it.req.PaymentID)
				} else {
					ok[m] = append(ok[m], it.req.PaymentID)
				}
			}
		})
	}
	wg.Wait()
	committed = map[string][]string{}
	for m, ids := range ok {
		if len(ids) > 0 {
			committed[plan[m][0].req.MerchantID] = ids
		}
	}
	for _, r := range rolled {
		rolledBack = append(rolledBack, r...)
	}
	return committed, rolledBack, errors.Join(errs...)
}

// enqueueOne is one upstream transaction: an "order" write (here the
// enqueue alone) and the request, committed or rolled back together.
func enqueueOne(ctx context.Context, pool *pgxpool.Pool, it outboxItem) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := outbox.Enqueue(ctx, tx, it.req, outbox.Config{}); err != nil {
			return err
		}
		if it.rollback {
			return errRollback // BeginFunc rolls back
		}
		return nil
	})
	if errors.Is(err, errRollback) {
		return nil
	}
	return err
}

var errRollback = errors.New("rolled back on purpose")

// killRelays kills a random relay with SIGKILL every 200–800 ms and starts
// it again, until ctx ends; then it makes sure every relay runs.
func killRelays(ctx context.Context, stack *localstack.Stack, relays []*localstack.Process, seed int64, cfg OutboxConfig,
	kills *atomic.Int64, out io.Writer) error {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x4b11)) //nolint:gosec // chaos, not secrets
	restart := func(i int) error {
		p, err := stack.StartOutboxRelay(context.WithoutCancel(ctx), fmt.Sprintf("relay%d", i+1))
		if err != nil {
			return err
		}
		relays[i] = p
		return nil
	}
	for sleep(ctx, time.Duration(200+rng.IntN(600))*time.Millisecond) {
		i := rng.IntN(len(relays))
		if err := relays[i].Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return err
		}
		<-relays[i].Done()
		kills.Add(1)
		fmt.Fprintf(out, "chaos-outbox: kill -9 relay%d\n", i+1)
		if err := restart(i); err != nil {
			return err
		}
	}
	for i, p := range relays {
		if p.Exited() {
			if err := restart(i); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitOutboxEmpty waits until the outbox table is empty and returns the
// rows left when ctx ends first.
func waitOutboxEmpty(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM paystream_outbox`).Scan(&n); err != nil {
			return -1, err
		}
		if n == 0 {
			return 0, nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return n, ctx.Err()
		}
	}
}

// checkStream reads every message of the requests stream and compares it
// with what was committed and rolled back.
func checkStream(ctx context.Context, natsURL string, committed map[string][]string, rolledBack []string, res *OutboxResult) error {
	nc, err := nats.Connect(natsURL, nats.Name("paystream-chaos-outbox"))
	if err != nil {
		return fmt.Errorf("chaos outbox: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("chaos outbox: %w", err)
	}
	stream, err := js.Stream(ctx, contract.Stream)
	if err != nil {
		return fmt.Errorf("chaos outbox: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("chaos outbox: %w", err)
	}
	total := int(info.State.Msgs)
	res.Published = total
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return fmt.Errorf("chaos outbox: %w", err)
	}
	seen := map[string]int{}
	order := map[string][]string{} // merchant → payment ids in stream order
	for read := 0; read < total; {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("chaos outbox: read the stream: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var body struct {
				PaymentID  string `json:"payment_id"`
				MerchantID string `json:"merchant_id"`
			}
			if err := json.Unmarshal(msg.Data(), &body); err != nil {
				return fmt.Errorf("chaos outbox: message %s: %w", msg.Subject(), err)
			}
			if id := msg.Headers().Get(nats.MsgIdHdr); id != body.PaymentID {
				res.Problems = append(res.Problems, fmt.Sprintf("message of %s has Nats-Msg-Id %q", body.PaymentID, id))
			}
			seen[body.PaymentID]++
			if seen[body.PaymentID] == 1 {
				order[body.MerchantID] = append(order[body.MerchantID], body.PaymentID)
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("chaos outbox: read the stream: %w", err)
		}
		read += n
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for merchant, ids := range committed {
		for _, id := range ids {
			switch seen[id] {
			case 0:
				res.Lost = append(res.Lost, id)
			case 1:
			default:
				res.Extra = append(res.Extra, id)
			}
		}
		// Compare the order of the ones that arrived: a lost one is
		// reported as lost, not as out of order too.
		var want []string
		for _, id := range ids {
			if seen[id] > 0 {
				want = append(want, id)
			}
		}
		if !slices.Equal(order[merchant], want) {
			res.OutOfOrder = append(res.OutOfOrder, merchant)
		}
	}
	for _, id := range rolledBack {
		if seen[id] > 0 {
			res.Extra = append(res.Extra, id)
		}
	}
	return nil
}

// waitRecorded waits until the worker has a final row for every committed
// payment and returns the ones still missing when ctx ends.
func waitRecorded(ctx context.Context, pool *pgxpool.Pool, committed map[string][]string) ([]string, error) {
	var ids []string
	for _, c := range committed {
		ids = append(ids, c...)
	}
	for {
		rows, err := pool.Query(ctx, `SELECT payment_id FROM payments
			WHERE payment_id = ANY($1) AND status IN ('succeeded', 'declined', 'failed')`, ids)
		if err != nil {
			return ids, err
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return ids, err
		}
		if len(done) == len(ids) {
			return nil, nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			have := map[string]bool{}
			for _, id := range done {
				have[id] = true
			}
			var missing []string
			for _, id := range ids {
				if !have[id] {
					missing = append(missing, id)
				}
			}
			return missing, ctx.Err()
		}
	}
}

// lockedWriter serialises writes from the scenario's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
