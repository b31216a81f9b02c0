package payment_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// TestOutcomeAppendJSONMatchesMarshal compares the hand-written encoding of
// the outcome event with encoding/json's, for fixed edge cases and many
// random values.
func TestOutcomeAppendJSONMatchesMarshal(t *testing.T) {
	t.Parallel()
	strs := []string{"", "a", `quote " and \ back`, "<script>&amp;</script>", "tab\tnl\ncr\rbs\bff\f",
		"\x00\x01\x1f\x7f", "é日本語🙂", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82", "\xed\xa0\x80",
		"pay_01HZX3K9Q7", "order-8812-attempt"}
	times := []time.Time{{}, time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC),
		time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC), time.Date(2025, 3, 1, 12, 30, 0, 120000000, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(2025, 3, 1, 12, 30, 0, 5, time.FixedZone("x", 5*3600+30*60)),
		time.Date(2025, 3, 1, 12, 30, 0, 0, time.FixedZone("y", -7*3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}
	check := func(o payment.Outcome) {
		t.Helper()
		want, wantErr := json.Marshal(o)
		got, err := o.AppendJSON([]byte("prefix"))
		if wantErr != nil {
			require.Error(t, err, "%+v", o)
			return
		}
		require.NoError(t, err)
		require.Equal(t, "prefix"+string(want), string(got), "%+v", o)
	}
	for _, s := range strs {
		for _, at := range times {
			check(payment.Outcome{PaymentID: s, IdempotencyKey: s, Status: payment.Status(s), Currency: s,
				Gateway: s, GatewayChargeID: s, ErrorCode: s, AmountMinor: math.MinInt64, Attempts: -1, CompletedAt: at})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	randStr := func() string {
		if rng.IntN(4) == 0 {
			return ""
		}
		b := make([]byte, rng.IntN(12))
		for i := range b {
			switch rng.IntN(3) {
			case 0:
				b[i] = byte(rng.IntN(256))
			case 1:
				b[i] = byte(rng.IntN(0x80))
			default:
				b[i] = "az09<>&\"\\\n\xe2\x80\xa8"[rng.IntN(13)]
			}
		}
		return string(b)
	}
	for range 20000 {
		check(payment.Outcome{PaymentID: randStr(), IdempotencyKey: randStr(), Status: payment.Status(randStr()),
			AmountMinor: rng.Int64() - rng.Int64(), Currency: randStr(), Gateway: randStr(), GatewayChargeID: randStr(),
			ErrorCode: randStr(), Attempts: rng.IntN(100),
			CompletedAt: time.Unix(rng.Int64N(1<<35), rng.Int64N(1e9)).UTC()})
	}
}

func BenchmarkOutcomeJSON(b *testing.B) {
	o := payment.Outcome{PaymentID: "pay_01HZX3K9Q7", IdempotencyKey: "order-8812-attempt",
		Status: payment.StatusSucceeded, AmountMinor: 12999, Currency: "EUR", Gateway: "sim",
		GatewayChargeID: "ch_8812", Attempts: 1, CompletedAt: time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)}
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(o)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = o.AppendJSON(make([]byte, 0, 256))
		}
	})
}
