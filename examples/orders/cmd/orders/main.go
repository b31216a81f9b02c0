// Command orders runs the example order service of package
// examples/orders against a running paystream: it places --orders orders,
// each with its payment request enqueued in the order's transaction, then
// applies the outcomes from payments.results.> until every order is paid or
// failed (or --timeout passes, or Ctrl-C), and prints the orders.
//
// Against `docker compose up` (which runs the outbox relay on the paystream
// database) the defaults fit:
//
//	go run ./examples/orders/cmd/orders
//
// Against `make dev`, which runs no relay, export the environment it prints
// and add --relay to run the relay in this process:
//
//	go run ./examples/orders/cmd/orders --relay
//
// It reads PAYSTREAM_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/paystream?sslmode=disable) and
// PAYSTREAM_NATS_URL (default nats://127.0.0.1:4222). Every fourth order is
// for an amount ending in 13, which paystream's gateway simulator and fake
// gateway decline; a simulator with a random decline rate fails a few more.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/examples/orders"
	"github.com/paystream/paystream/publish/outbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	fs.SetOutput(stderr)
	count := fs.Int("orders", 8, "orders to place")
	relay := fs.Bool("relay", false, "run the outbox relay in this process (make dev runs none)")
	timeout := fs.Duration("timeout", time.Minute, "give up waiting for the outcomes after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dbURL := orDefault(getenv("PAYSTREAM_DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/paystream?sslmode=disable")
	natsURL := orDefault(getenv("PAYSTREAM_NATS_URL"), nats.DefaultURL)

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	if err := orders.Migrate(ctx, pool, dbURL); err != nil {
		return err
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	svc := orders.New(pool, outbox.Config{})

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	defer func() { cancel(); wg.Wait() }()
	if *relay {
		r, err := outbox.NewRelay(outbox.RelayConfig{DB: pool, JetStream: js})
		if err != nil {
			return err
		}
		wg.Go(func() { errc <- r.Run(ctx) })
	}
	wg.Go(func() { errc <- svc.ConsumeResults(ctx, js, "") })

	// Unique order ids per run, so that runs never collide.
	runID := time.Now().UTC().Format("20060102T150405")
	ids := make([]string, *count)
	for i := range ids {
		ids[i] = fmt.Sprintf("ord_%s_%03d", runID, i)
		amount := int64(1000 + 100*i + 99)
		if i%4 == 3 {
			amount = int64(1000 + 100*i + 13) // declined
		}
		o := orders.Order{ID: ids[i], MerchantID: "m001", AmountMinor: amount, Currency: "EUR"}
		if err := svc.PlaceOrder(ctx, o, "pm_card_visa"); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "placed %d orders; waiting for their payments\n", len(ids))

	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		final, err := report(ctx, svc, ids, io.Discard)
		if err != nil {
			return err
		}
		if final {
			_, err := report(ctx, svc, ids, stdout)
			return err
		}
		select {
		case <-ctx.Done():
			_, _ = report(context.WithoutCancel(ctx), svc, ids, stdout)
			return fmt.Errorf("not every order paid or failed: %w", context.Cause(ctx))
		case err := <-errc:
			if err != nil {
				return err
			}
		case <-tick.C:
		}
	}
}

// report prints the orders to w and tells whether all are final.
func report(ctx context.Context, svc *orders.Service, ids []string, w io.Writer) (bool, error) {
	final := true
	for _, id := range ids {
		o, err := svc.Get(ctx, id)
		if err != nil {
			return false, err
		}
		final = final && o.Status != orders.StatusPending
		fmt.Fprintf(w, "  %s  %6d %s  %-7s %s\n", o.ID, o.AmountMinor, o.Currency, o.Status, o.ErrorCode)
	}
	return final, nil
}

func orDefault(a, b string) string {
	if a == "" {
		return b
	}
	return a
}
