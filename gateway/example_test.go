package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/rs/zerolog"

	"github.com/paystream/paystream/gateway"
	"github.com/paystream/paystream/gateway/sim"
	"github.com/paystream/paystream/payment"
)

// A charge through the HTTP client, against the simulator. Retrying with
// the same idempotency key returns the first result and charges once.
func ExampleHTTP_Charge() {
	simulator := sim.New(sim.Config{}, zerolog.Nop(), nil)
	server := httptest.NewServer(simulator)
	defer server.Close()

	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: server.URL, Timeout: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	defer g.Close()

	c := payment.Charge{
		IdempotencyKey: "order-1001", PaymentID: "order-1001", MerchantID: "shop-7",
		Currency: "EUR", PaymentMethod: "pm_card_visa", AmountMinor: 2599,
	}
	first, err := g.Charge(context.Background(), c)
	if err != nil {
		panic(err)
	}
	retry, err := g.Charge(context.Background(), c)
	if err != nil {
		panic(err)
	}
	fmt.Println(first.Status, retry.ChargeID == first.ChargeID, simulator.Stats().Charges)
	// Output: succeeded true 1
}

// The fake declines every amount ending in 13.
func ExampleFake() {
	f := gateway.NewFake(gateway.FakeConfig{})
	res, err := f.Charge(context.Background(), payment.Charge{
		IdempotencyKey: "order-1013", PaymentID: "order-1013", MerchantID: "shop-7",
		Currency: "EUR", PaymentMethod: "pm_card_visa", AmountMinor: 1013,
	})
	fmt.Println(res.Status, res.DeclineCode, err)
	// Output: declined card_declined <nil>
}

// Classify turns a 429 into a ClassRetry error that carries Retry-After and
// does not count against the circuit breaker.
func ExampleClassify() {
	_, err := gateway.Classify(http.StatusTooManyRequests, http.Header{"Retry-After": {"3"}},
		[]byte(`{"error":{"code":"rate_limited","message":"slow down"}}`), time.Now())
	var ge *payment.GatewayError
	if errors.As(err, &ge) {
		fmt.Println(ge.Class, ge.Code, ge.RetryAfter, payment.IsBreakerFailure(err))
	}
	// Output: retry rate_limited 3s false
}

// A lookup finds the charge made under an idempotency key; a key with no
// charge is not found, without an error.
func ExampleHTTP_Lookup() {
	simulator := sim.New(sim.Config{}, zerolog.Nop(), nil)
	server := httptest.NewServer(simulator)
	defer server.Close()
	g, err := gateway.NewHTTP(gateway.HTTPConfig{BaseURL: server.URL})
	if err != nil {
		panic(err)
	}
	defer g.Close()

	charged, err := g.Charge(context.Background(), payment.Charge{
		IdempotencyKey: "order-1002", PaymentID: "order-1002", MerchantID: "shop-7",
		Currency: "EUR", PaymentMethod: "pm_card_visa", AmountMinor: 990,
	})
	if err != nil {
		panic(err)
	}
	found, err := g.Lookup(context.Background(), "order-1002")
	fmt.Println(found.Found, found.ChargeID == charged.ChargeID, found.AmountMinor, found.Currency, err)
	none, err := g.Lookup(context.Background(), "order-1003")
	fmt.Println(none.Found, err)
	// Output:
	// true true 990 EUR <nil>
	// false <nil>
}
