package processing

import (
	"math"
	"time"
)

// The AIMD concurrency limit, after Netflix's concurrency-limits (AIMDLimit,
// with the gradient's idea of comparing short- and long-term latency). We
// write these forty lines rather than take a Go port: the one port of that
// library (platinummonkey/go-concurrency-limits) is unmaintained and brings
// its own limiter, metrics registry and strategy types, while all a guard
// needs is one number that Admit reads.
const (
	// aimdBackoff multiplies the limit on congestion.
	aimdBackoff = 0.9
	// aimdTolerance is how far the short-term latency may rise above the
	// long-term one before it counts as congestion.
	aimdTolerance = 2.0
	// The latency averages' weights: short-term 1/10, long-term 1/100.
	shortWeight = 10
	longWeight  = 100
)

// aimd is a guard's concurrency limit: fixed (at max, or none when max is
// 0), or adaptive between 1 and max. It is not safe for concurrent use (the
// guard holds its lock).
type aimd struct {
	adaptive bool
	max      float64
	limit    float64
	// ewma and long are the short- and long-term averages of the latency
	// of calls that got an answer other than a congestion signal.
	ewma, long time.Duration
	// lastDecrease is when the limit last shrank: it shrinks at most once
	// per round trip, so that one burst of 429s counts once.
	lastDecrease time.Time
}

func newAIMD(cfg GuardConfig) aimd {
	a := aimd{adaptive: cfg.Adaptive, max: float64(cfg.Concurrency), limit: float64(cfg.Concurrency)}
	if a.adaptive {
		// Start low, as TCP's slow start does not: growth is one per
		// round trip of a full window, so a quarter of the ceiling is
		// reached at once and the rest learnt.
		a.limit = max(1, math.Ceil(a.max/4))
	}
	return a
}

// current returns the limit in messages; 0 means none.
func (a *aimd) current() int {
	if a.max <= 0 {
		return 0
	}
	return max(1, int(a.limit))
}

// sample takes one call's latency, the calls in flight when it started
// (itself included), and whether its answer said the gateway is congested
// (429, timeout); it returns the new limit (0 none). The limit grows by
// 1/limit per call while at least half of it is used — one per round trip
// of a full window — and shrinks by aimdBackoff on congestion or when the
// short-term latency exceeds aimdTolerance times the long-term.
func (a *aimd) sample(now time.Time, latency time.Duration, inFlight int, congested bool) int {
	if !congested {
		if a.ewma == 0 {
			a.ewma, a.long = latency, latency
		} else {
			a.ewma += (latency - a.ewma) / shortWeight
			a.long += (latency - a.long) / longWeight
		}
	}
	if !a.adaptive || a.max <= 0 {
		return a.current()
	}
	slow := a.long > 0 && float64(a.ewma) > aimdTolerance*float64(a.long)
	switch {
	case congested || slow:
		if now.Sub(a.lastDecrease) >= max(a.ewma, time.Millisecond) {
			a.limit = max(1, a.limit*aimdBackoff)
			a.lastDecrease = now
		}
	case float64(inFlight)*2 >= a.limit:
		a.limit = min(a.max, a.limit+1/a.limit)
	}
	return a.current()
}
