package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/payment"
)

// rawPulls are the pull sizes of the raw fetch-and-ack baseline: the
// worker's largest pull (consumer.Config.MaxFetch, first) and others, of
// which the best is reported too.
var rawPulls = []int{256, 64, 1024}

// raw fetches and acks every message of the requests stream with a fresh
// durable consumer, pull messages at a time, doing nothing else. The line
// runs inside this process: its "worker" CPU and allocations are the
// benchmark's own.
func (b *bench) raw(ctx context.Context, pull int, l *line) error {
	const durable = "bench-raw"
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.ccfg.Stream, jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20_000,
	})
	if err != nil {
		return err
	}
	defer func() { _ = b.js.DeleteConsumer(context.WithoutCancel(ctx), b.ccfg.Stream, durable) }()
	from, err := b.snapshot(ctx, nil)
	if err != nil {
		return err
	}
	got := 0
	for got < b.o.n {
		// Never more than are left: a pull asking for more waits for its
		// expiry before it returns.
		batch, err := cons.Fetch(min(pull, b.o.n-got), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				return err
			}
			got++
		}
		if err := batch.Error(); err != nil && got < b.o.n {
			return err
		}
	}
	// Done when the server has processed every ack, as for paystream.
	if err := waitConsumerSettled(ctx, cons, time.Minute); err != nil {
		return err
	}
	to, err := b.snapshot(ctx, nil)
	if err != nil {
		return err
	}
	l.elapsed = to.at.Sub(from.at)
	l.perSec = float64(got) / l.elapsed.Seconds()
	l.cost, err = b.costOf(ctx, from, to, got)
	return err
}

// floorWorkers is the number of concurrent fetch → insert → update → ack
// loops of the floor, each with its own database connection.
const floorWorkers = 4

// floor is the least any durable design must do per payment, on the
// requests stream's messages with a fresh durable consumer: fetch a batch
// (as many as the worker's largest pull), decode and fingerprint each
// request, claim the batch with one INSERT into payments (the real table,
// real schema and indexes; status processing, a lease, the request kept),
// record the outcome with one UPDATE (final status, charge id, lease and
// request cleared), both committed, then ack each message. No gateway, no
// lease checks, no attempt history, no outcome event. Keys are the payment
// ids with a prefix of their own, so that they are new rows. Like raw, it
// runs inside this process.
func (b *bench) floor(ctx context.Context, l *line) error {
	return b.floorWith(ctx, l, nil)
}

// contractFloor is the floor plus what the contract asks of every payment
// beyond it (docs/contract.md §3, §6): a payment_attempts row for the
// gateway call, written by the recording statement, and an outcome event
// on <prefix>.results.succeeded with its Nats-Msg-Id, published
// asynchronously and stored (its PubAck received) before the messages are
// acked. Still no gateway, no lease checks, no advisory lock, no fence: the
// least a design that keeps the contract's records must do, to tell the
// cost of those records from paystream's own.
func (b *bench) contractFloor(ctx context.Context, l *line) error {
	return b.floorWith(ctx, l, &floorOutcomes{js: b.js, subject: b.ccfg.ResultSubject(string(payment.StatusSucceeded))})
}

// floorOutcomes makes a floor loop keep the contract's records: the
// attempt row and the outcome event (contractFloor).
type floorOutcomes struct {
	js      jetstream.JetStream
	subject string
}

// floorWith runs the floor, with the contract's records when out is set.
func (b *bench) floorWith(ctx context.Context, l *line, out *floorOutcomes) error {
	const durable = "bench-floor"
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.ccfg.Stream, jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20_000,
	})
	if err != nil {
		return err
	}
	defer func() { _ = b.js.DeleteConsumer(context.WithoutCancel(ctx), b.ccfg.Stream, durable) }()
	cfg, err := pgxpool.ParseConfig(b.stack.DatabaseURL())
	if err != nil {
		return err
	}
	cfg.MaxConns, cfg.MinConns = floorWorkers, floorWorkers
	cfg.ConnConfig.RuntimeParams["application_name"] = "paystream-bench-floor"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return err
	}
	b.floorRound++
	prefix := fmt.Sprintf("floor%d-", b.floorRound)

	from, err := b.snapshot(ctx, nil)
	if err != nil {
		return err
	}
	var (
		got      atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	for range floorWorkers {
		wg.Go(func() {
			if err := floorLoop(loopCtx, cons, pool, b.ccfg.MaxFetch, prefix, out, &got); err != nil && loopCtx.Err() == nil {
				errOnce.Do(func() { firstErr = err })
				stop()
			}
		})
	}
	err = waitConsumerSettled(loopCtx, cons, 10*time.Minute)
	to, serr := b.snapshot(ctx, nil)
	stop()
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("floor: %w", firstErr)
	}
	if err := errors.Join(err, serr); err != nil {
		return err
	}
	n := int(got.Load())
	pool.Close()
	if err := b.waitBackendsGone(ctx); err != nil {
		return err
	}
	if err := b.statCounters(ctx, &to); err != nil {
		return err
	}
	var final int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM payments WHERE idempotency_key LIKE $1 AND status = 'succeeded'`,
		prefix+"%").Scan(&final); err != nil {
		return err
	}
	if final != b.o.n {
		return fmt.Errorf("floor: %d final rows, want %d", final, b.o.n)
	}
	if out != nil {
		var attempts int
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM payment_attempts WHERE idempotency_key LIKE $1`,
			prefix+"%").Scan(&attempts); err != nil {
			return err
		}
		if attempts != b.o.n {
			return fmt.Errorf("contract floor: %d attempt rows, want %d", attempts, b.o.n)
		}
	}
	l.elapsed = to.at.Sub(from.at)
	l.perSec = float64(n) / l.elapsed.Seconds()
	l.cost, err = b.costOf(ctx, from, to, n)
	return err
}

