package ledger

import (
	"fmt"
	"runtime"
	"testing"

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

	res := l.Charge("k", "pay_1")
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
	l.Charge("k", "p")
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
	charged := l.Charge("k", "p")
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
	require.Panics(t, func() { l.Charge("k", "p") })
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
		l.Charge(key, pid)
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
			l.Charge(key, "p"+key)
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
		l.Charge(fmt.Sprint(i), fmt.Sprint(i))
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

// TestMemoryPerKey checks the documented footprint: about 100 bytes per
// retained charged key (map entry, payment id hash, FIFO slot).
func TestMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates")
	}
	const n = 50_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%08d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := New(Config{MaxKeys: n})
	for i, k := range keys {
		l.Begin(k, uint64(i))
		l.Charge(k, k)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perKey := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per key", perKey)
	require.Less(t, perKey, 200.0)
	runtime.KeepAlive(l)
}
