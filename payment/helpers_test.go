package payment_test

import (
	"encoding/json"
	"strings"
)

// This file holds reference implementations that the tests compare the
// package against. They are deliberately simple and slow.

// luhnValid reports whether the decimal digits of s pass the Luhn check.
func luhnValid(s string) bool {
	sum := 0
	for i := 0; i < len(s); i++ {
		d := int(s[len(s)-1-i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// withCheckDigit appends the Luhn check digit to the digits of s.
func withCheckDigit(s string) string {
	for d := byte('0'); d <= '9'; d++ {
		if luhnValid(s + string(d)) {
			return s + string(d)
		}
	}
	panic("unreachable")
}

func isDigitByte(c byte) bool { return '0' <= c && c <= '9' }

// refCardSpans returns, by brute force over every substring, the byte spans
// [start, end) of every raw card number in b: a substring that starts and
// ends with a digit, whose non-digits are single spaces or dashes between
// digits, that is not preceded or followed by a digit, holds 13 to 19 digits
// and passes the Luhn check.
func refCardSpans(b []byte) [][2]int {
	var spans [][2]int
	for i := range b {
		if !isDigitByte(b[i]) || (i > 0 && isDigitByte(b[i-1])) {
			continue
		}
		for j := i + 1; j <= len(b) && j-i <= 19+18; j++ {
			sub := b[i:j]
			if !isDigitByte(sub[len(sub)-1]) || (j < len(b) && isDigitByte(b[j])) {
				continue
			}
			digits, ok := []byte{}, true
			for k, c := range sub {
				switch {
				case isDigitByte(c):
					digits = append(digits, c)
				case (c == ' ' || c == '-') && isDigitByte(sub[k-1]) && isDigitByte(sub[k+1]):
				default:
					ok = false
				}
				if !ok {
					break
				}
			}
			if ok && len(digits) >= 13 && len(digits) <= 19 && luhnValid(string(digits)) {
				spans = append(spans, [2]int{i, j})
			}
		}
	}
	return spans
}

// refContainsCard reports whether s holds a raw card number, by brute force.
func refContainsCard(s string) bool { return len(refCardSpans([]byte(s))) > 0 }

// absent, as a value in the map given to mustBody, deletes the field.
const absent = "\x00absent"

// mustBody returns the JSON body of a valid request, with the fields of over
// replacing (or, for absent, deleting) the defaults. A json.RawMessage value
// is copied into the body as is.
func mustBody(over map[string]any) []byte {
	m := map[string]any{
		"payment_id":     "pay_123",
		"merchant_id":    "m_1",
		"amount_minor":   1999,
		"currency":       "USD",
		"payment_method": "pm_card_visa",
	}
	for k, v := range over {
		if v == any(absent) {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// stringsIn returns every string (keys included) in the JSON document b,
// or nil when b is not valid JSON.
func stringsIn(b []byte) []string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for k, e := range v {
				out = append(out, k)
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// fieldNames returns the JSON names that an error may legitimately contain.
func fieldNames() []string {
	return strings.Fields("payment_id idempotency_key merchant_id customer_id amount_minor currency payment_method description metadata created_at")
}
