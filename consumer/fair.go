package consumer

import (
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fairQueue hands fetched messages to the worker's slots fairly by merchant
// (docs/fleet.md "Fairness"). The pull loop fetches into free slots plus a
// small lookahead (Config.Lookahead); every fetched message is pushed here,
// with its InProgress heartbeat already running, so that holding it costs no
// redelivery (docs/contract.md §11.1). Whenever a slot is free, the queue
// starts the held message of the merchant with the fewest payments in
// flight, merchants with equal counts taking turns (round robin), each
// merchant's own messages in fetch order. A message held longer than
// maxHold goes first whatever its merchant, so that no merchant starves
// either. With no lookahead a fetched message waits at most for a handler
// that has just returned to finish its bookkeeping and take it.
//
// The merchant is the last token of the subject (<prefix>.requests.<merchant_id>,
// docs/contract.md §2): no body is decoded to schedule a message. A subject
// that disagrees with its body is dead-lettered invalid by processing
// anyway.
//
// A fairQueue is safe for concurrent use. It runs start in goroutines of
// its own, at most slots of them: a goroutine that finishes a message keeps
// its slot for the next one held, and when none is held it parks until a
// push hands it one, so that goroutines (and the stacks they have grown)
// are reused rather than started per message or per fetch. Its owner ends
// them with wait.
type fairQueue struct {
	slots   int           // messages processed at once (Config.Concurrency)
	maxHold time.Duration // hold time after which a message goes first
	now     func() time.Time
	start   func(m held) // runs in one of the queue's goroutines; the slot is free when it returns
	running sync.WaitGroup

	mu        sync.Mutex
	busy      int               // slots taken
	spawned   int               // goroutines started (read by tests only)
	parked    []chan held       // idle goroutines, each waiting on its channel (capacity 1) for a message
	closed    bool              // wait was called: goroutines end instead of parking
	pending   map[string][]held // per merchant, in fetch order
	order     []string          // merchants with pending messages, in turn order
	inFlight  map[string]int
	heldCount int
}

// held is a fetched message waiting for a slot.
type held struct {
	msg      jetstream.Msg
	hb       *heartbeat
	merchant string
	at       time.Time
}

func newFairQueue(slots int, maxHold time.Duration, start func(m held)) *fairQueue {
	return &fairQueue{slots: slots, maxHold: maxHold, now: time.Now, start: start,
		pending: map[string][]held{}, inFlight: map[string]int{}}
}

// merchantOf returns the merchant token of a request subject: its last
// token.
func merchantOf(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// push holds m until a slot is free, then starts it. It must not be
// called once wait has been.
func (q *fairQueue) push(m held) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		// Its goroutine would start after running.Wait and nobody would
		// wait for it.
		panic("consumer: fairQueue.push after wait")
	}
	m.at = q.now()
	if len(q.pending[m.merchant]) == 0 {
		q.order = append(q.order, m.merchant)
	}
	q.pending[m.merchant] = append(q.pending[m.merchant], m)
	q.heldCount++
	q.dispatchLocked()
}

// run runs m, then each message finish hands it, in one goroutine.
func (q *fairQueue) run(m held) {
	defer q.running.Done()
	next := make(chan held, 1)
	for ok := true; ok; m, ok = q.finish(m.merchant, next) {
		q.start(m)
	}
}

// finish frees the slot of a message of merchant that has finished and
// returns the message that goes next for the caller to run: one held now,
// or else the next one pushed, which dispatchLocked sends on next while the
// caller is parked. It returns false once wait has been called.
func (q *fairQueue) finish(merchant string, next chan held) (held, bool) {
	q.mu.Lock()
	q.busy--
	if q.inFlight[merchant]--; q.inFlight[merchant] <= 0 {
		delete(q.inFlight, merchant)
	}
	if q.heldCount > 0 {
		m := q.takeLocked()
		q.mu.Unlock()
		return m, true
	}
	if q.closed {
		q.mu.Unlock()
		return held{}, false
	}
	q.parked = append(q.parked, next)
	q.mu.Unlock()
	m, ok := <-next
	return m, ok
}

// wait ends the queue's goroutines and waits for them: call it once nothing
// is pushed any more and every message pushed has finished.
func (q *fairQueue) wait() {
	q.mu.Lock()
	q.closed = true
	for _, next := range q.parked {
		close(next)
	}
	q.parked = nil
	q.mu.Unlock()
	q.running.Wait()
}

// held returns how many messages wait for a slot.
func (q *fairQueue) held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.heldCount
}

// dispatchLocked hands each held message a free slot takes to a parked
// goroutine, the one parked last (its stack is the likeliest to be still
// grown: the collector halves a parked goroutine's stack at each cycle, so
// the saving is for goroutines parked shorter than about one, which under
// load is most), or to a new one when none is parked.
func (q *fairQueue) dispatchLocked() {
	for q.busy < q.slots && q.heldCount > 0 {
		m := q.takeLocked()
		if n := len(q.parked); n > 0 {
			next := q.parked[n-1]
			q.parked[n-1] = nil
			q.parked = q.parked[:n-1]
			next <- m // never blocks: a parked goroutine's channel is empty
			continue
		}
		q.running.Add(1)
		q.spawned++
		go q.run(m)
	}
}

// takeLocked removes the message that goes next from the held ones and
// gives it a slot; some message is held.
func (q *fairQueue) takeLocked() held {
	i := q.pickLocked()
	merchant := q.order[i]
	queue := q.pending[merchant]
	m := queue[0]
	queue[0] = held{}
	// The merchant served leaves the turn order, and goes to its back
	// while it has messages held.
	q.order = append(q.order[:i], q.order[i+1:]...)
	if queue = queue[1:]; len(queue) == 0 {
		delete(q.pending, merchant)
	} else {
		q.pending[merchant] = queue
		q.order = append(q.order, merchant)
	}
	q.heldCount--
	q.busy++
	q.inFlight[merchant]++
	return m
}

// pickLocked returns the index in order of the merchant whose head message
// goes next: one held longer than maxHold (the oldest such), else the
// merchant with the fewest messages in flight, the earliest in turn order
// among equals.
func (q *fairQueue) pickLocked() int {
	now := q.now()
	best, oldest := -1, -1
	for i, merchant := range q.order {
		head := q.pending[merchant][0]
		if now.Sub(head.at) >= q.maxHold && (oldest < 0 || head.at.Before(q.pending[q.order[oldest]][0].at)) {
			oldest = i
		}
		if best < 0 || q.inFlight[merchant] < q.inFlight[q.order[best]] {
			best = i
		}
	}
	if oldest >= 0 {
		return oldest
	}
	return best
}
