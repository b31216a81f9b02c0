package ledger

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func TestBeginVerdicts(t *testing.T) {
	t.Parallel()
	l := New(Config{ChargePrefix: "t_"})

	v, _ := l.Begin("k", 1)
	require.Equal(t, Started, v)
	v, _ = l.Begin("k", 1)
	require.Equal(t, InFlight, v)
	v, _ = l.Begin("k", 2)
	require.Equal(t, Mismatch, v, "a different body is refused even while in flight")
	require.Equal(t, 1, l.Stats().InFlight)

	res := l.Charge(fields("k", "pay_1"))
	require.Equal(t, Result{Charged: true, ChargeID: "ch_t_1"}, res)
	v, replay := l.Begin("k", 1)
	require.Equal(t, Replay, v)
	require.Equal(t, res, replay)
	v, _ = l.Begin("k", 2)
	require.Equal(t, Mismatch, v)

	v, _ = l.Begin("d", 3)
	require.Equal(t, Started, v)
	require.Equal(t, Result{DeclineCode: "card_declined"}, l.Decline("d", "card_declined"))
	v, replay = l.Begin("d", 3)
	require.Equal(t, Replay, v)
	require.Equal(t, Result{DeclineCode: "card_declined"}, replay)

	v, _ = l.Begin("e", 3)
	require.Equal(t, Started, v)
	require.Equal(t, Result{DeclineCode: "declined"}, l.Decline("e", ""))

	require.Equal(t, Stats{Charges: 1, Keys: 3, DoubleCharged: []string{}}, l.Stats())
	require.Equal(t, 1, l.ChargesFor("k"))
	require.Equal(t, 0, l.ChargesFor("d"))
}

func TestAbortForgetsKey(t *testing.T) {
	t.Parallel()
	l := New(Config{})
	v, _ := l.Begin("k", 1)
	require.Equal(t, Started, v)
	l.Abort("k")
	require.Zero(t, l.Stats().InFlight)
	v, _ = l.Begin("k", 2) // a new body is fine: nothing was recorded
	require.Equal(t, Started, v)
	l.Charge(fields("k", "p"))
	l.Abort("k") // no effect on a completed key
	v, _ = l.Begin("k", 2)
	require.Equal(t, Replay, v)
	l.Abort("unknown")
}

func TestLookup(t *testing.T) {
	t.Parallel()
	l := New(Config{ChargePrefix: "x_"})
	state, res := l.Lookup("k")
	require.Equal(t, Unknown, state)
	require.Zero(t, res)

	l.Begin("k", 1)
	state, _ = l.Lookup("k")
	require.Equal(t, Running, state)
	charged := l.Charge(fields("k", "p"))
	state, res = l.Lookup("k")
	require.Equal(t, Done, state)
	require.Equal(t, charged, res)
	require.Equal(t, "ch_x_1", res.ChargeID)

	l.Begin("d", 1)
	l.Decline("d", "card_declined")
	state, res = l.Lookup("d")
	require.Equal(t, Done, state)
	require.Equal(t, Result{DeclineCode: "card_declined"}, res)

	l.Begin("a", 1)
	l.Abort("a")
	state, _ = l.Lookup("a")
	require.Equal(t, Unknown, state)
	require.Equal(t, Stats{Charges: 1, Keys: 2, DoubleCharged: []string{}}, l.Stats(), "Lookup changes nothing")
}

func TestCompleteWithoutBeginPanics(t *testing.T) {
	t.Parallel()
	l := New(Config{})
	require.Panics(t, func() { l.Charge(fields("k", "p")) })
	l.Begin("k", 1)
	l.Decline("k", "x")
	require.Panics(t, func() { l.Decline("k", "x") })
}

func TestDoubleCharged(t *testing.T) {
	t.Parallel()
	l := New(Config{})
	charge := func(key, pid string) {
		v, _ := l.Begin(key, 1)
		require.Equal(t, Started, v)
		l.Charge(fields(key, pid))
	}
	charge("k1", "p1")
	charge("k2", "p2")
	charge("k3", "p1")
	charge("k4", "p1") // listed once
	charge("k5", "p2")
	st := l.Stats()
	require.Equal(t, []string{"p1", "p2"}, st.DoubleCharged)
	require.Equal(t, 2, st.DoubleChargedTotal)
	require.Equal(t, int64(5), st.Charges)
}

