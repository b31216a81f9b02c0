package processing

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// TestRankSharesByWeight: with no rule, each gateway comes first for about
// its weight's share of the keys, the same on every call; rules go first.
func TestRankSharesByWeight(t *testing.T) {
	t.Parallel()
	p := &Processor{byName: map[string]*routed{}}
	for _, r := range []Route{{Weight: 3}, {Weight: 1}, {Weight: 0, Currencies: []string{"JPY"}}} {
		name := fmt.Sprintf("g%d", len(p.gws))
		x := &routed{Route: r, name: name}
		p.gws = append(p.gws, x)
		p.byName[name] = x
	}
	first := map[string]int{}
	for i := range 4000 {
		req := &payment.Request{PaymentID: fmt.Sprintf("gw_%06d", i), MerchantID: "m1", Currency: "EUR"}
		r := p.rank(req)
		require.Equal(t, r, p.rank(req), "stable")
		require.Equal(t, "g2", r[2].name, "the standby last")
		first[r[0].name]++
	}
	require.InDelta(t, 3000, first["g0"], 150)
	require.InDelta(t, 1000, first["g1"], 150)
	jpy := p.rank(&payment.Request{PaymentID: "x", MerchantID: "m1", Currency: "JPY"})
	require.Equal(t, "g2", jpy[0].name, "a currency rule goes first")

	// Names one byte apart split evenly too.
	p = &Processor{gws: []*routed{{Route: Route{Weight: 1}, name: "a"}, {Route: Route{Weight: 1}, name: "b"}}}
	first = map[string]int{}
	for i := range 2000 {
		first[p.rank(&payment.Request{PaymentID: fmt.Sprintf("pay_%06d", i), MerchantID: "m1", Currency: "EUR"})[0].name]++
	}
	require.InDelta(t, 1000, first["a"], 120)
}
