package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/internal/jsretry"
)

// Defaults of RelayConfig.
const (
	DefaultBatchSize     = 256
	DefaultConcurrency   = 4
	DefaultPollInterval  = 100 * time.Millisecond
	DefaultRetryWait     = 100 * time.Millisecond
	DefaultRetryWaitMax  = 5 * time.Second
	DefaultAckTimeout    = 5 * time.Second
	DefaultStatsInterval = 5 * time.Second
)

// relayLockClass is the first key of the two-key advisory lock a relay holds
// on a partition for the transaction of a batch; the second key is the
// partition. Two-key advisory locks never collide with the one-key (bigint)
// locks of the worker's store.
const relayLockClass int32 = 0x70736f62 // "psob"

// DB is what a Relay needs of the database; *pgxpool.Pool satisfies it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// RelayConfig configures a Relay. The zero value of every field but DB and
// JetStream means its default.
type RelayConfig struct {
	// DB is the database holding the outbox table. Required. The relay
	// holds up to Concurrency+1 connections at once.
	DB DB
	// JetStream publishes the rows. Required. The relay does not close its
	// connection.
	JetStream jetstream.JetStream
	// Stream is the stream every publish expects (Nats-Expected-Stream), so
	// that a message never lands in another stream. Default "PAYMENTS".
	Stream string
	// BatchSize is the most rows of one partition published and deleted in
	// one transaction. Default 256.
	BatchSize int
	// Concurrency is the number of goroutines relaying partitions, each
	// owning the partitions p with p % Concurrency equal to its index.
	// 1 to Partitions; default 4.
	Concurrency int
	// PollInterval is the wait after a round that found no full batch.
	// Default 100ms.
	PollInterval time.Duration
	// RetryWait is the wait after the first failed batch of a goroutine; it
	// doubles with each further failure, up to RetryWaitMax, with ±20%
	// jitter. Defaults 100ms and 5s.
	RetryWait    time.Duration
	RetryWaitMax time.Duration
	// AckTimeout bounds the wait for the PubAcks of one batch. Default 5s.
	AckTimeout time.Duration
	// StatsInterval is how often the pending rows and the age of the oldest
	// row are measured for the metrics. Default 5s.
	StatsInterval time.Duration
	// Logger receives lifecycle messages (Info), failed batches (Warn) and
	// rows the stream refuses (Error). Default: none.
	Logger *zerolog.Logger
	// Registerer, when set, registers the relay's metrics (New fails if
	// they are registered already).
	Registerer prometheus.Registerer
	// TracerProvider, when set, makes a "send <subject template>" producer
	// span per relayed row, a new trace, whose W3C context goes into the
	// message's headers in lower case (publish/outbox/trace.go). nil is
	// tracing off.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns a copy of c with every zero field set to its default.
func (c RelayConfig) WithDefaults() RelayConfig {
	if c.Stream == "" {
		c.Stream = contract.Stream
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.RetryWait == 0 {
		c.RetryWait = DefaultRetryWait
	}
	if c.RetryWaitMax == 0 {
		c.RetryWaitMax = DefaultRetryWaitMax
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	return c
}

// Validate returns every problem of c (after WithDefaults) joined in one
// error, or nil.
func (c RelayConfig) Validate() error {
	var errs []error
	if c.DB == nil {
		errs = append(errs, errors.New("database: required"))
	}
	if c.JetStream == nil {
		errs = append(errs, errors.New("jetstream: required"))
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("batch size %d: must be 1 to 10000", c.BatchSize))
	}
	if c.Concurrency < 1 || c.Concurrency > Partitions {
		errs = append(errs, fmt.Errorf("concurrency %d: must be 1 to %d", c.Concurrency, Partitions))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"poll interval", c.PollInterval}, {"retry wait", c.RetryWait}, {"ack timeout", c.AckTimeout}, {"stats interval", c.StatsInterval}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", d.name, d.d))
		}
	}
	if c.RetryWaitMax < c.RetryWait {
		errs = append(errs, fmt.Errorf("retry wait max %s: must be at least the retry wait %s", c.RetryWaitMax, c.RetryWait))
	}
	return errors.Join(errs...)
}

