package demo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/examples/orders"
	"github.com/paystream/paystream/publish/outbox"
)

// DefaultUpstreamOrders is the number of orders Upstream places.
const DefaultUpstreamOrders = 12

// Upstream runs `make demo-upstream`: the stack with a `publisher outbox
// relay` process, and the example order service of examples/orders in
// this process. It places orders (one in a transaction that rolls back),
// waits until the outcomes marked every committed order paid or failed,
// prints the orders and checks that the rolled-back order never reached
// the workers. It uses the stack's database for the orders and the outbox,
// as the compose file does.
func Upstream(ctx context.Context, cfg Config) (err error) {
	cfg = cfg.WithDefaults()
	out := cfg.Out
	fmt.Fprintf(out, "paystream upstream demo: an order service (examples/orders) placing %d orders through the outbox\n\n", DefaultUpstreamOrders)
	s, err := startStack(ctx, cfg, out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if _, err := s.StartOutboxRelay(ctx, "outbox-relay"); err != nil {
		return err
	}

	pool, err := pgxpool.New(ctx, s.DatabaseURL())
	if err != nil {
		return fmt.Errorf("demo: database: %w", err)
	}
	defer pool.Close()
	if err := orders.Migrate(ctx, pool, s.DatabaseURL()); err != nil {
		return err
	}
	nc, err := nats.Connect(s.NATSURL())
	if err != nil {
		return fmt.Errorf("demo: nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("demo: jetstream: %w", err)
	}
	svc := orders.New(pool, outbox.Config{})
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	errc := make(chan error, 1)
	wg.Go(func() { errc <- svc.ConsumeResults(cctx, js, "") })

	ids := make([]string, DefaultUpstreamOrders)
	for i := range ids {
		ids[i] = fmt.Sprintf("ord_%03d", i+1)
		amount := int64(1000 + 100*i + 99)
		if i%4 == 3 {
			amount = int64(1000 + 100*i + 13) // the simulator declines it
		}
		if err := svc.PlaceOrder(ctx, orders.Order{ID: ids[i], MerchantID: "m001", AmountMinor: amount, Currency: "EUR"}, "pm_card_visa"); err != nil {
			return err
		}
	}
	const rolledBack = "ord_rolled_back"
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := svc.PlaceOrderTx(ctx, tx, orders.Order{ID: rolledBack, MerchantID: "m001", AmountMinor: 4242, Currency: "EUR"}, "pm_card_visa"); err != nil {
			return err
		}
		return errors.New("out of stock") // rolls the order and its payment request back
	}); err == nil {
		return errors.New("demo: the rolled-back transaction committed")
	}
	fmt.Fprintf(out, "placed %d orders, each with its payment request in the order's transaction, and rolled one back (%s)\n", len(ids), rolledBack)

	wctx, wcancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	defer wcancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		final, err := ordersFinal(wctx, svc, ids)
		if err != nil {
			return err
		}
		if final {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("%w: orders not paid or failed within %s", ErrVerdict, cfg.SettleTimeout)
		case err := <-errc:
			return fmt.Errorf("demo: results consumer: %w", err)
		case <-tick.C:
		}
	}
	fmt.Fprintln(out, "\norders (status from payments.results.>):")
	paid := 0
	for _, id := range ids {
		o, err := svc.Get(ctx, id)
		if err != nil {
			return err
		}
		if o.Status == orders.StatusPaid {
			paid++
		}
		fmt.Fprintf(out, "  %s  %6d %s  %-7s %s\n", o.ID, o.AmountMinor, o.Currency, o.Status, o.ErrorCode)
	}
	var seen int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM payments WHERE payment_id = $1", "pay_"+rolledBack).Scan(&seen); err != nil {
		return fmt.Errorf("demo: payments table: %w", err)
	}
	if _, err := svc.Get(ctx, rolledBack); !errors.Is(err, pgx.ErrNoRows) || seen != 0 {
		return fmt.Errorf("%w: the rolled-back order %s reached the workers or the orders table", ErrVerdict, rolledBack)
	}
	fmt.Fprintf(out, "\n%d paid, %d failed; the rolled-back order has no row and no payment\n", paid, len(ids)-paid)
	fmt.Fprintln(out, "verdict: every committed order was paid or failed, the rolled-back one never charged")
	return stopWorkers(s.workers, 20*time.Second)
}

// ordersFinal tells whether every order is paid or failed.
func ordersFinal(ctx context.Context, svc *orders.Service, ids []string) (bool, error) {
	for _, id := range ids {
		o, err := svc.Get(ctx, id)
		if err != nil {
			return false, err
		}
		if o.Status == orders.StatusPending {
			return false, nil
		}
	}
	return true, nil
}
