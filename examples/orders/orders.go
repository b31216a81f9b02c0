// Package orders is an example upstream service of paystream, as
// docs/upstream.md describes one: an order service that keeps its orders in
// its own PostgreSQL table, asks paystream to charge each order through the
// transactional outbox (package publish/outbox), and marks the order paid or
// failed when paystream announces the payment's outcome.
//
// It is documentation that compiles: the test (orders_test.go) runs the whole
// loop on real Postgres and NATS with an in-process paystream worker, and
// cmd/orders runs it against a local stack (docker compose up, or make dev).
//
// It uses only what an upstream service can import: payment, contract and
// publish/outbox.
package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish/outbox"
)

// Order statuses.
const (
	StatusPending = "pending" // placed, payment requested
	StatusPaid    = "paid"    // the payment succeeded
	StatusFailed  = "failed"  // the payment was declined or failed
)

// ResultsConsumer is the durable consumer of the results stream that this
// service owns: one per upstream service.
const ResultsConsumer = "orders-payment-results"

// schema is the service's own table. payment_key is the idempotency key of
// the order's payment request: outcomes are matched on it.
const schema = `
CREATE TABLE IF NOT EXISTS orders (
	id           text PRIMARY KEY,
	merchant_id  text NOT NULL,
	amount_minor bigint NOT NULL,
	currency     text NOT NULL,
	payment_key  text NOT NULL UNIQUE,
	status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'failed')),
	error_code   text NOT NULL DEFAULT '',
	updated_at   timestamptz NOT NULL DEFAULT now()
)`

// Order is an order as the service stores it.
type Order struct {
	ID          string
	MerchantID  string
	AmountMinor int64
	Currency    string
	// Status is StatusPending, StatusPaid or StatusFailed; ErrorCode says
	// why a payment failed.
	Status    string
	ErrorCode string
}

// Service is the order service.
type Service struct {
	pool   *pgxpool.Pool
	outbox outbox.Config
}

// New returns a service storing orders in pool. cfg is passed to
// outbox.Enqueue: set it to the paystream fleet's subject prefix and limits.
func New(pool *pgxpool.Pool, cfg outbox.Config) *Service {
	return &Service{pool: pool, outbox: cfg}
}

// Migrate creates the orders table and the outbox table in the database at
// databaseURL (the pool's). Both are idempotent.
func Migrate(ctx context.Context, pool *pgxpool.Pool, databaseURL string) error {
	if _, err := pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("orders: create table: %w", err)
	}
	return outbox.Migrate(ctx, databaseURL)
}

// PaymentKey is the idempotency key of an order's payment: derived from the
// order id, so that a retried request can never charge twice.
func PaymentKey(orderID string) string { return "order-" + orderID }

// PlaceOrder records o and requests its payment in one transaction: the
// payment request is published exactly when, and only if, the order commits.
func (s *Service) PlaceOrder(ctx context.Context, o Order, paymentMethod string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return s.PlaceOrderTx(ctx, tx, o, paymentMethod)
	})
}

// PlaceOrderTx is PlaceOrder inside the caller's transaction tx, for a
// caller that does more in it (and may still roll it back: then neither the
// order nor the payment request exists).
func (s *Service) PlaceOrderTx(ctx context.Context, tx pgx.Tx, o Order, paymentMethod string) error {
	key := PaymentKey(o.ID)
	if _, err := tx.Exec(ctx,
		`INSERT INTO orders (id, merchant_id, amount_minor, currency, payment_key) VALUES ($1, $2, $3, $4, $5)`,
		o.ID, o.MerchantID, o.AmountMinor, o.Currency, key); err != nil {
		return fmt.Errorf("orders: insert order %s: %w", o.ID, err)
	}
	// An invalid request (say, an unknown currency) fails here, inside the
	// transaction, with an error matching payment.ErrInvalid.
	return outbox.Enqueue(ctx, tx, &payment.Request{
		PaymentID:      "pay_" + o.ID,
		IdempotencyKey: key,
		MerchantID:     o.MerchantID,
		AmountMinor:    o.AmountMinor,
		Currency:       o.Currency,
		PaymentMethod:  paymentMethod,
		Metadata:       map[string]string{"order_id": o.ID},
	}, s.outbox)
}

// Get returns the order id.
func (s *Service) Get(ctx context.Context, id string) (Order, error) {
	o := Order{ID: id}
	err := s.pool.QueryRow(ctx,
		`SELECT merchant_id, amount_minor, currency, status, error_code FROM orders WHERE id = $1`, id).
		Scan(&o.MerchantID, &o.AmountMinor, &o.Currency, &o.Status, &o.ErrorCode)
	if err != nil {
		return Order{}, fmt.Errorf("orders: get %s: %w", id, err)
	}
	return o, nil
}

// ApplyOutcome marks the order of outcome o paid (succeeded) or failed
// (declined, failed), matched by its idempotency key. It is idempotent: the
// same outcome delivered twice changes nothing the second time, and paid is
// final, so a late failed never undoes it, while a paystream replay that
// turns failed into succeeded marks the order paid (docs/upstream.md §2).
// It reports whether the order changed; an outcome of another service's
// payment (no order with its key) changes nothing.
func (s *Service) ApplyOutcome(ctx context.Context, o payment.Outcome) (bool, error) {
	var status string
	switch o.Status {
	case payment.StatusSucceeded:
		status = StatusPaid
	case payment.StatusDeclined, payment.StatusFailed:
		status = StatusFailed
	default:
		return false, nil // not a final status: nothing to record
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE orders SET status = $2, error_code = $3, updated_at = now()
		WHERE payment_key = $1 AND status <> 'paid' AND (status, error_code) IS DISTINCT FROM ($2::text, $3::text)`,
		o.IdempotencyKey, status, o.ErrorCode)
	if err != nil {
		return false, fmt.Errorf("orders: apply outcome of %s: %w", o.PaymentID, err)
	}
	return tag.RowsAffected() > 0, nil
}

// ConsumeResults applies the outcomes of the results stream until ctx ends,
// through the durable consumer ResultsConsumer on
// <subjectPrefix>.results.> ("payments" when empty). An outcome is
// acknowledged only after it was recorded; one that cannot be recorded now
// is redelivered; a message that is not an outcome is terminated.
// redeliverAfter is how long an outcome that could not be recorded waits
// before it comes again.
const redeliverAfter = 2 * time.Second

func (s *Service) ConsumeResults(ctx context.Context, js jetstream.JetStream, subjectPrefix string) error {
	if subjectPrefix == "" {
		subjectPrefix = contract.SubjectPrefix
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, contract.ResultsStream, jetstream.ConsumerConfig{
		Durable:       ResultsConsumer,
		FilterSubject: subjectPrefix + ".results.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return fmt.Errorf("orders: results consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("orders: results consumer: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("orders: results consumer: %w", err)
		}
		var o payment.Outcome
		if err := json.Unmarshal(m.Data(), &o); err != nil || o.IdempotencyKey == "" {
			_ = m.Term() // not an outcome event
			continue
		}
		if _, err := s.ApplyOutcome(ctx, o); err != nil {
			// The database is down, say: ask again later, not at once.
			_ = m.NakWithDelay(redeliverAfter)
			continue
		}
		_ = m.Ack()
	}
}