// Relay moves committed outbox rows to JetStream. Create it with NewRelay
// and call Run once.
//
// A round of one partition is one transaction: take the partition's advisory
// lock with pg_try_advisory_xact_lock (skip the partition when another relay
// holds it), read up to BatchSize rows in id order, publish them in that
// order with Nats-Msg-Id = payment_id, wait for every PubAck, delete the
// rows and commit. When a publish or the delete fails, the transaction rolls
// back, the rows stay, and the goroutine backs off; the next round publishes
// the batch again and JetStream drops the copies it stored already.
//
// Ordering: within a partition, messages reach the stream in id order,
// published by one relay at a time. The one exception is a batch in which a
// publish fails while a later one of the same batch is stored (the stream
// refusing one message, not an outage, which fails every later publish
// too): the failed row is then stored after the later one when the batch is
// retried. id order is the order of the inserts' sequence values, which for
// transactions that overlap need not be their commit order; and a row
// committed late with a smaller id than rows already published is published
// after them.
type Relay struct {
	cfg RelayConfig
	log zerolog.Logger
	m   *relayMetrics

	started atomic.Bool
	running atomic.Bool

	// afterPublishFunc, when set (tests only), runs after a batch's PubAcks
	// and before its delete; an error makes the round fail as a delete
	// error would.
	afterPublishFunc func(partition int32) error
}

// NewRelay checks cfg and returns a Relay, registering its metrics with
// cfg.Registerer when set.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("outbox: invalid relay config: %w", err)
	}
	r := &Relay{cfg: cfg, log: zerolog.Nop(), m: newRelayMetrics()}
	if cfg.Logger != nil {
		r.log = cfg.Logger.With().Str("component", "outbox_relay").Logger()
	}
	if cfg.Registerer != nil {
		if err := r.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("outbox: register metrics: %w", err)
		}
	}
	return r, nil
}

// Running reports whether Run is running.
func (r *Relay) Running() bool { return r.running.Load() }

// Run relays until ctx ends, then waits for its goroutines and returns nil.
// A batch in flight when ctx ends is rolled back (its rows are published
// again later, and de-duplicated). Run returns an error at once when called
// a second time.
func (r *Relay) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("outbox: Relay.Run called twice")
	}
	r.running.Store(true)
	defer r.running.Store(false)
	r.log.Info().Int("concurrency", r.cfg.Concurrency).Int("batch_size", r.cfg.BatchSize).Msg("relay running")

	var wg sync.WaitGroup
	for i := range r.cfg.Concurrency {
		wg.Go(func() { r.loop(ctx, i) })
	}
	wg.Go(func() { r.statsLoop(ctx) })
	wg.Wait()
	r.log.Info().Msg("relay stopped")
	return nil
}

