package payment_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// typicalBody is a typical request of about 300 bytes.
const typicalBody = `{"payment_id":"pay_01HZX3K9Q7","idempotency_key":"order-8812-attempt","merchant_id":"acme_shop",` +
	`"customer_id":"cus_77812","amount_minor":12999,"currency":"EUR","payment_method":"pm_card_visa",` +
	`"description":"Order 8812: 2 items","metadata":{"order_id":"8812","channel":"web"},` +
	`"created_at":"2025-03-01T12:30:00Z"}`

// TestAllocations bounds the allocations of the hot paths. It cannot run in
// parallel (testing.AllocsPerRun).
func TestAllocations(t *testing.T) {
	r := baseRequest()
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { _ = r.Fingerprint() }), 1.0, "Fingerprint")

	long := "no card here: 4111 1111 1111 1112, order 12345, ref 0000411111111111111111"
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = payment.ContainsCardNumber(long) }), "ContainsCardNumber")
	body := []byte(typicalBody)
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = payment.MaskCardNumbers(body) }), "MaskCardNumbers without a card")

	// The Request, one copy of the body for its string fields (not one
	// per field), the metadata map and its strings, and nothing per field
	// name or per byte of input.
	allocs := testing.AllocsPerRun(100, func() {
		req, err := payment.Decode("payments.requests.acme_shop", body, payment.Limits{})
		if err != nil || req == nil {
			panic(err)
		}
	})
	require.LessOrEqual(t, allocs, 10.0, "Decode")
}
