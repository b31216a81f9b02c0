package payment_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/paystream/paystream/payment"
)

// fuzzSeeds are the bodies added to the corpus of FuzzDecode; more are
// committed under testdata/fuzz/FuzzDecode.
func fuzzSeeds() []string {
	return []string{
		typicalBody,
		string(mustBody(nil)),
		string(mustBody(map[string]any{"amount_minor": raw("100.0")})),
		string(mustBody(map[string]any{"amount_minor": raw("1e3")})),
		string(mustBody(map[string]any{"amount_minor": "100"})),
		string(mustBody(map[string]any{"amount_minor": raw("9223372036854775808")})),
		string(mustBody(map[string]any{"payment_method": "4111 1111 1111 1111"})),
		string(mustBody(map[string]any{"metadata": map[string]any{"k": 1}})),
		string(mustBody(map[string]any{"idempotency_key": nil, "created_at": "2025-03-01T12:30:00.5+01:00"})),
		string(mustBodyBytes(nil, `"payment\u005fid":"x"`)),
		`{"payment_id":"p","merchant_id":"m_1","amount_minor":1,"currency":"JPY","payment_method":"\u0070m","x":[{"}":"]"}]}`,
		`[]`, `{}`, `{"a":`, "{\"description\":\"\xff\"}", ``,
	}
}

// FuzzDecode checks that Decode never panics, returns only ErrInvalid
// errors free of card numbers, and that what it accepts is valid, agrees
// with encoding/json, and round-trips through Marshal to the same
// fingerprint.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(subject, []byte(s))
		f.Add("", []byte(s))
	}
	lim := payment.Limits{MaxAmountMinor: 1 << 40}
	f.Fuzz(func(t *testing.T, subj string, body []byte) {
		orig := bytes.Clone(body)
		r, err := payment.Decode(subj, body, lim)
		if !bytes.Equal(orig, body) {
			t.Fatal("Decode modified its input")
		}
		if err != nil {
			if r != nil {
				t.Fatal("both a request and an error")
			}
			if !errorsIsInvalid(err) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			if refContainsCard(err.Error()) {
				t.Fatalf("error %q holds a card number", err)
			}
			return
		}
		if err := r.Validate(lim); err != nil {
			t.Fatalf("decoded request is invalid: %v", err)
		}
		checkAgainstEncodingJSON(t, body, r)

		out, err := r.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		r2, err := payment.Decode(subj, out, lim)
		if err != nil {
			t.Fatalf("decoding %q, marshaled from %q: %v", out, body, err)
		}
		if r.Fingerprint() != r2.Fingerprint() {
			t.Fatalf("fingerprint changed over a round trip of %q", body)
		}
		if r.EffectiveKey() != r2.EffectiveKey() || r.Description != r2.Description ||
			len(r.Metadata) != len(r2.Metadata) || !r.CreatedAt.Equal(r2.CreatedAt) {
			t.Fatalf("round trip of %q changed the request: %+v, %+v", body, r, r2)
		}
	})
}

func errorsIsInvalid(err error) bool {
	ve, ok := err.(*payment.ValidationError)
	return ok && ve.Unwrap() == payment.ErrInvalid && ve.Field != "" && ve.Reason != ""
}

// checkAgainstEncodingJSON decodes an accepted body with encoding/json into
// a map (exact key matching) and checks that it agrees with r.
func checkAgainstEncodingJSON(t *testing.T, body []byte, r *payment.Request) {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
	}
	str := func(k string) string {
		s, _ := m[k].(string)
		return s
	}
	if str("payment_id") != r.PaymentID || str("merchant_id") != r.MerchantID || str("currency") != r.Currency ||
		str("payment_method") != r.PaymentMethod || str("customer_id") != r.CustomerID ||
		str("idempotency_key") != r.IdempotencyKey || str("description") != r.Description {
		t.Fatalf("accepted %q as %+v, which encoding/json reads differently", body, r)
	}
	if n, _ := m["amount_minor"].(json.Number); string(n) != strconv.FormatInt(r.AmountMinor, 10) {
		t.Fatalf("amount of %q read as %d", body, r.AmountMinor)
	}
	md, _ := m["metadata"].(map[string]any)
	if len(md) != len(r.Metadata) {
		t.Fatalf("metadata of %q read as %v", body, r.Metadata)
	}
	for k, v := range md {
		if s, ok := v.(string); !ok || r.Metadata[k] != s {
			t.Fatalf("metadata of %q read as %v", body, r.Metadata)
		}
	}
}

// FuzzMaskCardNumbers checks MaskCardNumbers and ContainsCardNumber against
// the brute-force reference: same length, only digits of cards turned into
// '*', every card masked but its last four digits, and no card left. It
// checks MaskCardNumbersJSON on the same input, and on the input read as
// the pieces of a JSON document with escaped digits: no card left in clear
// nor, once JSON-decoded, in any string; a valid document stays valid.
func FuzzMaskCardNumbers(f *testing.F) {
	for _, s := range []string{
		"", "4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111",
		"x 3782 822463 10005 y", "00004111111111111111", "4111111111111112",
		`{"payment_method":"5555555555554444","description":"4222222222222"}`,
		"4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
		"41111111111111119 2345 6789 0123",
		"0000 1234 4111 1111 1111 1111",
		`{"description":"\u0034\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031\u0031"}`,
		`{"d":"4111\u00201111\u00201111\u00201111","m":{"k":"41\u00311111111111111"}}`,
		`{"n":4111111111111111,"d":"4111111111111111\u0030"}`,
		`{"d":"\\u0034111111111111111"}`,
		`ref \u4111111111111111`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkMasking(t, b)
		// Random bytes seldom make long digit chains; the same input read
		// in an alphabet of digits and separators makes little else.
		const alphabet = "0123456789012345678901234567890123456789  -x*"
		dense := make([]byte, len(b))
		for i, c := range b {
			dense[i] = alphabet[int(c)%len(alphabet)]
		}
		checkMasking(t, dense)
		checkJSONMasking(t, b)
		checkJSONMasking(t, denseJSON(b))
	})
}
