// Package ledger is the idempotency ledger shared by the in-process fake
// gateway (gateway.Fake) and the HTTP gateway simulator (gateway/sim).
//
// It behaves like a real gateway's idempotency layer: the first request for a
// key runs (Begin returns Started and the caller must record a result with
// Charge or Decline, or Abort it), a
// second request for the same key while the first runs is told the key is in
// flight, a request with the same key but a different body is told the key
// was reused, and once a result is recorded every later request with the same
// key and body gets that first result again. A charge therefore happens at
// most once per retained key.
//
// # Memory
//
// The ledger keeps one compact entry per key: the key is stored as a 128-bit
// hash (not the string) and the entry holds a 64-bit body fingerprint, the
// charge number and a one-byte decline code index, about 40 bytes of map
// payload per key. Payment ids that were charged are kept as 64-bit hashes
// (to detect a payment charged under two different keys). Like a real
// gateway, which forgets idempotency keys after a while, the ledger retains
// at most Config.MaxKeys completed keys (default DefaultMaxKeys, about 100 MB
// at the default) and forgets the oldest beyond that, so a long benchmark
// does not grow memory without bound. In-flight keys are never forgotten;
// their number is bounded by the callers' concurrency.
//
// # Charges kept for lookup
//
// Like a real gateway, which keeps charges searchable for months after it
// forgot their idempotency keys, the ledger keeps each charge (not a
// decline) in a second, larger store that Find searches by key: the charge
// number, amount, currency and payment id under a 128-bit hash of the key,
// about 100 bytes per charge with a 20-byte payment id, plus the payment id's
// length beyond that (TestMemoryPerCharge). It keeps the latest
// Config.MaxCharges charges (default DefaultMaxCharges, 4,194,304: about
// 400 MB when full; never fewer than MaxKeys, so that a lookup never says
// "no charge" for a key whose charge is still replayed). A key charged again
// after it was forgotten keeps its first charge for lookup.
package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// DefaultMaxKeys is the number of completed keys retained when
// Config.MaxKeys is zero.
const DefaultMaxKeys = 1 << 20

// DefaultMaxCharges is the number of charges kept for lookup when
// Config.MaxCharges is zero: four times DefaultMaxKeys.
const DefaultMaxCharges = 4 * DefaultMaxKeys

// MaxDoubleCharged bounds the number of payment ids listed in
// Stats.DoubleCharged; more double charges are still counted in
// Stats.DoubleChargedTotal.
const MaxDoubleCharged = 10_000

// Config configures a Ledger.
type Config struct {
	// ChargePrefix is prepended to every charge id after "ch_", so that two
	// ledgers hand out different ids. Empty means none.
	ChargePrefix string
	// MaxKeys is how many completed keys are retained before the oldest are
	// forgotten. Zero means DefaultMaxKeys; a negative value means no limit.
	MaxKeys int
	// MaxCharges is how many charges are kept for Find before the oldest
	// are forgotten. Zero means DefaultMaxCharges; a negative value means no
	// limit. It is raised to MaxKeys when smaller, and has no limit when
	// MaxKeys has none.
	MaxCharges int
}

// Verdict is what Begin found for a key.
type Verdict uint8

// The verdicts of Begin.
const (
	// Started: the key was unknown and is now in flight; the caller owns it
	// and must call Charge, Decline or Abort exactly once.
	Started Verdict = iota + 1
	// InFlight: another request for the key is still running.
	InFlight
	// Mismatch: the key was used with a different body.
	Mismatch
	// Replay: the key has a recorded result, returned by Begin.
	Replay
)

// Result is a recorded result: a charge (Charged, ChargeID) or a decline
// (DeclineCode).
type Result struct {
	Charged     bool
	ChargeID    string
	DeclineCode string
}

// ChargeRecord is a charge kept for lookup (Find).
type ChargeRecord struct {
	ChargeID    string
	PaymentID   string
	Currency    string
	AmountMinor int64
}

