package outbox_test

import (
	"context"
	"errors"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish/outbox"
)

// An order service records an order and its payment request in one
// transaction: the request is published exactly when the order commits.
func ExampleEnqueue() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://orders@127.0.0.1:5432/orders")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, total_minor) VALUES ($1, $2)", "ord_1", 1999); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, tx, &payment.Request{
			PaymentID:     "pay_ord_1",
			MerchantID:    "m001",
			AmountMinor:   1999,
			Currency:      "USD",
			PaymentMethod: "pm_card_visa",
			Metadata:      map[string]string{"order_id": "ord_1"},
		}, outbox.Config{})
	})
	if errors.Is(err, payment.ErrInvalid) {
		log.Printf("order refused, nothing committed: %v", err)
	} else if err != nil {
		log.Fatal(err)
	}
}