// The floor's recording statement, and the contract floor's, which also
// writes each payment's attempt row (as paystream_complete_batch does).
const (
	floorComplete = `
			UPDATE payments SET status = 'succeeded', gateway = 'fake', gateway_charge_id = 'ch_' || payment_id,
				lease_until = NULL, request_subject = NULL, request_body = NULL,
				completed_at = now(), updated_at = now()
			WHERE idempotency_key = ANY ($1::text[]) AND status = 'processing'`
	contractFloorComplete = `
			WITH done AS (` + floorComplete + `
				RETURNING idempotency_key, attempts, gateway_charge_id)
			INSERT INTO payment_attempts (idempotency_key, attempt, kind, worker_id, started_at, duration_us,
				class, result, charge_id, gateway)
			SELECT idempotency_key, attempts, 'charge', 'bench-floor', now(), 0, 'ok', 'succeeded', gateway_charge_id, 'fake'
			FROM done`
)

// floorLoop is one loop of the floor, until ctx ends; with out set, it
// keeps the contract's records too (contractFloor).
func floorLoop(ctx context.Context, cons jetstream.Consumer, pool *pgxpool.Pool, pull int, prefix string, out *floorOutcomes, got *atomic.Int64) error {
	lim := payment.Limits{}.WithDefaults()
	var (
		msgs                                  []jetstream.Msg
		keys, ids, merchants, customers, curs []string
		fps, subjects                         []string
		amounts, seqs                         []int64
		bodies                                [][]byte
		acks                                  []jetstream.PubAckFuture
	)
	complete := floorComplete
	if out != nil {
		complete = contractFloorComplete
	}
	for ctx.Err() == nil {
		// The messages are all in the stream: take what is there now (a
		// waiting pull would hold the last, partial batch until it expires).
		batch, err := cons.FetchNoWait(pull)
		if err != nil {
			return err
		}
		msgs, keys, ids, merchants, customers, curs = msgs[:0], keys[:0], ids[:0], merchants[:0], customers[:0], curs[:0]
		fps, subjects, amounts, seqs, bodies = fps[:0], subjects[:0], amounts[:0], seqs[:0], bodies[:0]
		for m := range batch.Messages() {
			r, err := payment.Decode(m.Subject(), m.Data(), lim)
			if err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
			keys = append(keys, prefix+r.EffectiveKey())
			ids, merchants, customers = append(ids, r.PaymentID), append(merchants, r.MerchantID), append(customers, r.CustomerID)
			curs, amounts = append(curs, r.Currency), append(amounts, r.AmountMinor)
			fps, subjects = append(fps, r.Fingerprint()), append(subjects, m.Subject())
			seqs, bodies = append(seqs, int64(meta.Sequence.Stream)), append(bodies, m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
			return err
		}
		if len(msgs) == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if _, err := pool.Exec(ctx, `
			INSERT INTO payments (idempotency_key, payment_id, merchant_id, customer_id, amount_minor,
				currency, status, attempts, fingerprint, lease_owner, lease_until, lease_stream_seq,
				request_subject, request_body)
			SELECT k, p, m, nullif(c, ''), a, cur, 'processing', 1, fp, 'bench-floor',
				now() + interval '30 seconds', seq, subj, body
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
				$7::text[], $8::bigint[], $9::text[], $10::bytea[]) AS u(k, p, m, c, a, cur, fp, seq, subj, body)
			ON CONFLICT (idempotency_key) DO NOTHING`,
			keys, ids, merchants, customers, amounts, curs, fps, seqs, subjects, bodies); err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		if _, err := pool.Exec(ctx, complete, keys); err != nil {
			return fmt.Errorf("complete: %w", err)
		}
		if out != nil {
			var err error
			if acks, err = out.publish(ctx, acks[:0], keys, ids, curs, amounts); err != nil {
				return err
			}
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				return err
			}
		}
		got.Add(int64(len(msgs)))
	}
	return nil
}

// publish publishes the outcome event of each payment recorded and waits
// until the server has stored them all.
func (out *floorOutcomes) publish(ctx context.Context, acks []jetstream.PubAckFuture, keys, ids, curs []string, amounts []int64) ([]jetstream.PubAckFuture, error) {
	now := time.Now().UTC()
	for i, key := range keys {
		o := payment.Outcome{PaymentID: ids[i], IdempotencyKey: key, Status: payment.StatusSucceeded,
			AmountMinor: amounts[i], Currency: curs[i], Gateway: "fake", GatewayChargeID: "ch_" + ids[i],
			Attempts: 1, CompletedAt: now}
		body, err := o.AppendJSON(make([]byte, 0, 320))
		if err != nil {
			return acks, err
		}
		m := &nats.Msg{Subject: out.subject, Data: body, Header: nats.Header{
			jetstream.MsgIDHeader: {o.MsgID()}, "Content-Type": {"application/json"}}}
		f, err := out.js.PublishMsgAsync(m)
		if err != nil {
			return acks, fmt.Errorf("publish outcome: %w", err)
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return acks, fmt.Errorf("publish outcome: %w", err)
		case <-ctx.Done():
			return acks, ctx.Err()
		}
	}
	return acks, nil
}

// waitConsumerSettled polls a consumer until nothing is pending or awaiting
// an ack.
func waitConsumerSettled(ctx context.Context, cons jetstream.Consumer, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		info, err := cons.Info(ctx)
		if err == nil && info.NumAckPending == 0 && info.NumPending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer not settled after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
