package sim

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Meter wraps a simulator's handler for fleet measurements: it counts the
// charge requests (POST /v1/charges) that arrive in each wall-clock
// second, and with SetMaxConcurrent it answers 429 rate_limited (with
// Retry-After 0) to a charge that would make more than that many charges in
// flight — a gateway whose capacity is a concurrency. GET /v1/meter answers
// the counts as JSON: {"seconds":[{"unix":…,"charges":…,"rejected":…},…],
// "in_flight":…,"peak_in_flight":…,"max_concurrent":…}. It keeps the counts
// of the last DefaultMeterWindow (SetWindow changes it) and forgets older
// seconds, so that a simulator left running does not grow. A Meter is safe
// for concurrent use.
type Meter struct {
	next http.Handler

	maxConcurrent atomic.Int64 // 0: no limit
	inFlight      atomic.Int64
	peak          atomic.Int64
	total         atomic.Int64 // charge requests ever, for Charges

	mu      sync.Mutex
	seconds map[int64]*SecondCount
	window  int64 // seconds kept, counting the current one
}

// DefaultMeterWindow is how many seconds of counts a Meter keeps by default.
const DefaultMeterWindow = time.Hour

// SecondCount is one second's charge requests at a Meter: all that
// arrived, and those answered 429 for the concurrency limit.
type SecondCount struct {
	Unix     int64 `json:"unix"`
	Charges  int   `json:"charges"`
	Rejected int   `json:"rejected"`
}

// NewMeter returns a Meter in front of next (a *Server, usually).
func NewMeter(next http.Handler) *Meter {
	m := &Meter{next: next, seconds: map[int64]*SecondCount{}, window: int64(DefaultMeterWindow / time.Second)}
	return m
}

// SetWindow sets how far back the counts go: the seconds older than d
// (at least one second) before the latest one counted are forgotten.
func (m *Meter) SetWindow(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.window = max(int64(d/time.Second), 1)
	m.prune(m.latest())
}

// latest returns the latest second counted (0 when none). Called with
// m.mu held.
func (m *Meter) latest() int64 {
	var last int64
	for s := range m.seconds {
		last = max(last, s)
	}
	return last
}

// prune forgets the seconds that fell out of the window ending at sec.
// Called with m.mu held, once per new second: the map holds at most a
// window of seconds, so the walk is short.
func (m *Meter) prune(sec int64) {
	for s := range m.seconds {
		if s <= sec-m.window {
			delete(m.seconds, s)
		}
	}
}

// Len returns how many seconds of counts the meter holds.
func (m *Meter) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seconds)
}

// SetMaxConcurrent sets how many charges may be in flight before more are
// answered 429; 0 means no limit.
func (m *Meter) SetMaxConcurrent(n int) { m.maxConcurrent.Store(int64(max(n, 0))) }

// PeakInFlight returns the most charges that were in flight at once since
// the last ResetPeak.
func (m *Meter) PeakInFlight() int { return int(m.peak.Load()) }

// ResetPeak forgets the peak of charges in flight.
func (m *Meter) ResetPeak() { m.peak.Store(m.inFlight.Load()) }

// Seconds returns the counts of the whole seconds from from to to (both
// truncated to the second, to excluded), one per second, zero where none
// arrived.
func (m *Meter) Seconds(from, to time.Time) []SecondCount {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SecondCount
	for s := from.Unix(); s < to.Unix(); s++ {
		c := SecondCount{Unix: s}
		if got := m.seconds[s]; got != nil {
			c = *got
		}
		out = append(out, c)
	}
	return out
}

// Charges is how many charge requests have arrived since the Meter was
// made, whatever the window.
func (m *Meter) Charges() int64 { return m.total.Load() }

// ServeHTTP counts and limits charges and passes every request on.
func (m *Meter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/v1/meter" {
		m.serveCounts(w)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/charges" {
		m.next.ServeHTTP(w, r)
		return
	}
	m.total.Add(1)
	n := m.inFlight.Add(1)
	defer m.inFlight.Add(-1)
	for {
		p := m.peak.Load()
		if n <= p || m.peak.CompareAndSwap(p, n) {
			break
		}
	}
	limit := m.maxConcurrent.Load()
	rejected := limit > 0 && n > limit
	m.count(time.Now().Unix(), rejected)
	if rejected {
		w.Header().Set("Retry-After", "0")
		writeJSON(w, http.StatusTooManyRequests, errorFor(http.StatusTooManyRequests, "rate_limited",
			"more than "+strconv.FormatInt(limit, 10)+" charges in flight"))
		return
	}
	m.next.ServeHTTP(w, r)
}

func (m *Meter) count(sec int64, rejected bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.seconds[sec]
	if c == nil {
		m.prune(sec)
		c = &SecondCount{Unix: sec}
		m.seconds[sec] = c
	}
	c.Charges++
	if rejected {
		c.Rejected++
	}
}

func (m *Meter) serveCounts(w http.ResponseWriter) {
	m.mu.Lock()
	secs := make([]SecondCount, 0, len(m.seconds))
	for _, c := range m.seconds {
		secs = append(secs, *c)
	}
	m.mu.Unlock()
	slices.SortFunc(secs, func(a, b SecondCount) int { return cmp.Compare(a.Unix, b.Unix) })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Seconds       []SecondCount `json:"seconds"`
		InFlight      int64         `json:"in_flight"`
		PeakInFlight  int64         `json:"peak_in_flight"`
		MaxConcurrent int64         `json:"max_concurrent"`
	}{secs, m.inFlight.Load(), m.peak.Load(), m.maxConcurrent.Load()})
}
