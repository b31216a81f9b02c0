package payment_test

import (
	"bytes"
	"testing"

	"github.com/paystream/paystream/payment"
)

// BenchmarkDecode decodes, validates and fingerprints a typical request.
func BenchmarkDecode(b *testing.B) {
	body := []byte(typicalBody)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := payment.Decode("payments.requests.acme_shop", body, payment.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		_ = r.Fingerprint()
	}
}

// BenchmarkMaskCardNumbers masks a 64 KiB dead-letter body with a few cards.
func BenchmarkMaskCardNumbers(b *testing.B) {
	var buf bytes.Buffer
	for buf.Len() < payment.MaxBodyBytes-200 {
		buf.WriteString(`{"description":"order 1234-5678 paid","ref":"00004111111111111111","n":12345678901},`)
	}
	buf.WriteString(`{"payment_method":"4111 1111 1111 1111"}`)
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, changed := payment.MaskCardNumbers(body); !changed {
			b.Fatal("card not masked")
		}
	}
}
