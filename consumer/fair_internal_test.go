package consumer

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

// fairHarness drives a fairQueue whose started messages report their name
// on a channel and stay in flight until the test calls finish with their
// merchant.
type fairHarness struct {
	t       *testing.T
	q       *fairQueue
	started chan string
	mu      sync.Mutex
	now     time.Time
	release map[string]chan struct{} // per merchant: one of its messages in flight finishes
}

func newFairHarness(t *testing.T, slots int, maxHold time.Duration) *fairHarness {
	h := &fairHarness{t: t, started: make(chan string, 100), now: time.Unix(1000, 0), release: map[string]chan struct{}{}}
	stop := make(chan struct{})
	h.q = newFairQueue(slots, maxHold, func(m held) {
		h.started <- m.merchant + "/" + m.msg.Subject()
		select {
		case <-h.releaseOf(m.merchant):
		case <-stop:
		}
	})
	h.q.now = func() time.Time { h.mu.Lock(); defer h.mu.Unlock(); return h.now }
	t.Cleanup(func() {
		close(stop)
		if !h.waitEnds() {
			t.Error("the queue's goroutines did not end")
		}
	})
	return h
}

// waitEnds calls the queue's wait and reports whether it returned within
// 5 s (a goroutine left parked would hang it).
func (h *fairHarness) waitEnds() bool {
	waited := make(chan struct{})
	go func() { h.q.wait(); close(waited) }()
	select {
	case <-waited:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// runAndPark pushes one message of each merchant, sees them all start,
// finishes them, and waits until their goroutines are parked.
func (h *fairHarness) runAndPark(merchants ...string) {
	h.t.Helper()
	for _, m := range merchants {
		h.push(m, strings.ToLower(m)+"1")
	}
	for range merchants {
		h.next()
	}
	for _, m := range merchants {
		h.finish(m)
	}
	h.parked(len(merchants))
}

func (h *fairHarness) releaseOf(merchant string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.release[merchant] == nil {
		h.release[merchant] = make(chan struct{})
	}
	return h.release[merchant]
}

// finish ends one message of merchant in flight, failing if none is.
func (h *fairHarness) finish(merchant string) {
	h.t.Helper()
	select {
	case h.releaseOf(merchant) <- struct{}{}:
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no message of %s in flight", merchant)
	}
}

func (h *fairHarness) push(merchant, name string) {
	h.q.push(held{msg: fakeMsg{subject: name}, merchant: merchant})
}

func (h *fairHarness) advance(d time.Duration) { h.mu.Lock(); h.now = h.now.Add(d); h.mu.Unlock() }

// parked waits until n of the queue's goroutines are parked.
func (h *fairHarness) parked(n int) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		return len(h.q.parked) == n
	}, 5*time.Second, time.Millisecond)
}

// next returns the next started message, failing if none starts.
func (h *fairHarness) next() string {
	h.t.Helper()
	select {
	case s := <-h.started:
		return s
	case <-time.After(5 * time.Second):
		h.t.Fatal("no message started")
		return ""
	}
}

func (h *fairHarness) none() {
	h.t.Helper()
	select {
	case s := <-h.started:
		h.t.Fatalf("unexpected start of %s", s)
	default:
	}
}

