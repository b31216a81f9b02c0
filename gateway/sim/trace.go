package sim

import "sync"

// Bounds of the trace-context record.
const (
	maxTracedKeys     = 16384 // keys remembered; the oldest is forgotten first
	maxTracesPerKey   = 16    // traceparents kept per key; the oldest is dropped
	maxTraceParentLen = 128   // a longer header value is not a traceparent
)

// traceLog remembers, per idempotency key, the W3C traceparent headers of
// the charges and lookups the simulator received, so that a test (or an
// operator, through POST /v1/charges/lookup) can prove the gateway saw the
// payment's trace. Its zero value is ready; it is safe for concurrent use.
type traceLog struct {
	mu    sync.Mutex
	byKey map[string][]string
	order []string // keys in the order first seen
}

// record adds traceparent (when not empty) to key's list.
func (t *traceLog) record(key, traceparent string) {
	if key == "" || traceparent == "" || len(traceparent) > maxTraceParentLen {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byKey == nil {
		t.byKey = make(map[string][]string)
	}
	list, seen := t.byKey[key]
	if !seen {
		if len(t.order) >= maxTracedKeys {
			delete(t.byKey, t.order[0])
			t.order = t.order[1:]
		}
		t.order = append(t.order, key)
	}
	if len(list) >= maxTracesPerKey {
		list = list[1:]
	}
	t.byKey[key] = append(list, traceparent)
}

// get returns a copy of key's traceparents, oldest first.
func (t *traceLog) get(key string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.byKey[key]...)
}

// TraceParents returns the traceparent headers of the charges and lookups
// received for key, oldest first (at most 16; keys beyond the last 16384
// are forgotten). Requests without the header add nothing.
func (s *Server) TraceParents(key string) []string { return s.traces.get(key) }
