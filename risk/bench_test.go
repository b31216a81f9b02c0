package risk_test

import (
	"testing"
	"time"

	"github.com/paystream/paystream/risk"
)

// BenchmarkFanOut is the hot-path cost of the fan-out itself — a context,
// a goroutine per provider, the first answer, cancelling and waiting for
// the rest — with in-process providers that answer at once (an HTTP call
// to a risk service adds its round trip on top).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		checkers := make([]risk.Checker, n)
		for i := range checkers {
			checkers[i] = fixed{risk.Decision{Verdict: risk.Allow}}
		}
		f, err := risk.NewFanOut(time.Second, checkers...)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(rune('0'+n))+"providers", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.Check(b.Context(), query(1000)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