func TestFairQueue(t *testing.T) {
	t.Parallel()

	t.Run("FewestInFlightFirst", func(t *testing.T) {
		t.Parallel()
		h := newFairHarness(t, 2, time.Hour)
		h.push("A", "a1")
		h.push("A", "a2")
		require.ElementsMatch(t, []string{"A/a1", "A/a2"}, []string{h.next(), h.next()})
		h.push("A", "a3")
		h.push("A", "a4")
		h.push("B", "b1")
		h.push("B", "b2")
		h.none()
		require.Equal(t, 4, h.q.held())
		h.finish("A") // A 1 in flight, B 0: B goes first though it came later
		require.Equal(t, "B/b1", h.next())
		h.finish("A") // A 0, B 1
		require.Equal(t, "A/a3", h.next())
		h.finish("B") // A 1, B 0
		require.Equal(t, "B/b2", h.next())
		h.finish("B")
		require.Equal(t, "A/a4", h.next())
		h.none()
		require.Equal(t, 0, h.q.held())
	})

	t.Run("TurnsAmongEquals", func(t *testing.T) {
		t.Parallel()
		h := newFairHarness(t, 1, time.Hour)
		h.push("A", "a0")
		require.Equal(t, "A/a0", h.next())
		for _, m := range []string{"A", "A", "B", "C", "A", "B"} {
			h.push(m, m)
		}
		var got []string
		for range 6 {
			h.finish(got2merchant(got, "A"))
			got = append(got, h.next())
		}
		// With one slot every merchant has 0 in flight at each pick:
		// round robin, each merchant's messages in order.
		require.Equal(t, []string{"A/A", "B/B", "C/C", "A/A", "B/B", "A/A"}, got)
	})

	t.Run("LongHeldGoesFirst", func(t *testing.T) {
		t.Parallel()
		h := newFairHarness(t, 2, time.Second)
		h.push("A", "a1")
		h.push("A", "a2")
		h.next()
		h.next()
		h.push("A", "a3")
		h.advance(2 * time.Second)
		h.push("B", "b1")
		h.finish("A") // B has fewer in flight, but a3 waited past maxHold
		require.Equal(t, "A/a3", h.next())
	})

	t.Run("GoroutineReused", func(t *testing.T) {
		t.Parallel()
		h := newFairHarness(t, 2, time.Hour)
		h.push("A", "a1")
		h.push("B", "b1")
		h.next()
		h.next()
		for i := range 10 {
			h.push("A", fmt.Sprint("a", i+2))
			h.finish("A")
			require.Equal(t, fmt.Sprint("A/a", i+2), h.next())
		}
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		// The goroutine that ran a1 ran every later message of A.
		require.Equal(t, 2, h.q.spawned)
	})

	t.Run("ParkedGoroutineReused", func(t *testing.T) {
		t.Parallel()
		h := newFairHarness(t, 3, time.Hour)
		// Each message finishes before the next is pushed: nothing is
		// held when it does, so its goroutine parks and takes the next
		// push.
		for i := range 5 {
			h.push("A", fmt.Sprint("a", i))
			require.Equal(t, fmt.Sprint("A/a", i), h.next())
			h.finish("A")
			h.parked(1)
		}
		// Two at once: the parked goroutine takes one, a new one the
		// other; both park again after.
		h.runAndPark("A", "B")
		h.push("C", "c1")
		require.Equal(t, "C/c1", h.next())
		h.q.mu.Lock()
		defer h.q.mu.Unlock()
		require.Equal(t, 2, h.q.spawned)
	})

	t.Run("WaitEndsParkedGoroutines", func(t *testing.T) {
		t.Parallel()
		h := newFairHarness(t, 4, time.Hour)
		h.runAndPark("A", "B")
		// wait returns only once the parked goroutines have ended (and
		// the package's leak check agrees).
		require.True(t, h.waitEnds(), "wait did not end the parked goroutines")
		require.PanicsWithValue(t, "consumer: fairQueue.push after wait", func() { h.push("C", "c1") })
	})

	t.Run("MerchantOfSubject", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "m_1", merchantOf("payments.requests.m_1"))
		require.Equal(t, "m-2", merchantOf("acme.pay.requests.m-2"))
		require.Equal(t, "x", merchantOf("x"))
	})
}

// got2merchant returns the merchant of the last started message, or first
// when none has started in this list yet.
func got2merchant(got []string, first string) string {
	if len(got) == 0 {
		return first
	}
	s := got[len(got)-1]
	for i := range s {
		if s[i] == '/' {
			return s[:i]
		}
	}
	return s
}

// fakeMsg is a jetstream.Msg with a subject; the queue calls nothing else.
type fakeMsg struct {
	jetstream.Msg
	subject string
}

func (m fakeMsg) Subject() string { return m.subject }

// BenchmarkMerchantOf compares what scheduling by merchant costs per
// message: the subject's last token against decoding the body.
func BenchmarkMerchantOf(b *testing.B) {
	const subject = "payments.requests.m_000042"
	body := []byte(`{"payment_id":"pay_000001","merchant_id":"m_000042","customer_id":"c42","amount_minor":1999,` +
		`"currency":"EUR","payment_method":"pm_card_visa","description":"order 1","metadata":{"order":"o-1"}}`)
	b.Run("Subject", func(b *testing.B) {
		for b.Loop() {
			if merchantOf(subject) == "" {
				b.Fatal("empty")
			}
		}
	})
	b.Run("DecodeBody", func(b *testing.B) {
		for b.Loop() {
			r, err := payment.Decode(subject, body, payment.Limits{})
			if err != nil || r.MerchantID == "" {
				b.Fatal(err)
			}
		}
	})
}
