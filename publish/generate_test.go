package publish_test

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/publish"
)

func TestGenOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts publish.GenOptions
		want []string
	}{
		{"zero is fine", publish.GenOptions{}, nil},
		{"all duplicates", publish.GenOptions{Duplicates: 1}, nil},
		{"negative duplicates", publish.GenOptions{Duplicates: -0.1}, []string{"duplicates -0.1"}},
		{"invalid over one", publish.GenOptions{Invalid: 1.5}, []string{"invalid 1.5"}},
		{"NaN", publish.GenOptions{Invalid: math.NaN()}, []string{"invalid NaN"}},
		{"sum over one", publish.GenOptions{Duplicates: 0.6, Invalid: 0.6}, []string{"must not exceed 1"}},
		{"negative merchants", publish.GenOptions{Merchants: -1, Duplicates: 2}, []string{"merchants -1", "duplicates 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.opts.Validate()
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
	require.Panics(t, func() { publish.Generate(1, 0, publish.GenOptions{Invalid: 2}) })
	require.Panics(t, func() { publish.Generate(1, -1, publish.GenOptions{}) })
}

func TestGenerateDeterministic(t *testing.T) {
	t.Parallel()
	opts := publish.GenOptions{Merchants: 5, Duplicates: 0.2, Invalid: 0.2, CreatedAt: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
	differ := 0
	// Backwards, so that nothing depends on the order of generation.
	for i := 299; i >= 0; i-- {
		a := publish.Generate(42, i, opts)
		b := publish.Generate(42, i, opts)
		require.Equal(t, a, b, "item %d", i)
		if !bytes.Equal(a.Body, publish.Generate(43, i, opts).Body) {
			differ++
		}
	}
	require.Equal(t, 300, differ, "another seed gives other bodies")
}

func TestGenerateLoad(t *testing.T) {
	t.Parallel()
	const n = 4000
	opts := publish.GenOptions{Merchants: 7, Duplicates: 0.1, Invalid: 0.05, CreatedAt: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}

	counts := map[publish.Kind]int{}
	invalidKinds := map[string]int{}
	currencies := map[string]int{}
	merchants := map[string]bool{}
	msgIDs := map[string]int{}
	declined := 0
	for i := range n {
		it := publish.Generate(7, i, opts)
		require.Equal(t, i, it.Index)
		counts[it.Kind]++
		msgIDs[it.MsgID]++
		subject := "payments.requests." + it.Merchant

		switch it.Kind {
		case publish.KindValid:
			require.Equal(t, -1, it.DuplicateOf)
			require.Empty(t, it.Invalid)
			require.Equal(t, it.PaymentID, it.MsgID)
			got, err := payment.Decode(subject, it.Body, payment.Limits{})
			require.NoError(t, err, "item %d: %s", i, it.Body)
			require.Equal(t, it.Request, got)
			require.Equal(t, opts.CreatedAt.Add(time.Duration(i)*time.Millisecond), got.CreatedAt)

			currencies[got.Currency]++
			merchants[got.MerchantID] = true
			exp, ok := payment.CurrencyExponent(got.Currency)
			require.True(t, ok)
			// Realistic amounts in the currency's own minor units: at most
			// 2,000 USD/EUR/GBP (200,000 minor) and 300,000 JPY (exponent 0).
			maxMajor := map[string]float64{"USD": 2000, "EUR": 2000, "GBP": 1500, "JPY": 300000}[got.Currency]
			require.Positive(t, got.AmountMinor)
			require.LessOrEqual(t, float64(got.AmountMinor), maxMajor*math.Pow10(exp)+99, "item %d", i)
			require.True(t, strings.HasPrefix(got.PaymentMethod, "pm_card_"))
			if it.Declined() {
				declined++
				require.Equal(t, int64(13), got.AmountMinor%100)
			}

		case publish.KindDuplicate:
			require.Less(t, it.DuplicateOf, i)
			orig := publish.Generate(7, it.DuplicateOf, opts)
			require.Equal(t, publish.KindValid, orig.Kind)
			require.Equal(t, orig.Body, it.Body, "a duplicate re-sends the exact body")
			require.Equal(t, orig.Merchant, it.Merchant)
			require.Equal(t, orig.PaymentID, it.PaymentID)
			require.Equal(t, orig.Request, it.Request)
			require.Equal(t, orig.Declined(), it.Declined())
			require.NotEqual(t, orig.MsgID, it.MsgID, "under a new Nats-Msg-Id")

		case publish.KindInvalid:
			require.Nil(t, it.Request)
			require.False(t, it.Declined())
			invalidKinds[it.Invalid]++
			_, err := payment.Decode(subject, it.Body, payment.Limits{})
			require.ErrorIs(t, err, payment.ErrInvalid, "item %d (%s): %s", i, it.Invalid, it.Body)
			if it.Invalid == publish.InvalidCardNumber {
				require.True(t, payment.ContainsCardNumber(string(it.Body)))
			}

		default:
			t.Fatalf("item %d: kind %v", i, it.Kind)
		}
	}

	// Fractions within a tolerance well beyond 4 standard deviations
	// (σ ≈ 19 for 10% of 4000, ≈ 14 for 5%).
	require.InDelta(t, 0.10*n, counts[publish.KindDuplicate], 80)
	require.InDelta(t, 0.05*n, counts[publish.KindInvalid], 60)
	require.Equal(t, n, counts[publish.KindValid]+counts[publish.KindDuplicate]+counts[publish.KindInvalid])

	for _, k := range []string{
		publish.InvalidBadJSON, publish.InvalidFloatAmount, publish.InvalidMissingCurrency,
		publish.InvalidXXXCurrency, publish.InvalidCardNumber, publish.InvalidMerchantMismatch,
	} {
		require.Positive(t, invalidKinds[k], "invalid kind %s", k)
	}
	require.Len(t, invalidKinds, 6)

	require.Len(t, currencies, 4)
	for _, c := range []string{"USD", "EUR", "GBP", "JPY"} {
		require.Positive(t, currencies[c], c)
	}
	require.Len(t, merchants, 7)
	for m := range merchants {
		require.Regexp(t, `^m00[1-7]$`, m)
	}
	require.Positive(t, declined, "some amounts end in 13")
	for id, c := range msgIDs {
		require.Equal(t, 1, c, "msg id %s used twice", id)
	}
}

func TestGenerateEdges(t *testing.T) {
	t.Parallel()

	t.Run("everything a duplicate: item 0 is valid, the rest copy it", func(t *testing.T) {
		t.Parallel()
		opts := publish.GenOptions{Duplicates: 1}
		first := publish.Generate(3, 0, opts)
		require.Equal(t, publish.KindValid, first.Kind)
		for i := 1; i < 20; i++ {
			it := publish.Generate(3, i, opts)
			// Every earlier item but 0 is a duplicate too, so 0 is the only
			// valid original.
			require.Equal(t, publish.KindDuplicate, it.Kind)
			require.Equal(t, 0, it.DuplicateOf)
			require.Equal(t, first.Body, it.Body)
		}
	})

	t.Run("one merchant still gets a merchant mismatch", func(t *testing.T) {
		t.Parallel()
		opts := publish.GenOptions{Merchants: 1, Invalid: 1}
		found := false
		for i := range 200 {
			it := publish.Generate(5, i, opts)
			require.Equal(t, publish.KindInvalid, it.Kind)
			if it.Invalid == publish.InvalidMerchantMismatch {
				found = true
				require.Equal(t, "m002", it.Merchant)
				require.Contains(t, string(it.Body), `"merchant_id":"m001"`)
			}
		}
		require.True(t, found)
	})

	t.Run("no created_at by default", func(t *testing.T) {
		t.Parallel()
		it := publish.Generate(1, 0, publish.GenOptions{})
		require.NotContains(t, string(it.Body), "created_at")
		require.Regexp(t, `^m0(0[1-9]|10)$`, it.Merchant, "10 merchants by default")
	})
}

func TestKindString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "valid", publish.KindValid.String())
	require.Equal(t, "duplicate", publish.KindDuplicate.String())
	require.Equal(t, "invalid", publish.KindInvalid.String())
	require.Equal(t, "unknown", publish.Kind(0).String())
}
