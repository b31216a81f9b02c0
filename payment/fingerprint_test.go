package payment_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

func baseRequest() *payment.Request {
	return &payment.Request{
		PaymentID:     "pay_123",
		MerchantID:    "m_1",
		CustomerID:    "cus_9",
		AmountMinor:   1999,
		Currency:      "USD",
		PaymentMethod: "pm_card_visa",
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()

	base := baseRequest()
	fp := base.Fingerprint()
	// The fingerprint is stored in the payments table: a change of the
	// encoding must be deliberate, so it is pinned here (value computed
	// independently, with Python, from the encoding documented on Fingerprint).
	require.Equal(t, "ce857f991a761be53efabeb4d136e7242c554821edb595acb6b25f6291f95b86", fp)
	require.Regexp(t, `^[0-9a-f]{64}$`, fp)
	require.Equal(t, fp, baseRequest().Fingerprint(), "not deterministic")

	t.Run("fingerprinted fields", func(t *testing.T) {
		t.Parallel()
		changes := map[string]func(r *payment.Request){
			"payment_id":     func(r *payment.Request) { r.PaymentID = "pay_124" },
			"merchant_id":    func(r *payment.Request) { r.MerchantID = "m_2" },
			"customer_id":    func(r *payment.Request) { r.CustomerID = "" },
			"amount_minor":   func(r *payment.Request) { r.AmountMinor = 2000 },
			"currency":       func(r *payment.Request) { r.Currency = "EUR" },
			"payment_method": func(r *payment.Request) { r.PaymentMethod = "pm_card_mastercard" },
		}
		for name, change := range changes {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := baseRequest()
				change(r)
				require.NotEqual(t, fp, r.Fingerprint())
			})
		}
	})

	t.Run("other fields are not fingerprinted", func(t *testing.T) {
		t.Parallel()
		r := baseRequest()
		r.IdempotencyKey = "key-1"
		r.Description = "x"
		r.Metadata = map[string]string{"a": "b"}
		r.CreatedAt = time.Now()
		require.Equal(t, fp, r.Fingerprint())
	})

	t.Run("unambiguous", func(t *testing.T) {
		t.Parallel()
		pairs := []struct {
			name string
			a, b payment.Request
		}{
			{"boundary between ids", payment.Request{PaymentID: "ab", MerchantID: "c"}, payment.Request{PaymentID: "a", MerchantID: "bc"}},
			{"empty customer moves", payment.Request{MerchantID: "m", CustomerID: ""}, payment.Request{MerchantID: "", CustomerID: "m"}},
			{"currency and method", payment.Request{Currency: "USD", PaymentMethod: "x"}, payment.Request{Currency: "USDx", PaymentMethod: ""}},
			{"amount bytes", payment.Request{AmountMinor: 0x41, CustomerID: ""}, payment.Request{AmountMinor: 0, CustomerID: "A"}},
		}
		for _, p := range pairs {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				require.NotEqual(t, p.a.Fingerprint(), p.b.Fingerprint())
			})
		}
	})

	t.Run("long fields", func(t *testing.T) {
		t.Parallel()
		r := baseRequest()
		r.PaymentMethod = string(make([]byte, 4096))
		require.Len(t, r.Fingerprint(), 64)
	})
}

func TestMarshal(t *testing.T) {
	t.Parallel()

	t.Run("minimal", func(t *testing.T) {
		t.Parallel()
		r := &payment.Request{PaymentID: "pay_1", MerchantID: "m_1", AmountMinor: 100_000_000, Currency: "JPY", PaymentMethod: "pm"}
		b, err := r.Marshal()
		require.NoError(t, err)
		require.JSONEq(t, `{"payment_id":"pay_1","merchant_id":"m_1","amount_minor":100000000,"currency":"JPY","payment_method":"pm"}`, string(b))
		require.Contains(t, string(b), `"amount_minor":100000000`, "amount must be an integer literal")
	})

	t.Run("all fields round-trip", func(t *testing.T) {
		t.Parallel()
		r := baseRequest()
		r.IdempotencyKey = "idem-1"
		r.Description = `<b>"quoted"</b> & é`
		r.Metadata = map[string]string{"a": "1", "b": "2"}
		r.CreatedAt = time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.FixedZone("", 5*3600+1800))
		b, err := r.Marshal()
		require.NoError(t, err)

		var m map[string]any
		d := json.NewDecoder(bytesReader(b))
		d.UseNumber()
		require.NoError(t, d.Decode(&m))
		require.Equal(t, json.Number("1999"), m["amount_minor"])
		require.Equal(t, "2025-03-01T12:30:00.123456789+05:30", m["created_at"])

		got, err := payment.Decode("payments.requests.m_1", b, payment.Limits{})
		require.NoError(t, err)
		require.True(t, r.CreatedAt.Equal(got.CreatedAt))
		got.CreatedAt = r.CreatedAt
		require.Equal(t, r, got)
	})

	t.Run("invalid request still marshals", func(t *testing.T) {
		t.Parallel()
		r := &payment.Request{AmountMinor: -1, Currency: "usd"}
		b, err := r.Marshal()
		require.NoError(t, err)
		require.Contains(t, string(b), `"amount_minor":-1`)
		_, err = payment.Decode("", b, payment.Limits{})
		require.ErrorIs(t, err, payment.ErrInvalid)
	})
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