// loop relays the partitions of goroutine i until ctx ends.
func (r *Relay) loop(ctx context.Context, i int) {
	wait := r.cfg.RetryWait
	for ctx.Err() == nil {
		// A partition that fails does not hold up the others of this
		// goroutine: the round goes on, and backs off after it.
		full, err := false, error(nil)
		for p := int32(i); p < Partitions && ctx.Err() == nil; p += int32(r.cfg.Concurrency) {
			f, perr := r.relayPartition(ctx, p)
			if perr != nil {
				err = perr
				continue
			}
			full = full || f
		}
		var d time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			r.m.errors.Inc()
			r.log.Warn().Err(err).Dur("retry_in", wait).Msg("relaying a batch failed; retrying")
			d = jsretry.Jitter(wait)
			wait = min(2*wait, r.cfg.RetryWaitMax)
		case full:
			wait = r.cfg.RetryWait
			continue
		default:
			wait = r.cfg.RetryWait
			d = r.cfg.PollInterval
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// row is one outbox row.
type row struct {
	id        int64
	subject   string
	paymentID string
	body      []byte
}

// relayPartition relays one batch of partition p. full reports that the
// batch was full, so that more rows may be waiting.
func (r *Relay) relayPartition(ctx context.Context, p int32) (full bool, err error) {
	tx, err := r.cfg.DB.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("partition %d: begin: %w", p, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit

	var locked bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1, $2)", relayLockClass, p).Scan(&locked); err != nil {
		return false, fmt.Errorf("partition %d: lock: %w", p, err)
	}
	if !locked {
		return false, nil // another relay has it
	}
	rows, err := tx.Query(ctx,
		"SELECT id, subject, payment_id, body FROM "+Table+" WHERE partition = $1 ORDER BY id LIMIT $2",
		p, r.cfg.BatchSize)
	if err != nil {
		return false, fmt.Errorf("partition %d: read: %w", p, err)
	}
	batch, err := pgx.CollectRows(rows, func(rw pgx.CollectableRow) (row, error) {
		var x row
		err := rw.Scan(&x.id, &x.subject, &x.paymentID, &x.body)
		return x, err
	})
	if err != nil {
		return false, fmt.Errorf("partition %d: read: %w", p, err)
	}
	if len(batch) == 0 {
		return false, nil
	}
	if err := r.publish(ctx, p, batch); err != nil {
		return false, err
	}
	if r.afterPublishFunc != nil {
		if err := r.afterPublishFunc(p); err != nil {
			return false, fmt.Errorf("partition %d: %w", p, err)
		}
	}
	ids := make([]int64, len(batch))
	for i, x := range batch {
		ids[i] = x.id
	}
	if _, err := tx.Exec(ctx, "DELETE FROM "+Table+" WHERE id = ANY($1)", ids); err != nil {
		return false, fmt.Errorf("partition %d: delete %d rows: %w", p, len(ids), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("partition %d: commit: %w", p, err)
	}
	return len(batch) == r.cfg.BatchSize, nil
}

// publish publishes batch in order and waits for every PubAck, counting
// what the stream stored and what it dropped as a duplicate.
func (r *Relay) publish(ctx context.Context, p int32, batch []row) error {
	// While disconnected, nats.go would buffer the publishes for a
	// reconnect, after the batch timed out: wait for the connection.
	if nc := r.cfg.JetStream.Conn(); nc != nil && !nc.IsConnected() {
		return fmt.Errorf("partition %d: nats: %s", p, nc.Status())
	}
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	var sendErr error
	for _, x := range batch {
		msg := &nats.Msg{Subject: x.subject, Data: x.body, Header: nats.Header{}}
		msg.Header.Set("Content-Type", "application/json")
		r.traceSend(ctx, x, msg.Header)
		f, err := r.cfg.JetStream.PublishMsgAsync(msg,
			jetstream.WithMsgID(x.paymentID),
			jetstream.WithExpectStream(r.cfg.Stream),
		)
		if err != nil {
			// Later rows must not overtake this one: stop sending.
			sendErr = fmt.Errorf("partition %d: publish payment %s: %w", p, x.paymentID, err)
			break
		}
		futures = append(futures, f)
	}
	t := time.NewTimer(r.cfg.AckTimeout)
	defer t.Stop()
	var errs []error
	if sendErr != nil {
		errs = append(errs, sendErr)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				r.m.duplicates.Inc()
			} else {
				r.m.published.Inc()
			}
		case err := <-f.Err():
			if jsretry.Refused(err) {
				// The stream refuses this row; it blocks its
				// partition until an operator acts.
				r.log.Error().Err(err).Int32("partition", p).Str("payment_id", batch[i].paymentID).
					Msg("the stream refuses an outbox row; its partition is stuck until it is removed or the stream fixed")
			}
			errs = append(errs, fmt.Errorf("partition %d: publish payment %s: %w", p, batch[i].paymentID, err))
		case <-t.C:
			return errors.Join(append(errs, fmt.Errorf("partition %d: no PubAck for %d messages within %s", p, len(futures)-i, r.cfg.AckTimeout))...)
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		}
	}
	return errors.Join(errs...)
}

// statsLoop measures the pending rows and the oldest row's age every
// StatsInterval until ctx ends.
func (r *Relay) statsLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.StatsInterval)
	defer t.Stop()
	for {
		if err := r.measure(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("measuring the outbox failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure updates the pending and oldest-age gauges.
func (r *Relay) measure(ctx context.Context) error {
	var (
		n   int64
		age float64
	)
	err := r.cfg.DB.QueryRow(ctx,
		"SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM "+Table).Scan(&n, &age)
	if err != nil {
		return fmt.Errorf("outbox: measure: %w", err)
	}
	r.m.pending.Set(float64(n))
	r.m.oldestAge.Set(max(age, 0))
	return nil
}