func TestEvictsOldestCompletedKeys(t *testing.T) {
	t.Parallel()
	const maxKeys = 100
	l := New(Config{MaxKeys: maxKeys})
	v, _ := l.Begin("in-flight", 1) // never evicted
	require.Equal(t, Started, v)
	for i := range 1000 {
		key := fmt.Sprint(i)
		v, _ := l.Begin(key, 1)
		require.Equal(t, Started, v)
		if i%2 == 0 {
			l.Charge(fields(key, "p"+key))
		} else {
			l.Decline(key, "card_declined")
		}
	}
	l.mu.Lock()
	require.Len(t, l.entries, maxKeys+1)
	require.LessOrEqual(t, len(l.paid), maxKeys)
	require.Len(t, l.fifo, maxKeys)
	l.mu.Unlock()

	for i := range 1000 {
		v, _ := l.Begin(fmt.Sprint(i), 1)
		if i >= 900 {
			require.Equal(t, Replay, v, "key %d is retained", i)
		} else {
			require.Equal(t, Started, v, "key %d is forgotten", i)
			l.Abort(fmt.Sprint(i))
		}
	}
	v, _ = l.Begin("in-flight", 1)
	require.Equal(t, InFlight, v)
	require.Empty(t, l.Stats().DoubleCharged)
}

func TestUnlimitedKeys(t *testing.T) {
	t.Parallel()
	l := New(Config{MaxKeys: -1})
	for i := range 300 {
		l.Begin(fmt.Sprint(i), 1)
		l.Charge(fields(fmt.Sprint(i), fmt.Sprint(i)))
	}
	for i := range 300 {
		v, _ := l.Begin(fmt.Sprint(i), 1)
		require.Equal(t, Replay, v)
	}
}

func TestDeclineCodesBeyondTable(t *testing.T) {
	t.Parallel()
	l := New(Config{})
	for i := range 300 {
		key := fmt.Sprint(i)
		l.Begin(key, 1)
		res := l.Decline(key, "code_"+key)
		if i < 254 { // index 0 is "", index 1 is "declined"
			require.Equal(t, "code_"+key, res.DeclineCode)
		} else {
			require.Equal(t, "declined", res.DeclineCode)
		}
	}
	_, res := l.Begin("10", 1)
	require.Equal(t, "code_10", res.DeclineCode)
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	require.Equal(t, Fingerprint("a", "b"), Fingerprint("a", "b"))
	require.NotEqual(t, Fingerprint("ab", "c"), Fingerprint("a", "bc"))
	require.NotEqual(t, Fingerprint("a", ""), Fingerprint("a"))

	f := ChargeFields{Key: "k", PaymentID: "p", MerchantID: "m", Currency: "EUR", PaymentMethod: "pm", AmountMinor: 100}
	g := f
	g.Key = "other"
	require.Equal(t, f.Fingerprint(), g.Fingerprint(), "the key is not part of the body")
	g = f
	g.AmountMinor = 101
	require.NotEqual(t, f.Fingerprint(), g.Fingerprint())
	g = f
	g.Description = "d"
	require.NotEqual(t, f.Fingerprint(), g.Fingerprint())
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := ChargeFields{Key: "k", PaymentID: "p", MerchantID: "m", Currency: "EUR", PaymentMethod: "pm", AmountMinor: 1}
	require.Empty(t, ok.Validate())
	for _, tt := range []struct {
		name   string
		mutate func(*ChargeFields)
	}{
		{"no key", func(f *ChargeFields) { f.Key = "" }},
		{"long key", func(f *ChargeFields) { f.Key = string(make([]byte, 256)) }},
		{"space in key", func(f *ChargeFields) { f.Key = "a b" }},
		{"no payment id", func(f *ChargeFields) { f.PaymentID = "" }},
		{"no merchant", func(f *ChargeFields) { f.MerchantID = "" }},
		{"no currency", func(f *ChargeFields) { f.Currency = "" }},
		{"no method", func(f *ChargeFields) { f.PaymentMethod = "" }},
		{"zero amount", func(f *ChargeFields) { f.AmountMinor = 0 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := ok
			tt.mutate(&f)
			require.NotEmpty(t, f.Validate())
		})
	}
}

