package publish_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

// An upstream service publishes one payment request.
func ExamplePublisher_Publish() {
	ctx := context.Background()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	p, err := publish.New(ctx, js, publish.Config{})
	if err != nil {
		log.Fatal(err) // e.g. stream "PAYMENTS" not found: …
	}

	dup, err := p.Publish(ctx, &payment.Request{
		PaymentID:     "pay_123",
		MerchantID:    "m001",
		AmountMinor:   1999, // 19.99 USD
		Currency:      "USD",
		PaymentMethod: "pm_card_visa",
	})
	switch {
	case errors.Is(err, payment.ErrInvalid):
		log.Fatal(err) // a bug upstream: never retry
	case err != nil:
		log.Fatal(err) // not acknowledged: retry later with the same payment_id
	case dup:
		fmt.Println("already published")
	}
}

// Generated load: each item says what it is.
func ExampleGenerate() {
	opts := publish.GenOptions{Merchants: 3, Duplicates: 0.3, Invalid: 0.3}
	for i := range 6 {
		it := publish.Generate(1, i, opts)
		switch it.Kind {
		case publish.KindDuplicate:
			fmt.Println(i, it.Kind, "of", it.DuplicateOf, "msg id", it.MsgID)
		case publish.KindInvalid:
			fmt.Println(i, it.Kind, it.Invalid, "msg id", it.MsgID)
		default:
			fmt.Println(i, it.Kind, it.Request.Currency, it.Request.AmountMinor, "msg id", it.MsgID)
		}
	}
	// Output:
	// 0 valid USD 6140 msg id pay_0000000000000001_0000000
	// 1 duplicate of 0 msg id dup-1-pay_0000000000000001_0000000
	// 2 duplicate of 0 msg id dup-2-pay_0000000000000001_0000000
	// 3 invalid xxx_currency msg id pay_0000000000000001_0000003
	// 4 valid USD 126 msg id pay_0000000000000001_0000004
	// 5 invalid merchant_mismatch msg id pay_0000000000000001_0000005
}
