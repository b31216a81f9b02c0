package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paystream/paystream/publish/outbox"
)

// publishing measures, with no workers running, how fast N requests reach
// the requests stream: published directly (async JetStream publishes, as
// fast as the server acknowledges them) and relayed from the outbox table
// by an outbox.Relay with its defaults, timed from the relay's start until
// the table is empty (every row published, acknowledged and deleted).
func (b *bench) publishing(ctx context.Context) (direct, relay float64, err error) {
	if err := b.resetStream(ctx); err != nil {
		return 0, 0, err
	}
	b.logf("publishing: %d requests directly", b.o.n)
	start := time.Now()
	if err := b.publish(ctx, b.o.n); err != nil {
		return 0, 0, fmt.Errorf("direct: %w", err)
	}
	direct = float64(b.o.n) / time.Since(start).Seconds()

	if err := outbox.Migrate(ctx, b.stack.DatabaseURL()); err != nil {
		return 0, 0, err
	}
	if err := b.resetStream(ctx); err != nil {
		return 0, 0, err
	}
	if err := b.fillOutbox(ctx, b.o.n); err != nil {
		return 0, 0, err
	}
	b.logf("publishing: %d requests through the outbox relay", b.o.n)
	r, err := outbox.NewRelay(outbox.RelayConfig{DB: b.pool, JetStream: b.js, Stream: b.ccfg.Stream})
	if err != nil {
		return 0, 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start = time.Now()
	wg.Go(func() { _ = r.Run(runCtx) })
	err = b.waitOutboxEmpty(ctx)
	elapsed := time.Since(start)
	stop()
	wg.Wait()
	if err != nil {
		return 0, 0, err
	}
	s, err := b.js.Stream(ctx, b.ccfg.Stream)
	if err != nil {
		return 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	if info.State.Msgs != uint64(b.o.n) {
		return 0, 0, fmt.Errorf("outbox relay: %d messages in the stream, want %d", info.State.Msgs, b.o.n)
	}
	return direct, float64(b.o.n) / elapsed.Seconds(), nil
}

// fillOutbox writes n requests of a new round into the outbox table with
// COPY (setting up, not measured): the rows Enqueue would write.
func (b *bench) fillOutbox(ctx context.Context, n int) error {
	b.round++
	rows := make([][]any, 0, n)
	for i := range n {
		r := b.request(i)
		body, err := r.Marshal()
		if err != nil {
			return err
		}
		rows = append(rows, []any{outbox.PartitionOf(r.MerchantID), b.ccfg.SubjectPrefix + ".requests." + r.MerchantID, r.PaymentID, body})
	}
	_, err := b.pool.CopyFrom(ctx, pgx.Identifier{outbox.Table},
		[]string{"partition", "subject", "payment_id", "body"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("fill the outbox: %w", err)
	}
	return nil
}

// waitOutboxEmpty polls the outbox table until it is empty.
func (b *bench) waitOutboxEmpty(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var left int
		if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+outbox.Table).Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("outbox relay: %d rows left after 10 minutes", left)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
