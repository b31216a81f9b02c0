package ops

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

func header(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestDecodeDeadLetter(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.FixedZone("x", 3600))
	// A body with a card number the worker did not mask (an older worker,
	// a hand-made dead letter): shown masked all the same.
	body := []byte(`{"payment_id":"p1","merchant_id":"m1","description":"card 4111 1111 1111 1111","amount_minor":5}`)
	d := decodeDeadLetter("payments.dlq.invalid", header(
		"Paystream-Dlq-Reason", "invalid", "Paystream-Error", "description: card number",
		"Paystream-Original-Subject", "payments.requests.m1", "Paystream-Stream-Seq", "42", "Paystream-Deliveries", "1",
	), body, 9, at)
	require.Equal(t, uint64(9), d.Seq)
	require.Equal(t, "invalid", d.Reason)
	require.Equal(t, uint64(42), d.OriginalSeq)
	require.Equal(t, uint64(1), d.Deliveries)
	require.Equal(t, "p1", d.PaymentID)
	require.Equal(t, "p1", d.IdempotencyKey, "the effective key defaults to the payment id")
	require.Equal(t, "m1", d.MerchantID)
	require.Equal(t, time.UTC, d.ReceivedAt.Location())
	require.NotContains(t, d.Body, "4111 1111 1111 1111")
	require.Contains(t, d.Body, "1111")
	require.False(t, payment.ContainsCardNumber(d.Body))

	// A body that is not JSON: no ids, the reason from the subject.
	d = decodeDeadLetter("payments.dlq.conflict", header(), []byte("not json 4111111111111111"), 1, at)
	require.Equal(t, "conflict", d.Reason)
	require.Empty(t, d.PaymentID)
	require.False(t, payment.ContainsCardNumber(d.Body))
}

func TestDeadLetterFilterMatch(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	d := DeadLetter{Reason: "exhausted", Error: "Gateway trouble: 503", OriginalSubject: "payments.requests.m1",
		ReceivedAt: at, PaymentID: "p1", IdempotencyKey: "k1", MerchantID: "m1"}
	tests := []struct {
		name string
		f    DeadLetterFilter
		want bool
	}{
		{"everything", DeadLetterFilter{}, true},
		{"reason", DeadLetterFilter{Reasons: []string{"invalid", "exhausted"}}, true},
		{"other reason", DeadLetterFilter{Reasons: []string{"invalid"}}, false},
		{"since", DeadLetterFilter{Since: at}, true},
		{"since later", DeadLetterFilter{Since: at.Add(time.Second)}, false},
		{"until", DeadLetterFilter{Until: at}, false},
		{"until later", DeadLetterFilter{Until: at.Add(time.Second)}, true},
		{"merchant", DeadLetterFilter{MerchantID: "m2"}, false},
		{"error text, any case", DeadLetterFilter{ErrorContains: "gateway TROUBLE"}, true},
		{"error text", DeadLetterFilter{ErrorContains: "decline"}, false},
		{"subject", DeadLetterFilter{OriginalSubject: "payments.requests.m2"}, false},
		{"payment by id", ForPayment("p1"), true},
		{"payment by key", ForPayment("k1"), true},
		{"other payment", ForPayment("p2"), false},
		{"payment id only", DeadLetterFilter{PaymentID: "k1"}, false},
		{"key only", DeadLetterFilter{Key: "k1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.f.Match(d))
		})
	}
}

func TestRefusal(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	valid := []byte(`{"payment_id":"p1","merchant_id":"m1","amount_minor":500,"currency":"EUR","payment_method":"pm_card_visa"}`)
	ok := DeadLetter{Seq: 3, Reason: "exhausted", OriginalSubject: "payments.requests.m1", ReceivedAt: now.Add(-time.Hour), raw: valid}
	r := Replayer{Horizon: 24 * time.Hour}
	tests := []struct {
		name string
		edit func(*DeadLetter)
		want string
	}{
		{"replayable", func(*DeadLetter) {}, ""},
		{"gateway rejected", func(d *DeadLetter) { d.Reason = "gateway_rejected" }, ""},
		{"invalid", func(d *DeadLetter) { d.Reason = "invalid" }, "invalid request"},
		{"conflict", func(d *DeadLetter) { d.Reason = "conflict" }, "conflict"},
		{"redacted", func(d *DeadLetter) { d.Redacted = true }, "redacted"},
		{"truncated", func(d *DeadLetter) { d.Truncated = true }, "truncated"},
		{"no subject", func(d *DeadLetter) { d.OriginalSubject = "" }, "Original-Subject"},
		{"past the horizon", func(d *DeadLetter) { d.ReceivedAt = now.Add(-25 * time.Hour) }, "replay horizon"},
		{"no longer valid", func(d *DeadLetter) { d.raw = []byte(`{"payment_id":"p1"}`) }, "no longer a valid request"},
		{"subject of another merchant", func(d *DeadLetter) { d.OriginalSubject = "payments.requests.m2" }, "no longer a valid request"},
		{"replayed", func(d *DeadLetter) { d.Seq = 7 }, "already replayed (operator action 12)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := ok
			tt.edit(&d)
			got := r.refusal(d, map[int64]int64{7: 12}, now)
			if tt.want == "" {
				require.Empty(t, got)
			} else {
				require.Contains(t, got, tt.want)
			}
		})
	}
}

func TestPlanFor(t *testing.T) {
	t.Parallel()
	for st, want := range map[payment.Status]Plan{
		payment.StatusSucceeded: PlanRefuse, payment.StatusDeclined: PlanRefuse, payment.StatusUnknown: PlanRefuse,
		payment.StatusProcessing: PlanRefuse, payment.StatusFailed: PlanCharge,
	} {
		got, why := planFor(payment.Record{Status: st})
		require.Equal(t, want, got, st)
		require.NotEmpty(t, why)
	}
	_, why := planFor(payment.Record{Status: payment.StatusFailed, Ambiguous: true})
	require.Contains(t, why, "looks the charge up")
}