// Stats are counters of a Ledger.
type Stats struct {
	// Charges is the number of real charges ever made.
	Charges int64
	// Keys is the number of keys that got a recorded result (a key forgotten
	// and then used again counts twice).
	Keys int
	// InFlight is the number of keys currently in flight.
	InFlight int
	// DoubleCharged lists payment ids charged under more than one key, at
	// most MaxDoubleCharged of them, in the order detected.
	DoubleCharged []string
	// DoubleChargedTotal counts every payment id charged under more than one
	// key, including those beyond MaxDoubleCharged.
	DoubleChargedTotal int
}

// declinedCode is recorded for a decline without a code.
const declinedCode = "declined"

type keyHash [16]byte

const (
	stateInFlight uint8 = iota + 1
	stateDone
)

// entry is the compact per-key record.
type entry struct {
	fp      uint64 // body fingerprint
	charge  uint64 // charge number (> 0) when charged
	state   uint8
	decline uint8 // index into Ledger.codes when declined (> 0)
}

// retained is one slot of the FIFO of completed keys.
type retained struct {
	key keyHash
	pid uint64 // hash of the charged payment id; 0 when not charged
}

// kept is a charge kept for lookup, in compact form.
type kept struct {
	charge      uint64 // charge number
	amountMinor int64
	paymentID   string
	currency    string
}

// Ledger is an idempotency ledger. It is safe for concurrent use.
type Ledger struct {
	prefix     string
	maxKeys    int
	maxCharges int

	mu         sync.Mutex
	entries    map[keyHash]entry
	paid       map[uint64]uint8 // payment id hash → charges (saturating)
	codes      []string         // decline codes by index; codes[0] = ""
	codeIndex  map[string]uint8
	fifo       []retained // ring of completed keys, oldest at head
	head, size int
	kept       map[keyHash]kept // charges for Find
	keptOrder  ring             // keys of kept, oldest first
	currencies map[string]string
	charges    int64
	keys       int
	inFlight   int
	doubles    []string
	doublesN   int
}

// New returns an empty Ledger.
func New(cfg Config) *Ledger {
	maxKeys := cfg.MaxKeys
	if maxKeys == 0 {
		maxKeys = DefaultMaxKeys
	}
	maxCharges := cfg.MaxCharges
	if maxCharges == 0 {
		maxCharges = DefaultMaxCharges
	}
	switch {
	case maxKeys < 0:
		maxCharges = -1
	case maxCharges >= 0:
		maxCharges = max(maxCharges, maxKeys)
	}
	return &Ledger{
		prefix:     cfg.ChargePrefix,
		maxKeys:    maxKeys,
		maxCharges: maxCharges,
		kept:       make(map[keyHash]kept),
		currencies: make(map[string]string),
		entries:    make(map[keyHash]entry),
		paid:       make(map[uint64]uint8),
		codes:      []string{"", declinedCode},
		codeIndex:  map[string]uint8{declinedCode: 1},
	}
}

