package fleet_test

import (
	"maps"
	"sync"
)

// callLedger counts the gateway calls of several callers (in-process
// stacks or worker processes, by number) and, while watching, the calls
// that start while another caller's call runs — what "only one worker
// probes" forbids. The zero value is ready to use.
type callLedger struct {
	mu       sync.Mutex
	inFlight map[int]int // calls in flight by caller
	calls    map[int]int // calls made by caller
	overlap  int         // calls started while another caller's call ran
	watching bool        // count overlaps (while the fleet is down)
}

func (l *callLedger) callStart(id int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight == nil {
		l.inFlight, l.calls = map[int]int{}, map[int]int{}
	}
	if l.watching {
		for other, n := range l.inFlight {
			if other != id && n > 0 {
				l.overlap++
				break
			}
		}
	}
	l.inFlight[id]++
	l.calls[id]++
}

func (l *callLedger) callEnd(id int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight[id]--
}

// callsBy returns the calls each caller made so far.
func (l *callLedger) callsBy() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.calls)
}

// watch starts counting overlaps (on) or stops and returns how many there
// were.
func (l *callLedger) watch(on bool) (overlaps int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watching = on
	return l.overlap
}
