package payment_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

func TestCurrencyExponent(t *testing.T) {
	t.Parallel()

	tests := []struct {
		code string
		exp  int
		ok   bool
	}{
		{"USD", 2, true},
		{"EUR", 2, true},
		{"GBP", 2, true},
		{"JPY", 0, true},
		{"KRW", 0, true},
		{"ISK", 0, true},
		{"CLP", 0, true},
		{"BHD", 3, true},
		{"KWD", 3, true},
		{"JOD", 3, true},
		{"TND", 3, true},
		{"CLF", 4, true},
		{"UYW", 4, true},
		{"ZWG", 2, true},
		{"SLE", 2, true},
		{"VES", 2, true},
		{"usd", 0, false},
		{"Usd", 0, false},
		{"", 0, false},
		{"US", 0, false},
		{"USDX", 0, false},
		{"ABC", 0, false},
		{"HRK", 0, false}, // replaced by EUR in 2023
		{"ZWL", 0, false}, // replaced by ZWG in 2024
		{"VEF", 0, false},
		{"XXX", 0, false},
		{"XTS", 0, false},
		{"XAU", 0, false},
		{"XAG", 0, false},
		{"XPT", 0, false},
		{"XPD", 0, false},
		{"XDR", 0, false},
		{"XBA", 0, false},
		{"XSU", 0, false},
		{"XUA", 0, false},
		{"XBB", 0, false},
		{"XBC", 0, false},
		{"XBD", 0, false},
		// The supranational currencies are real currencies.
		{"XAF", 0, true},  // Central African CFA franc
		{"XOF", 0, true},  // West African CFA franc
		{"XPF", 0, true},  // CFP franc
		{"XCD", 2, true},  // East Caribbean dollar
		{"XCG", 2, true},  // Caribbean guilder, since 2025
		{"ANG", 0, false}, // replaced by XCG in 2025
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			exp, ok := payment.CurrencyExponent(tt.code)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.exp, exp)
		})
	}
}

// TestCurrencyExponentTable checks the whole table: every accepted code is
// three upper-case letters with exponent 0 to 4, the only X codes accepted
// are the five supranational currencies, and Validate accepts exactly the
// codes that CurrencyExponent knows.
func TestCurrencyExponentTable(t *testing.T) {
	t.Parallel()
	count := 0
	var xCodes []string
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			for c := 'A'; c <= 'Z'; c++ {
				code := string([]rune{a, b, c})
				exp, ok := payment.CurrencyExponent(code)
				r := payment.Request{PaymentID: "p", MerchantID: "m", AmountMinor: 1, Currency: code, PaymentMethod: "pm"}
				require.Equal(t, ok, r.Validate(payment.Limits{}) == nil, code)
				if !ok {
					continue
				}
				count++
				if a == 'X' {
					xCodes = append(xCodes, code)
				}
				require.Contains(t, []int{0, 2, 3, 4}, exp, code)
			}
		}
	}
	require.Equal(t, []string{"XAF", "XCD", "XCG", "XOF", "XPF"}, xCodes)
	// ISO 4217 list one has about 180 codes, fewer the X codes that are
	// not currencies.
	require.Greater(t, count, 150)
	require.Less(t, count, 180)
}