// TestMemoryPerKey checks the documented footprint of the idempotency
// ledger: about 100 bytes per retained charged key (map entry, payment id
// hash, FIFO slot), on top of the charge kept for lookup
// (TestMemoryPerCharge).
func TestMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates")
	}
	const n = 50_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%08d", i)
	}
	perKey := heapPer(t, n, func() any {
		l := New(Config{MaxKeys: n})
		for i, k := range keys {
			l.Begin(k, uint64(i))
			l.Decline(k, "card_declined")
		}
		return l
	})
	t.Logf("%.0f bytes per declined key", perKey)
	require.Less(t, perKey, 150.0)

	perCharged := heapPer(t, n, func() any {
		l := New(Config{MaxKeys: n})
		for i, k := range keys {
			l.Begin(k, uint64(i))
			l.Charge(fields(k, k)) // the payment id costs nothing here
		}
		return l
	})
	t.Logf("%.0f bytes per charged key, its kept charge included", perCharged)
	require.Less(t, perCharged, 300.0)
}

// TestMemoryPerCharge checks the documented footprint of a charge kept for
// lookup: about 100 bytes with a 20-byte payment id.
func TestMemoryPerCharge(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates")
	}
	const n = 50_000
	keys := make([]string, n)
	pids := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%08d", i)
		pids[i] = fmt.Sprintf("pay_%016d", i) // as if freshly decoded
	}
	var pidBytes float64
	for _, p := range pids {
		pidBytes += float64(len(p))
	}
	perCharge := heapPer(t, n, func() any {
		l := New(Config{MaxKeys: 1000, MaxCharges: n}) // few keys: mostly kept charges
		for i, k := range keys {
			l.Begin(k, uint64(i))
			l.Charge(fields(k, pids[i]))
		}
		return l
	})
	// The payment ids were allocated before; add what they cost (a 20-byte
	// string takes a 24-byte allocation).
	perCharge += 24
	t.Logf("%.0f bytes per kept charge (payment ids of %.0f bytes)", perCharge, pidBytes/n)
	require.Less(t, perCharge, 150.0)
}

// heapPer returns the heap bytes that build's result holds, per n.
func heapPer(t *testing.T, n int, build func() any) float64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(v)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
}

// fields returns a valid charge of payment id pid under key.
func fields(key, pid string) ChargeFields {
	return ChargeFields{Key: key, PaymentID: pid, MerchantID: "m", Currency: "EUR", PaymentMethod: "pm", AmountMinor: 1000}
}

