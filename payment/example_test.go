package payment_test

import (
	"errors"
	"fmt"

	"github.com/paystream/paystream/payment"
)

func ExampleDecode() {
	body := []byte(`{"payment_id":"pay_1","merchant_id":"acme","amount_minor":1999,` +
		`"currency":"EUR","payment_method":"pm_card_visa"}`)
	r, err := payment.Decode("payments.requests.acme", body, payment.Limits{})
	if err != nil {
		panic(err)
	}
	exp, _ := payment.CurrencyExponent(r.Currency)
	fmt.Println(r.EffectiveKey(), r.AmountMinor, r.Currency, exp)

	_, err = payment.Decode("payments.requests.acme", []byte(`{"amount_minor":19.99}`), payment.Limits{})
	fmt.Println(errors.Is(err, payment.ErrInvalid), err)
	// Output:
	// pay_1 1999 EUR 2
	// true invalid payment request: amount_minor: must be an integer literal
}

func ExampleMaskCardNumbers() {
	masked, changed := payment.MaskCardNumbers([]byte(`{"payment_method":"4111 1111 1111 1111"}`))
	fmt.Println(string(masked), changed)
	// Output: {"payment_method":"**** **** **** 1111"} true
}
