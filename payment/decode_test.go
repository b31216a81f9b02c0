package payment_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

const subject = "payments.requests.m_1"

type raw = json.RawMessage

func metadataWithKeys(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["k"+strconv.Itoa(i)] = "v"
	}
	return m
}

func TestDecode(t *testing.T) {
	t.Parallel()

	const visa = "4111111111111111"
	amex := "378282246310005"
	nineteen := withCheckDigit("400000000000000000")
	require.True(t, luhnValid(visa) && luhnValid(amex) && luhnValid(nineteen) && len(nineteen) == 19)
	require.False(t, luhnValid("4111111111111112"))

	// tooLarge is a valid request padded to one byte over the limit.
	pad := payment.MaxBodyBytes + 1 - len(mustBody(map[string]any{"pad": ""}))
	tooLarge := mustBody(map[string]any{"pad": strings.Repeat("a", pad)})
	require.Len(t, tooLarge, payment.MaxBodyBytes+1)
	atLimit := mustBody(map[string]any{"pad": strings.Repeat("a", pad-1)})
	require.Len(t, atLimit, payment.MaxBodyBytes)

	tests := []struct {
		name      string
		body      []byte
		subject   string // "" means the default subject
		noSubject bool
		lim       payment.Limits
		// field is the expected ValidationError.Field; empty for a valid request.
		field  string
		reason string // a substring of the expected reason
		check  func(t *testing.T, r *payment.Request)
	}{
		// Valid requests.
		{name: "minimal", body: mustBody(nil), check: func(t *testing.T, r *payment.Request) {
			require.Equal(t, &payment.Request{
				PaymentID: "pay_123", MerchantID: "m_1", AmountMinor: 1999,
				Currency: "USD", PaymentMethod: "pm_card_visa",
			}, r)
			require.Equal(t, "pay_123", r.EffectiveKey())
		}},
		{name: "all fields", body: mustBody(map[string]any{
			"idempotency_key": "idem-1:abc/XYZ~",
			"customer_id":     "cus_ü",
			"description":     "Order #42, 2 items",
			"metadata":        map[string]string{"order": "42", "note": ""},
			"created_at":      "2025-03-01T12:30:00.5+01:00",
		}), check: func(t *testing.T, r *payment.Request) {
			require.Equal(t, "idem-1:abc/XYZ~", r.IdempotencyKey)
			require.Equal(t, "idem-1:abc/XYZ~", r.EffectiveKey())
			require.Equal(t, "cus_ü", r.CustomerID)
			require.Equal(t, "Order #42, 2 items", r.Description)
			require.Equal(t, map[string]string{"order": "42", "note": ""}, r.Metadata)
			require.True(t, r.CreatedAt.Equal(time.Date(2025, 3, 1, 11, 30, 0, 5e8, time.UTC)))
		}},
		{name: "unknown fields ignored", body: []byte(`{"payment_id":"pay_123","x":{"a":[1,"}",{"b":null}]},"merchant_id":"m_1",` +
			`"amount_minor":1999,"currency":"USD","payment_method":"pm_card_visa","PAYMENT_ID":"other","y":1e400}`),
			check: func(t *testing.T, r *payment.Request) { require.Equal(t, "pay_123", r.PaymentID) }},
		{name: "escaped field name and value", body: []byte(`{"payment\u005fid":"pay\u005f123","merchant_id":"m_1",` +
			`"amount_minor":1999,"currency":"USD","payment_method":"pm_card_visa","description":"caf\u00e9 \"x\""}`),
			check: func(t *testing.T, r *payment.Request) {
				require.Equal(t, "pay_123", r.PaymentID)
				require.Equal(t, `café "x"`, r.Description)
			}},
		{name: "white space", body: []byte(" \n\t{ \"payment_id\" : \"pay_123\" ,\r\n \"merchant_id\":\"m_1\", \"amount_minor\" : 1999 , " +
			"\"currency\":\"USD\",\"payment_method\":\"pm_card_visa\" } \n"),
			check: func(t *testing.T, r *payment.Request) { require.Equal(t, int64(1999), r.AmountMinor) }},
		{name: "idempotency_key null", body: mustBody(map[string]any{"idempotency_key": nil}),
			check: func(t *testing.T, r *payment.Request) { require.Equal(t, "pay_123", r.EffectiveKey()) }},
		{name: "idempotency_key empty", body: mustBody(map[string]any{"idempotency_key": ""}),
			check: func(t *testing.T, r *payment.Request) { require.Equal(t, "pay_123", r.EffectiveKey()) }},
		{name: "idempotency_key 255 bytes", body: mustBody(map[string]any{"idempotency_key": strings.Repeat("~", 255)})},
		{name: "ids of 64 bytes", body: mustBody(map[string]any{"payment_id": strings.Repeat("A-z_9", 12) + "abcd",
			"merchant_id": strings.Repeat("m", 64)}), subject: "payments.requests." + strings.Repeat("m", 64)},
		{name: "customer_id 64 bytes", body: mustBody(map[string]any{"customer_id": strings.Repeat("c", 64)})},
		{name: "optional fields null", body: mustBody(map[string]any{"customer_id": nil, "description": nil, "metadata": nil, "created_at": nil})},
		{name: "amount at default limit", body: mustBody(map[string]any{"amount_minor": payment.DefaultMaxAmountMinor}),
			check: func(t *testing.T, r *payment.Request) { require.Equal(t, payment.DefaultMaxAmountMinor, r.AmountMinor) }},
		{name: "amount max int64 under a max limit", body: mustBody(map[string]any{"amount_minor": raw("9223372036854775807")}),
			lim:   payment.Limits{MaxAmountMinor: 1<<63 - 1},
			check: func(t *testing.T, r *payment.Request) { require.Equal(t, int64(1<<63-1), r.AmountMinor) }},
		{name: "amount one", body: mustBody(map[string]any{"amount_minor": 1})},
		{name: "JPY", body: mustBody(map[string]any{"currency": "JPY", "amount_minor": 500})},
		{name: "BHD", body: mustBody(map[string]any{"currency": "BHD"})},
		{name: "CLF", body: mustBody(map[string]any{"currency": "CLF"})},
		{name: "16-digit number failing Luhn is not a card", body: mustBody(map[string]any{
			"payment_method": "pm_4111111111111112", "description": "ref 4111 1111 1111 1112",
			"metadata": map[string]string{"ref": "4111-1111-1111-1112"}})},
		{name: "card number in customer_id is not checked", body: mustBody(map[string]any{"customer_id": visa})},
		{name: "20-digit run is not a card", body: mustBody(map[string]any{"description": "0000" + visa})},
		{name: "metadata with 20 keys", body: mustBody(map[string]any{"metadata": metadataWithKeys(20)})},
		{name: "metadata key 40 bytes, value 500 bytes", body: mustBody(map[string]any{
			"metadata": map[string]string{strings.Repeat("k", 40): strings.Repeat("v", 500)}})},
		{name: "empty metadata", body: mustBody(map[string]any{"metadata": map[string]string{}}),
			check: func(t *testing.T, r *payment.Request) { require.Nil(t, r.Metadata) }},
		{name: "payment_method 128 bytes, description 500", body: mustBody(map[string]any{
			"payment_method": strings.Repeat("p", 128), "description": strings.Repeat("d", 500)})},
		{name: "body of exactly 65536 bytes", body: atLimit},
		{name: "empty subject skips the check", body: mustBody(map[string]any{"merchant_id": "other"}), noSubject: true},
		{name: "custom subject prefix", body: mustBody(nil), subject: "acme.pay.requests.m_1"},
		{name: "non-ASCII subject prefix", body: mustBody(nil), subject: "paiements-é.requests.m_1"},
		{name: "configured prefix", body: mustBody(nil), subject: "payments.requests.m_1", lim: payment.Limits{SubjectPrefix: "payments"}},
		{name: "configured prefix of two tokens", body: mustBody(nil), subject: "acme.pay.requests.m_1",
			lim: payment.Limits{SubjectPrefix: "acme.pay"}},
		{name: "configured prefix with a requests token", body: mustBody(nil), subject: "eu.requests.requests.m_1",
			lim: payment.Limits{SubjectPrefix: "eu.requests"}},

		// The body.
		{name: "body too large", body: tooLarge, field: "body", reason: "larger than 65536"},
		{name: "body too large and garbage", body: []byte(strings.Repeat("{", payment.MaxBodyBytes+1)), field: "body", reason: "larger"},
		{name: "empty body", body: nil, field: "body", reason: "not valid JSON"},
		{name: "invalid JSON", body: []byte(`{"payment_id":"pay_123",}`), field: "body", reason: "not valid JSON"},
		{name: "trailing data", body: append(mustBody(nil), []byte(`{}`)...), field: "body", reason: "not valid JSON"},
		{name: "array", body: []byte(`[` + string(mustBody(nil)) + `]`), field: "body", reason: "not a JSON object"},
		{name: "string", body: []byte(`"x"`), field: "body", reason: "not a JSON object"},
		{name: "null", body: []byte(`null`), field: "body", reason: "not a JSON object"},
		{name: "number", body: []byte(` 12 `), field: "body", reason: "not a JSON object"},
		{name: "invalid UTF-8", body: mustBodyBytes(nil, `"description":"caf`+"\xe9"+`"`), field: "body", reason: "UTF-8"},
		{name: "UTF-8 BOM", body: append([]byte("\xef\xbb\xbf"), mustBody(nil)...), field: "body", reason: "not valid JSON"},
		{name: "duplicate field", body: mustBodyBytes(nil, `"amount_minor":1`), field: "amount_minor", reason: "more than once"},
		{name: "duplicate field through an escape", body: mustBodyBytes(nil, `"payment\u005fid":"pay_9"`), field: "payment_id", reason: "more than once"},
		{name: "field name in another case is unknown", body: mustBody(map[string]any{"payment_id": absent, "Payment_ID": "pay_1"}),
			field: "payment_id", reason: "required"},

		// amount_minor.
		{name: "amount float", body: mustBody(map[string]any{"amount_minor": raw("100.0")}), field: "amount_minor", reason: "must be an integer literal"},
		{name: "amount fraction", body: mustBody(map[string]any{"amount_minor": raw("19.99")}), field: "amount_minor", reason: "integer literal"},
		{name: "amount exponent", body: mustBody(map[string]any{"amount_minor": raw("1e3")}), field: "amount_minor", reason: "integer literal"},
		{name: "amount upper-case exponent", body: mustBody(map[string]any{"amount_minor": raw("1E+3")}), field: "amount_minor", reason: "integer literal"},
		{name: "amount string", body: mustBody(map[string]any{"amount_minor": "100"}), field: "amount_minor", reason: "integer literal"},
		{name: "amount bool", body: mustBody(map[string]any{"amount_minor": true}), field: "amount_minor", reason: "integer literal"},
		{name: "amount object", body: mustBody(map[string]any{"amount_minor": map[string]int{"v": 1}}), field: "amount_minor", reason: "integer literal"},
		{name: "amount negative", body: mustBody(map[string]any{"amount_minor": -5}), field: "amount_minor", reason: "greater than zero"},
		{name: "amount negative fraction", body: mustBody(map[string]any{"amount_minor": raw("-5.5")}), field: "amount_minor", reason: "integer literal"},
		{name: "amount zero", body: mustBody(map[string]any{"amount_minor": 0}), field: "amount_minor", reason: "greater than zero"},
		{name: "amount minus zero", body: mustBody(map[string]any{"amount_minor": raw("-0")}), field: "amount_minor", reason: "greater than zero"},
		{name: "amount over default limit", body: mustBody(map[string]any{"amount_minor": payment.DefaultMaxAmountMinor + 1}),
			field: "amount_minor", reason: "larger than the maximum of 100000000"},
		{name: "amount over custom limit", body: mustBody(map[string]any{"amount_minor": 5001}), lim: payment.Limits{MaxAmountMinor: 5000},
			field: "amount_minor", reason: "maximum of 5000"},
		{name: "amount over int64", body: mustBody(map[string]any{"amount_minor": raw("9223372036854775808")}),
			lim: payment.Limits{MaxAmountMinor: 1<<63 - 1}, field: "amount_minor", reason: "64-bit"},
		{name: "amount far over int64", body: mustBody(map[string]any{"amount_minor": raw("123456789012345678901234567890")}),
			field: "amount_minor", reason: "64-bit"},
		{name: "amount missing", body: mustBody(map[string]any{"amount_minor": absent}), field: "amount_minor", reason: "required"},
		{name: "amount null", body: mustBody(map[string]any{"amount_minor": nil}), field: "amount_minor", reason: "required"},

		// Identifiers.
		{name: "payment_id missing", body: mustBody(map[string]any{"payment_id": absent}), field: "payment_id", reason: "required"},
		{name: "payment_id null", body: mustBody(map[string]any{"payment_id": nil}), field: "payment_id", reason: "required"},
		{name: "payment_id empty", body: mustBody(map[string]any{"payment_id": ""}), field: "payment_id", reason: "required"},
		{name: "payment_id number", body: mustBody(map[string]any{"payment_id": 123}), field: "payment_id", reason: "must be a string"},
		{name: "payment_id array", body: mustBody(map[string]any{"payment_id": []string{"a"}}), field: "payment_id", reason: "must be a string"},
		{name: "payment_id 65 bytes", body: mustBody(map[string]any{"payment_id": strings.Repeat("p", 65)}), field: "payment_id", reason: "longer than 64"},
		{name: "payment_id space", body: mustBody(map[string]any{"payment_id": "pay 1"}), field: "payment_id", reason: "only A-Z"},
		{name: "payment_id dot", body: mustBody(map[string]any{"payment_id": "pay.1"}), field: "payment_id", reason: "only A-Z"},
		{name: "payment_id non-ASCII", body: mustBody(map[string]any{"payment_id": "payé"}), field: "payment_id", reason: "only A-Z"},
		{name: "merchant_id missing", body: mustBody(map[string]any{"merchant_id": absent}), noSubject: true, field: "merchant_id", reason: "required"},
		{name: "merchant_id 65 bytes", body: mustBody(map[string]any{"merchant_id": strings.Repeat("m", 65)}), noSubject: true,
			field: "merchant_id", reason: "longer than 64"},
		{name: "merchant_id wildcard", body: mustBody(map[string]any{"merchant_id": "m*"}), subject: "payments.requests.m*",
			field: "merchant_id", reason: "only A-Z"},
		{name: "merchant_id bool", body: mustBody(map[string]any{"merchant_id": false}), field: "merchant_id", reason: "must be a string"},
		{name: "idempotency_key 256 bytes", body: mustBody(map[string]any{"idempotency_key": strings.Repeat("k", 256)}),
			field: "idempotency_key", reason: "longer than 255"},
		{name: "idempotency_key space", body: mustBody(map[string]any{"idempotency_key": "key 1"}), field: "idempotency_key", reason: "printable ASCII"},
		{name: "idempotency_key DEL", body: mustBody(map[string]any{"idempotency_key": "key\x7f"}), field: "idempotency_key", reason: "printable ASCII"},
		{name: "idempotency_key non-ASCII", body: mustBody(map[string]any{"idempotency_key": "clé"}), field: "idempotency_key", reason: "printable ASCII"},
		{name: "idempotency_key number", body: mustBody(map[string]any{"idempotency_key": 7}), field: "idempotency_key", reason: "must be a string"},
		{name: "customer_id 65 bytes", body: mustBody(map[string]any{"customer_id": strings.Repeat("c", 65)}), field: "customer_id", reason: "longer than 64"},

		// Subject.
		{name: "subject of another merchant", body: mustBody(nil), subject: "payments.requests.m_2", field: "subject", reason: "merchant_id"},
		{name: "subject with the merchant inside", body: mustBody(nil), subject: "payments.requests.m_1.x", field: "subject", reason: "merchant_id"},
		{name: "subject without a dot", body: mustBody(nil), subject: "m_1", field: "subject", reason: "merchant_id"},
		{name: "subject merchant prefix", body: mustBody(nil), subject: "payments.requests.m_10", field: "subject", reason: "merchant_id"},
		{name: "subject: four tokens", body: mustBody(nil), subject: "payments.requests.m_2.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: four tokens, the merchant's own before", body: mustBody(nil), subject: "payments.requests.m_1.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: four tokens, requests twice", body: mustBody(nil), subject: "payments.requests.requests.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: four tokens, requests twice after another merchant", body: mustBody(nil), subject: "payments.requests.m_2.requests.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: two tokens", body: mustBody(nil), subject: "requests.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: two tokens without requests", body: mustBody(nil), subject: "payments.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: no requests token", body: mustBody(nil), subject: "acme.pay.in.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: requests as the last token", body: mustBody(nil), subject: "payments.m_1.requests", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: empty first token", body: mustBody(nil), subject: ".payments.requests.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: empty prefix token", body: mustBody(nil), subject: "acme..pay.requests.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: empty token before the merchant", body: mustBody(nil), subject: "payments.requests..m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: trailing dot", body: mustBody(nil), subject: "payments.requests.m_1.", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: space in the subject", body: mustBody(nil), subject: "pay ments.requests.m_1", field: "subject", reason: "white space"},
		{name: "subject: NUL in the subject", body: mustBody(nil), subject: "pay\x00ments.requests.m_1", field: "subject", reason: "control character"},
		{name: "subject: unit separator in the subject", body: mustBody(nil), subject: "pay\x1fments.requests.m_1", field: "subject", reason: "control character"},
		{name: "subject: DEL in the subject", body: mustBody(nil), subject: "pay\x7fments.requests.m_1", field: "subject", reason: "control character"},
		{name: "subject: invalid UTF-8 in the subject", body: mustBody(nil), subject: "pay\xffments.requests.m_1", field: "subject", reason: "UTF-8"},
		{name: "subject: four tokens under a configured prefix", body: mustBody(nil), subject: "payments.requests.m_2.m_1", lim: payment.Limits{SubjectPrefix: "payments"}, field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: another prefix than the configured one", body: mustBody(nil), subject: "other.requests.m_1", lim: payment.Limits{SubjectPrefix: "payments"}, field: "subject", reason: "configured prefix"},
		{name: "subject: configured prefix as part of a token", body: mustBody(nil), subject: "payments.requests.m_1", lim: payment.Limits{SubjectPrefix: "pay"}, field: "subject", reason: "configured prefix"},
		{name: "subject: configured prefix then another token", body: mustBody(nil), subject: "payments.x.requests.m_1", lim: payment.Limits{SubjectPrefix: "payments"}, field: "subject", reason: "configured prefix"},
		{name: "subject: one token of a configured two-token prefix", body: mustBody(nil), subject: "pay.requests.m_1", lim: payment.Limits{SubjectPrefix: "acme.pay"}, field: "subject", reason: "configured prefix"},
		{name: "subject: three tokens under a configured two-token prefix", body: mustBody(nil), subject: "acme.pay.requests.m_2.m_1", lim: payment.Limits{SubjectPrefix: "acme.pay"}, field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},
		{name: "subject: prefix with a requests token needs configuring", body: mustBody(nil), subject: "eu.requests.requests.m_1", field: "subject", reason: "must be <prefix>.requests.<merchant_id>"},

		// Currency.
		{name: "currency lower-case", body: mustBody(map[string]any{"currency": "usd"}), field: "currency", reason: "upper-case"},
		{name: "currency mixed case", body: mustBody(map[string]any{"currency": "Usd"}), field: "currency", reason: "upper-case"},
		{name: "currency two letters", body: mustBody(map[string]any{"currency": "US"}), field: "currency", reason: "three upper-case"},
		{name: "currency four letters", body: mustBody(map[string]any{"currency": "USDT"}), field: "currency", reason: "three upper-case"},
		{name: "currency numeric code", body: mustBody(map[string]any{"currency": "840"}), field: "currency", reason: "three upper-case"},
		{name: "XAF", body: mustBody(map[string]any{"currency": "XAF", "amount_minor": 5000})},
		{name: "XOF", body: mustBody(map[string]any{"currency": "XOF"})},
		{name: "XPF", body: mustBody(map[string]any{"currency": "XPF"})},
		{name: "XCD", body: mustBody(map[string]any{"currency": "XCD"})},
		{name: "XCG", body: mustBody(map[string]any{"currency": "XCG"})},
		{name: "currency XAU", body: mustBody(map[string]any{"currency": "XAU"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XAG", body: mustBody(map[string]any{"currency": "XAG"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XPD", body: mustBody(map[string]any{"currency": "XPD"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XPT", body: mustBody(map[string]any{"currency": "XPT"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XDR", body: mustBody(map[string]any{"currency": "XDR"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XBA", body: mustBody(map[string]any{"currency": "XBA"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XBB", body: mustBody(map[string]any{"currency": "XBB"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XBC", body: mustBody(map[string]any{"currency": "XBC"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XBD", body: mustBody(map[string]any{"currency": "XBD"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XSU", body: mustBody(map[string]any{"currency": "XSU"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XUA", body: mustBody(map[string]any{"currency": "XUA"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XTS", body: mustBody(map[string]any{"currency": "XTS"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency XXX", body: mustBody(map[string]any{"currency": "XXX"}), field: "currency", reason: "not currencies that can be charged"},
		{name: "currency ANG, replaced by XCG", body: mustBody(map[string]any{"currency": "ANG"}), field: "currency", reason: "not an active ISO 4217"},
		{name: "currency unknown", body: mustBody(map[string]any{"currency": "ABC"}), field: "currency", reason: "not an active ISO 4217"},
		{name: "currency withdrawn", body: mustBody(map[string]any{"currency": "HRK"}), field: "currency", reason: "not an active ISO 4217"},
		{name: "currency missing", body: mustBody(map[string]any{"currency": absent}), field: "currency", reason: "required"},
		{name: "currency number", body: mustBody(map[string]any{"currency": 840}), field: "currency", reason: "must be a string"},

		// payment_method and description.
		{name: "payment_method missing", body: mustBody(map[string]any{"payment_method": absent}), field: "payment_method", reason: "required"},
		{name: "payment_method empty", body: mustBody(map[string]any{"payment_method": ""}), field: "payment_method", reason: "required"},
		{name: "payment_method 129 bytes", body: mustBody(map[string]any{"payment_method": strings.Repeat("p", 129)}),
			field: "payment_method", reason: "longer than 128"},
		{name: "payment_method object", body: mustBody(map[string]any{"payment_method": map[string]string{"card": "x"}}),
			field: "payment_method", reason: "must be a string"},
		{name: "card in payment_method", body: mustBody(map[string]any{"payment_method": visa}), field: "payment_method", reason: "raw card number"},
		{name: "card in payment_method with spaces", body: mustBody(map[string]any{"payment_method": "card 4111 1111 1111 1111"}),
			field: "payment_method", reason: "raw card number"},
		{name: "amex in payment_method with dashes", body: mustBody(map[string]any{"payment_method": "3782-822463-10005"}),
			field: "payment_method", reason: "raw card number"},
		{name: "card in payment_method escaped", body: mustBodyBytes(map[string]any{"payment_method": absent}, `"payment_method":"\u0034111111111111111"`), field: "payment_method", reason: "raw card number"},
		{name: "description 501 bytes", body: mustBody(map[string]any{"description": strings.Repeat("d", 501)}), field: "description", reason: "longer than 500"},
		{name: "description number", body: mustBody(map[string]any{"description": 1}), field: "description", reason: "must be a string"},
		{name: "card in description", body: mustBody(map[string]any{"description": "pay with " + nineteen + " please"}),
			field: "description", reason: "raw card number"},
		{name: "card in description with dashes", body: mustBody(map[string]any{"description": "4111-1111-1111-1111"}),
			field: "description", reason: "raw card number"},

		// metadata.
		{name: "metadata 21 keys", body: mustBody(map[string]any{"metadata": metadataWithKeys(21)}), field: "metadata", reason: "more than 20 keys"},
		{name: "metadata key 41 bytes", body: mustBody(map[string]any{"metadata": map[string]string{strings.Repeat("k", 41): "v"}}),
			field: "metadata", reason: "keys must be 1 to 40"},
		{name: "metadata empty key", body: mustBody(map[string]any{"metadata": map[string]string{"": "v"}}), field: "metadata", reason: "keys must be 1 to 40"},
		{name: "metadata value 501 bytes", body: mustBody(map[string]any{"metadata": map[string]string{"k": strings.Repeat("v", 501)}}),
			field: "metadata", reason: "at most 500"},
		{name: "metadata number value", body: mustBody(map[string]any{"metadata": map[string]any{"k": 1}}), field: "metadata", reason: "object of strings"},
		{name: "metadata null value", body: mustBody(map[string]any{"metadata": map[string]any{"k": nil}}), field: "metadata", reason: "object of strings"},
		{name: "metadata nested object", body: mustBody(map[string]any{"metadata": map[string]any{"k": map[string]string{}}}),
			field: "metadata", reason: "object of strings"},
		{name: "metadata array", body: mustBody(map[string]any{"metadata": []string{"a"}}), field: "metadata", reason: "object of strings"},
		{name: "metadata string", body: mustBody(map[string]any{"metadata": "a=b"}), field: "metadata", reason: "object of strings"},
		{name: "metadata duplicate key", body: mustBody(map[string]any{"metadata": raw(`{"k":"a","\u006b":"b"}`)}), field: "metadata", reason: "more than once"},
		{name: "card in metadata", body: mustBody(map[string]any{"metadata": map[string]string{"a": "x", "k": visa}}),
			field: "metadata", reason: "raw card number"},
		{name: "card in metadata with spaces", body: mustBody(map[string]any{"metadata": map[string]string{"k": "PAN: 4111 1111 1111 1111."}}),
			field: "metadata", reason: "raw card number"},
		{name: "card in metadata with dashes", body: mustBody(map[string]any{"metadata": map[string]string{"k": "3782-822463-10005"}}),
			field: "metadata", reason: "raw card number"},

		// created_at.
		{name: "created_at date only", body: mustBody(map[string]any{"created_at": "2025-03-01"}), field: "created_at", reason: "RFC 3339"},
		{name: "created_at words", body: mustBody(map[string]any{"created_at": "yesterday"}), field: "created_at", reason: "RFC 3339"},
		{name: "created_at without zone", body: mustBody(map[string]any{"created_at": "2025-03-01T12:00:00"}), field: "created_at", reason: "RFC 3339"},
		{name: "created_at number", body: mustBody(map[string]any{"created_at": 1740830400}), field: "created_at", reason: "RFC 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			subj := tt.subject
			switch {
			case tt.noSubject:
				subj = ""
			case subj == "":
				subj = subject
			}
			r, err := payment.Decode(subj, tt.body, tt.lim)
			if tt.field == "" {
				require.NoError(t, err)
				require.NotNil(t, r)
				require.NoError(t, r.Validate(tt.lim))
				if tt.check != nil {
					tt.check(t, r)
				}
				return
			}
			require.Nil(t, r)
			require.ErrorIs(t, err, payment.ErrInvalid)
			var ve *payment.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Field)
			require.Contains(t, ve.Reason, tt.reason)
			requireNoEcho(t, err, tt.body)
		})
	}
}

// mustBodyBytes returns mustBody(over) with the raw JSON members added at
// its end (after the other fields, so a repeated name is a duplicate).
func mustBodyBytes(over map[string]any, members string) []byte {
	b := mustBody(over)
	return append(b[:len(b)-1], []byte(","+members+"}")...)
}

// requireNoEcho checks that err says nothing taken from body: no card
// number, and no string of the body except field names.
func requireNoEcho(t *testing.T, err error, body []byte) {
	t.Helper()
	msg := err.Error()
	require.Less(t, len(msg), 200, "error message too long")
	require.False(t, refContainsCard(msg), "error contains a card number")
	for _, s := range stringsIn(body) {
		if len(s) < 4 || strings.Contains(strings.Join(fieldNames(), " "), s) {
			continue
		}
		require.NotContains(t, msg, s, "error echoes a value of the body")
	}
}

func TestValidationError(t *testing.T) {
	t.Parallel()

	_, err := payment.Decode(subject, mustBody(map[string]any{"amount_minor": raw("100.0")}), payment.Limits{})
	require.EqualError(t, err, "invalid payment request: amount_minor: must be an integer literal")

	wrapped := errors.Join(errors.New("decode message 7"), err)
	require.ErrorIs(t, wrapped, payment.ErrInvalid)
	var ve *payment.ValidationError
	require.ErrorAs(t, wrapped, &ve)
	require.Equal(t, "amount_minor", ve.Field)
}

func TestValidate(t *testing.T) {
	t.Parallel()

	valid := func() *payment.Request {
		return &payment.Request{
			PaymentID: "pay_1", MerchantID: "m_1", AmountMinor: 100,
			Currency: "EUR", PaymentMethod: "pm_card_visa",
		}
	}
	tests := []struct {
		name   string
		modify func(r *payment.Request)
		lim    payment.Limits
		field  string // empty: valid
	}{
		{name: "valid", modify: func(*payment.Request) {}},
		{name: "negative limit means default", modify: func(r *payment.Request) { r.AmountMinor = payment.DefaultMaxAmountMinor },
			lim: payment.Limits{MaxAmountMinor: -1}},
		{name: "over negative limit's default", modify: func(r *payment.Request) { r.AmountMinor = payment.DefaultMaxAmountMinor + 1 },
			lim: payment.Limits{MaxAmountMinor: -1}, field: "amount_minor"},
		{name: "custom limit", modify: func(r *payment.Request) { r.AmountMinor = 101 }, lim: payment.Limits{MaxAmountMinor: 100}, field: "amount_minor"},
		{name: "negative amount", modify: func(r *payment.Request) { r.AmountMinor = -1 }, field: "amount_minor"},
		{name: "zero amount", modify: func(r *payment.Request) { r.AmountMinor = 0 }, field: "amount_minor"},
		{name: "invalid UTF-8 in description", modify: func(r *payment.Request) { r.Description = "a\xffb" }, field: "description"},
		{name: "invalid UTF-8 in customer_id", modify: func(r *payment.Request) { r.CustomerID = "\xc3" }, field: "customer_id"},
		{name: "invalid UTF-8 in payment_method", modify: func(r *payment.Request) { r.PaymentMethod = "pm_\xff" }, field: "payment_method"},
		{name: "invalid UTF-8 in metadata key", modify: func(r *payment.Request) { r.Metadata = map[string]string{"\xff": "v"} }, field: "metadata"},
		{name: "invalid UTF-8 in metadata value", modify: func(r *payment.Request) { r.Metadata = map[string]string{"k": "\xff"} }, field: "metadata"},
		{name: "metadata 21 keys", modify: func(r *payment.Request) { r.Metadata = metadataWithKeys(21) }, field: "metadata"},
		{name: "created_at year 10000", modify: func(r *payment.Request) { r.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, field: "created_at"},
		{name: "created_at zone of 24h", modify: func(r *payment.Request) {
			r.CreatedAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))
		}, field: "created_at"},
		{name: "created_at fine", modify: func(r *payment.Request) { r.CreatedAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.Local) }},
		{name: "card in metadata value", modify: func(r *payment.Request) {
			r.Metadata = map[string]string{"k": "5555 5555 5555 4444"}
		}, field: "metadata"},
		{name: "NUL in customer_id", modify: func(r *payment.Request) { r.CustomerID = "c\x00" }, field: "customer_id"},
		{name: "newline in customer_id", modify: func(r *payment.Request) { r.CustomerID = "c\n" }, field: "customer_id"},
		{name: "unit separator in payment_method", modify: func(r *payment.Request) { r.PaymentMethod = "pm\x1f" }, field: "payment_method"},
		{name: "tab in payment_method", modify: func(r *payment.Request) { r.PaymentMethod = "pm\t" }, field: "payment_method"},
		{name: "escape in description", modify: func(r *payment.Request) { r.Description = "\x1b[31mred" }, field: "description"},
		{name: "carriage return in description", modify: func(r *payment.Request) { r.Description = "a\r\nb" }, field: "description"},
		{name: "tab and newline in description", modify: func(r *payment.Request) { r.Description = "a\tb\nc" }},
		{name: "NUL in metadata key", modify: func(r *payment.Request) { r.Metadata = map[string]string{"k\x00": "v"} }, field: "metadata"},
		{name: "tab in metadata key", modify: func(r *payment.Request) { r.Metadata = map[string]string{"k\t": "v"} }, field: "metadata"},
		{name: "NUL in metadata value", modify: func(r *payment.Request) { r.Metadata = map[string]string{"k": "v\x00"} }, field: "metadata"},
		{name: "tab and newline in metadata value", modify: func(r *payment.Request) { r.Metadata = map[string]string{"k": "a\tb\nc"} }},
		{name: "DEL in customer_id", modify: func(r *payment.Request) { r.CustomerID = "c\x7f" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := valid()
			tt.modify(r)
			err := r.Validate(tt.lim)
			if tt.field == "" {
				require.NoError(t, err)
				// A valid Request round-trips through its body.
				body, err := r.Marshal()
				require.NoError(t, err)
				got, err := payment.Decode("payments.requests."+r.MerchantID, body, tt.lim)
				require.NoError(t, err)
				require.Equal(t, r.Fingerprint(), got.Fingerprint())
				return
			}
			require.ErrorIs(t, err, payment.ErrInvalid)
			var ve *payment.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Field)
			require.False(t, refContainsCard(err.Error()))
		})
	}
}

func TestLimitsWithDefaults(t *testing.T) {
	t.Parallel()
	require.Equal(t, payment.DefaultMaxAmountMinor, payment.Limits{}.WithDefaults().MaxAmountMinor)
	require.Equal(t, int64(7), payment.Limits{MaxAmountMinor: 7}.WithDefaults().MaxAmountMinor)
}

// TestDecodeControlCharacters puts each C0 control character (0x00 to 0x1F)
// into each string field, written as JSON escapes (the only way a valid
// JSON body can carry one): every one is invalid, except tab and newline in
// description and metadata values.
func TestDecodeControlCharacters(t *testing.T) {
	t.Parallel()

	fields := []struct {
		name string
		// over returns the fields to set, holding s.
		over func(s string) map[string]any
		// field is the ValidationError.Field expected.
		field string
		// multiline fields accept tab and newline.
		multiline bool
		// reason is the expected reason; "" means "contains a control character".
		reason string
	}{
		{name: "payment_id", over: func(s string) map[string]any { return map[string]any{"payment_id": "pay" + s + "1"} },
			field: "payment_id", reason: "only A-Z"},
		{name: "idempotency_key", over: func(s string) map[string]any { return map[string]any{"idempotency_key": "key" + s + "1"} },
			field: "idempotency_key", reason: "printable ASCII"},
		{name: "merchant_id", over: func(s string) map[string]any { return map[string]any{"merchant_id": "m_1" + s} },
			field: "merchant_id", reason: "only A-Z"},
		{name: "customer_id", over: func(s string) map[string]any { return map[string]any{"customer_id": "cus" + s + "1"} },
			field: "customer_id"},
		{name: "currency", over: func(s string) map[string]any { return map[string]any{"currency": "U" + s + "D"} },
			field: "currency", reason: "three upper-case"},
		{name: "payment_method", over: func(s string) map[string]any { return map[string]any{"payment_method": "pm_card" + s + "visa"} },
			field: "payment_method"},
		{name: "description", over: func(s string) map[string]any { return map[string]any{"description": "line one" + s + "line two"} },
			field: "description", multiline: true},
		{name: "metadata key", over: func(s string) map[string]any {
			return map[string]any{"metadata": map[string]string{"a": "b", "k" + s: "v"}}
		}, field: "metadata", reason: "a key contains a control character"},
		{name: "metadata value", over: func(s string) map[string]any {
			return map[string]any{"metadata": map[string]string{"a": "b", "k": "v" + s + "w"}}
		}, field: "metadata", multiline: true},
		{name: "created_at", over: func(s string) map[string]any { return map[string]any{"created_at": "2025-03-01T12:30:00" + s + "Z"} },
			field: "created_at", reason: "RFC 3339"},
	}
	for _, f := range fields {
		for c := range 0x20 {
			t.Run(fmt.Sprintf("%s/%#02x", f.name, c), func(t *testing.T) {
				t.Parallel()
				body := mustBody(f.over(string(rune(c))))
				require.NotContains(t, string(body), string(rune(c)), "the body carries the character escaped")
				r, err := payment.Decode(subject, body, payment.Limits{})
				if f.multiline && (c == '\t' || c == '\n') {
					require.NoError(t, err, "%s may contain tab and newline", f.name)
					require.NotNil(t, r)
					return
				}
				require.Nil(t, r)
				var ve *payment.ValidationError
				require.ErrorAs(t, err, &ve)
				require.Equal(t, f.field, ve.Field)
				switch {
				case f.reason != "":
					require.Contains(t, ve.Reason, f.reason)
				default:
					require.Contains(t, ve.Reason, "control character")
				}
				requireNoEcho(t, err, body)
			})
		}
	}

	// The short escapes of JSON decode to control characters too, and
	// escapes in a field name do not hide the field.
	short := []struct {
		name, members string
		field         string // empty: valid
	}{
		{name: `\u0000 in customer_id`, members: `"customer_id":"c\u0000"`, field: "customer_id"},
		{name: `\b in payment_method`, members: `"payment_method":"pm\b"`, field: "payment_method"},
		{name: `\f in description`, members: `"description":"a\fb"`, field: "description"},
		{name: `\r in description`, members: `"description":"a\r\nb"`, field: "description"},
		{name: `\n and \t in description`, members: `"description":"a\n\tb"`},
		{name: `\r in a metadata value`, members: `"metadata":{"k":"a\rb"}`, field: "metadata"},
		{name: `\n in a metadata key`, members: `"metadata":{"k\n":"v"}`, field: "metadata"},
		{name: `\u001f in an escaped field name`, members: `"customer\u005fid":"c\u001f"`, field: "customer_id"},
		{name: `NUL in an unknown field is ignored`, members: `"x":"\u0000"`},
		{name: "DEL is not C0", members: `"customer_id":"c\u007f","description":"d` + "\x7f" + `"`},
		{name: "C1 controls are not C0", members: `"customer_id":"c\u0085","description":"d\u009f"`},
	}
	for _, tt := range short {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var over map[string]any
			if strings.HasPrefix(tt.members, `"payment_method"`) {
				over = map[string]any{"payment_method": absent}
			}
			body := mustBodyBytes(over, tt.members)
			r, err := payment.Decode(subject, body, payment.Limits{})
			if tt.field == "" {
				require.NoError(t, err)
				require.NotNil(t, r)
				return
			}
			var ve *payment.ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tt.field, ve.Field)
			require.Contains(t, ve.Reason, "control character")
		})
	}
}

// TestValidateTextAtEveryPosition puts a control character, and invalid
// UTF-8, at every position of strings long enough to be read eight bytes at
// a time, among printable ASCII, DEL and non-ASCII text.
func TestValidateTextAtEveryPosition(t *testing.T) {
	t.Parallel()
	for _, base := range []string{strings.Repeat("abcdefgh", 3), strings.Repeat("a~\x7f ", 6), "é" + strings.Repeat("x", 21)} {
		require.NoError(t, (&payment.Request{PaymentID: "p", MerchantID: "m", AmountMinor: 1, Currency: "EUR",
			PaymentMethod: base, Description: base, Metadata: map[string]string{base: base}}).Validate(payment.Limits{}))
		for i := range len(base) + 1 {
			if i < len(base) && base[i]&0xc0 == 0x80 {
				continue // inside a character
			}
			for _, ins := range []string{"\x00", "\x1f", "\r", "\t", "\xff"} {
				s := base[:i] + ins + base[i:]
				r := &payment.Request{PaymentID: "p", MerchantID: "m", AmountMinor: 1, Currency: "EUR", PaymentMethod: "pm", CustomerID: s}
				err := r.Validate(payment.Limits{})
				var ve *payment.ValidationError
				require.ErrorAs(t, err, &ve, "%q", s)
				require.Equal(t, "customer_id", ve.Field)
				r = &payment.Request{PaymentID: "p", MerchantID: "m", AmountMinor: 1, Currency: "EUR", PaymentMethod: "pm", Description: s}
				if err := r.Validate(payment.Limits{}); ins == "\t" {
					require.NoError(t, err, "%q", s)
				} else {
					require.ErrorAs(t, err, &ve, "%q", s)
					require.Equal(t, "description", ve.Field)
				}
			}
		}
	}
}