func TestFind(t *testing.T) {
	t.Parallel()
	l := New(Config{ChargePrefix: "f_", MaxKeys: 2})
	find := func(key string) (ChargeRecord, bool, bool) { return l.Find(key) }

	c, found, inFlight := find("k")
	require.Zero(t, c)
	require.False(t, found)
	require.False(t, inFlight, "unknown")

	l.Begin("k", 1)
	_, found, inFlight = find("k")
	require.False(t, found)
	require.True(t, inFlight)
	f := ChargeFields{Key: "k", PaymentID: "pay_k", MerchantID: "m", Currency: "JPY", PaymentMethod: "pm", AmountMinor: 4200}
	l.Charge(f)
	c, found, inFlight = find("k")
	require.Equal(t, ChargeRecord{ChargeID: "ch_f_1", PaymentID: "pay_k", Currency: "JPY", AmountMinor: 4200}, c)
	require.True(t, found)
	require.False(t, inFlight)

	l.Begin("d", 1)
	l.Decline("d", "card_declined")
	_, found, inFlight = find("d")
	require.False(t, found, "a decline moved no money")
	require.False(t, inFlight)

	l.Begin("a", 1)
	l.Abort("a")
	_, found, inFlight = find("a")
	require.False(t, found)
	require.False(t, inFlight)

	// Two more keys: "k" is forgotten for idempotency but its charge is kept.
	for _, key := range []string{"x", "y"} {
		l.Begin(key, 1)
		l.Charge(fields(key, "pay_"+key))
	}
	state, _ := l.Lookup("k")
	require.Equal(t, Unknown, state, "the key is forgotten")
	c, found, _ = find("k")
	require.True(t, found, "the charge is not")
	require.Equal(t, "ch_f_1", c.ChargeID)

	// The forgotten key charges again (as at a real gateway); a lookup
	// keeps answering with the first charge, also while the second runs.
	v, _ := l.Begin("k", 1)
	require.Equal(t, Started, v)
	c, found, inFlight = find("k")
	require.True(t, found)
	require.True(t, inFlight)
	require.Equal(t, "ch_f_1", c.ChargeID)
	require.Equal(t, "ch_f_4", l.Charge(f).ChargeID)
	c, _, _ = find("k")
	require.Equal(t, "ch_f_1", c.ChargeID)
	require.Equal(t, Stats{Charges: 4, Keys: 5, DoubleCharged: []string{}}, l.Stats(), "Find changes nothing")
}

func TestKeptChargesAreBounded(t *testing.T) {
	t.Parallel()
	const maxKeys, maxCharges = 10, 100
	l := New(Config{MaxKeys: maxKeys, MaxCharges: maxCharges})
	for i := range 1000 {
		key := fmt.Sprint(i)
		l.Begin(key, 1)
		l.Charge(fields(key, "p"+key))
	}
	for i := range 1000 {
		_, found, _ := l.Find(fmt.Sprint(i))
		require.Equal(t, i >= 1000-maxCharges, found, "key %d", i)
	}
	l.mu.Lock()
	require.Len(t, l.kept, maxCharges)
	require.Len(t, l.keptOrder.buf, maxCharges)
	l.mu.Unlock()
}

func TestKeptChargesNeverFewerThanKeys(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  Config
		want int // charges kept of 300
	}{
		{"raised to MaxKeys", Config{MaxKeys: 50, MaxCharges: 5}, 50},
		{"unlimited keys", Config{MaxKeys: -1, MaxCharges: 5}, 300},
		{"unlimited charges", Config{MaxKeys: 5, MaxCharges: -1}, 300},
		{"default", Config{MaxKeys: 5}, 300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := New(tt.cfg)
			for i := range 300 {
				key := fmt.Sprint(i)
				l.Begin(key, 1)
				l.Charge(fields(key, key))
			}
			kept := 0
			for i := range 300 {
				if _, found, _ := l.Find(fmt.Sprint(i)); found {
					kept++
				}
			}
			require.Equal(t, tt.want, kept)
		})
	}
}

// TestKeptStringsAreCopies checks that a kept charge holds copies of the
// caller's strings, not slices of them: payment.Decode's fields share one
// copy of the request body, which a kept charge would otherwise pin.
func TestKeptStringsAreCopies(t *testing.T) {
	t.Parallel()
	l := New(Config{ChargePrefix: "t_"})
	body := `{"payment_id":"pay_1","currency":"EUR"}`
	pid, cur := body[15:20], body[34:37]
	require.Equal(t, "pay_1", pid)
	require.Equal(t, "EUR", cur)
	v, _ := l.Begin("k", 1)
	require.Equal(t, Started, v)
	l.Charge(ChargeFields{Key: "k", PaymentID: pid, Currency: cur, AmountMinor: 100})
	c, found, _ := l.Find("k")
	require.True(t, found)
	require.Equal(t, pid, c.PaymentID)
	require.Equal(t, cur, c.Currency)
	require.NotSame(t, unsafe.StringData(pid), unsafe.StringData(c.PaymentID), "payment id shares the caller's memory")
	require.NotSame(t, unsafe.StringData(cur), unsafe.StringData(c.Currency), "currency shares the caller's memory")
}