// Fingerprint hashes the fields of a charge request into a 64-bit body
// fingerprint; the fields are length-prefixed so that their boundaries count.
func Fingerprint(fields ...string) uint64 {
	h := sha256.New()
	var n [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

func hashKey(key string) keyHash {
	sum := sha256.Sum256([]byte(key))
	var k keyHash
	copy(k[:], sum[:])
	return k
}

func hashPayment(paymentID string) uint64 {
	sum := sha256.Sum256([]byte(paymentID))
	h := binary.BigEndian.Uint64(sum[:])
	if h == 0 { // 0 marks "not charged" in the FIFO
		h = 1
	}
	return h
}

// Begin looks the key up with the body fingerprint fp. With Started the key
// is now in flight and the caller must call Charge, Decline or Abort; with
// Replay the recorded result is returned.
func (l *Ledger) Begin(key string, fp uint64) (Verdict, Result) {
	k := hashKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[k]
	switch {
	case !ok:
		l.entries[k] = entry{fp: fp, state: stateInFlight}
		l.inFlight++
		return Started, Result{}
	case e.fp != fp:
		return Mismatch, Result{}
	case e.state == stateInFlight:
		return InFlight, Result{}
	default:
		return Replay, l.result(e)
	}
}

// Abort forgets a key in flight without recording a result, so that the
// next request for it runs again. It does nothing for a key not in flight.
func (l *Ledger) Abort(key string) {
	k := hashKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[k]; ok && e.state == stateInFlight {
		delete(l.entries, k)
		l.inFlight--
	}
}

// Charge records a real charge of f as the result of its key, which must be
// in flight, keeps the charge for Find, and returns the result. It panics if
// the key is not in flight (a caller bug).
func (l *Ledger) Charge(f ChargeFields) Result {
	return l.complete(f.Key, f, true, "")
}

// Decline records a decline with the given code as the result of a key in
// flight and returns it. It panics if the key is not in flight.
func (l *Ledger) Decline(key, code string) Result {
	return l.complete(key, ChargeFields{}, false, code)
}

func (l *Ledger) complete(key string, f ChargeFields, charged bool, code string) Result {
	k := hashKey(key)
	var pid uint64
	if charged {
		pid = hashPayment(f.PaymentID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[k]
	if !ok || e.state != stateInFlight {
		panic(fmt.Sprintf("ledger: complete of key %q that is not in flight", key))
	}
	e.state = stateDone
	l.inFlight--
	l.keys++
	if charged {
		l.charges++
		e.charge = uint64(l.charges)
		switch n := l.paid[pid]; n {
		case 0:
			l.paid[pid] = 1
		case 1:
			l.paid[pid] = 2
			l.doublesN++
			if len(l.doubles) < MaxDoubleCharged {
				l.doubles = append(l.doubles, strings.Clone(f.PaymentID))
			}
		}
		// The ledger keeps its own copies: a caller's strings may be
		// slices of a bigger one (payment.Decode's fields share one copy
		// of the request body), which a kept charge would pin.
		l.keep(k, kept{charge: e.charge, amountMinor: f.AmountMinor, paymentID: strings.Clone(f.PaymentID), currency: l.currency(f.Currency)})
	} else {
		e.decline = l.intern(code)
	}
	l.entries[k] = e
	l.retain(retained{key: k, pid: pid})
	return l.result(e)
}

// intern returns the index of a decline code. Once 255 distinct codes are
// known, further ones are recorded as "declined". Called with l.mu held.
func (l *Ledger) intern(code string) uint8 {
	if code == "" {
		code = declinedCode
	}
	if i, ok := l.codeIndex[code]; ok {
		return i
	}
	if len(l.codes) > 255 {
		return l.codeIndex[declinedCode]
	}
	i := uint8(len(l.codes))
	l.codes = append(l.codes, code)
	l.codeIndex[code] = i
	return i
}

// retain appends a completed key to the FIFO and forgets the oldest ones
// beyond maxKeys. Called with l.mu held.
func (l *Ledger) retain(r retained) {
	if l.maxKeys < 0 {
		return
	}
	for l.size >= l.maxKeys {
		old := l.fifo[l.head]
		l.fifo[l.head] = retained{}
		l.head = (l.head + 1) % len(l.fifo)
		l.size--
		if e, ok := l.entries[old.key]; ok && e.state == stateDone {
			delete(l.entries, old.key)
		}
		if old.pid != 0 {
			delete(l.paid, old.pid)
		}
	}
	if l.size == len(l.fifo) { // grow the ring, keeping order
		n := max(16, 2*len(l.fifo))
		n = min(n, l.maxKeys)
		grown := make([]retained, n)
		for i := range l.size {
			grown[i] = l.fifo[(l.head+i)%len(l.fifo)]
		}
		l.fifo, l.head = grown, 0
	}
	l.fifo[(l.head+l.size)%len(l.fifo)] = r
	l.size++
}

// keep keeps a charge for Find, unless the key already has one, and
// forgets the oldest charges beyond maxCharges. Called with l.mu held.
func (l *Ledger) keep(k keyHash, c kept) {
	if _, ok := l.kept[k]; ok {
		return
	}
	if l.maxCharges >= 0 {
		for l.keptOrder.len() >= l.maxCharges {
			delete(l.kept, l.keptOrder.pop())
		}
		l.keptOrder.push(k, l.maxCharges)
	}
	l.kept[k] = c
}

// currency returns c, shared with earlier charges in the same currency so
// that each kept charge does not hold its own copy; at most 1024 distinct
// currencies are shared. Called with l.mu held.
func (l *Ledger) currency(c string) string {
	if shared, ok := l.currencies[c]; ok {
		return shared
	}
	c = strings.Clone(c)
	if len(l.currencies) < 1024 {
		l.currencies[c] = c
	}
	return c
}

// Find returns the charge kept for key (found) and whether a request for
// key is in flight. A charge made under key is found long after the key
// itself was forgotten (Config.MaxCharges); a declined, aborted or unknown
// key has none. It changes nothing.
func (l *Ledger) Find(key string) (c ChargeRecord, found, inFlight bool) {
	k := hashKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[k]
	inFlight = ok && e.state == stateInFlight
	kc, found := l.kept[k]
	if !found {
		return ChargeRecord{}, false, inFlight
	}
	return ChargeRecord{
		ChargeID:    l.chargeID(kc.charge),
		PaymentID:   kc.paymentID,
		Currency:    kc.currency,
		AmountMinor: kc.amountMinor,
	}, true, inFlight
}

// ring is a FIFO of key hashes that grows up to a bound.
type ring struct {
	buf        []keyHash
	head, size int
}

func (r *ring) len() int { return r.size }

// push appends k; the caller keeps len() below bound.
func (r *ring) push(k keyHash, bound int) {
	if r.size == len(r.buf) { // grow, keeping order
		n := min(max(16, 2*len(r.buf)), bound)
		grown := make([]keyHash, n)
		for i := range r.size {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = k
	r.size++
}

// pop removes and returns the oldest key.
func (r *ring) pop() keyHash {
	k := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return k
}

// result rebuilds the recorded result of a completed entry. Called with l.mu
// held.
func (l *Ledger) result(e entry) Result {
	if e.charge > 0 {
		return Result{Charged: true, ChargeID: l.chargeID(e.charge)}
	}
	return Result{DeclineCode: l.codes[e.decline]}
}

func (l *Ledger) chargeID(n uint64) string {
	return "ch_" + l.prefix + strconv.FormatUint(n, 10)
}

// ChargesFor returns the number of real charges recorded for key: 1 if its
// retained result is a charge, else 0.
func (l *Ledger) ChargesFor(key string) int {
	k := hashKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[k]; ok && e.state == stateDone && e.charge > 0 {
		return 1
	}
	return 0
}

// State is what a ledger knows of a key (Lookup).
type State uint8

// The states of a key.
const (
	// Unknown: never seen, aborted, or forgotten.
	Unknown State = iota
	// Running: the key's first request is in flight.
	Running
	// Done: the key has a recorded result.
	Done
)

// Lookup returns what the ledger holds for key, and its recorded result when
// the state is Done. It changes nothing.
func (l *Ledger) Lookup(key string) (State, Result) {
	k := hashKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[k]
	switch {
	case !ok:
		return Unknown, Result{}
	case e.state == stateInFlight:
		return Running, Result{}
	default:
		return Done, l.result(e)
	}
}

// Stats returns a snapshot of the counters.
func (l *Ledger) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		Charges:            l.charges,
		Keys:               l.keys,
		InFlight:           l.inFlight,
		DoubleCharged:      append([]string{}, l.doubles...),
		DoubleChargedTotal: l.doublesN,
	}
}
