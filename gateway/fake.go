package gateway

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/paystream/paystream/gateway/internal/ledger"
	"github.com/paystream/paystream/payment"
)

// FakeName is the name of the fake gateway, as recorded in outcomes.
const FakeName = "fake"

// FakeConfig configures a Fake. The zero value is the default fake: it
// answers at once, charges successfully, and declines every amount whose
// last two digits are 13 with code card_declined.
type FakeConfig struct {
	// Latency is how long each new charge takes (replays and refusals answer
	// at once). Zero means none.
	Latency time.Duration
	// FailureRate is the fraction, 0 to 1, of new charges answered as a 503
	// (payment.ClassTrouble) without charging.
	FailureRate float64
	// DeclineRate is the fraction, 0 to 1, of new charges declined with code
	// insufficient_funds on top of the amount-13 rule.
	DeclineRate float64
	// Seed seeds the random draws and the charge id prefix. Zero means a
	// random seed.
	Seed int64
	// MaxKeys is how many completed idempotency keys the fake remembers
	// before it forgets the oldest, like a real gateway that keeps keys for
	// a day. Zero means 1,048,576 (about 100 MB); negative means no limit.
	MaxKeys int
	// MaxCharges is how many charges Lookup still finds, the oldest
	// forgotten first, like a real gateway that keeps charges searchable
	// for months after it forgot their keys. Zero means 4,194,304 (about
	// 100 bytes each with a 20-byte payment id: 400 MB when full); negative
	// means no limit. Never fewer than MaxKeys; no limit when MaxKeys has
	// none.
	MaxCharges int
}

// Fake is an in-process gateway (PAYSTREAM_GATEWAY_URL=fake). It honours
// idempotency keys like a real gateway: the same key with the same charge
// returns the first result and never charges twice, a second call for a key
// whose first call is still running gets a payment.ClassRetry *payment.GatewayError (409), and the
// same key with a different charge gets a payment.ClassRejected *payment.GatewayError (422,
// idempotency_key_reused). Failures (FailureRate) and cancelled calls leave
// no result, so a retry charges anew. Lookup finds each charge by its key,
// also after the key itself was forgotten.
//
// Memory stays bounded: each remembered key costs about 100 bytes (a hash of
// the key, a fingerprint of the charge and the charge number), and at most
// FakeConfig.MaxKeys completed keys are remembered; each charge kept for
// Lookup costs about 100 bytes more, for at most FakeConfig.MaxCharges
// charges.
//
// A Fake is safe for concurrent use.
type Fake struct {
	latency     time.Duration
	failureRate float64
	declineRate float64
	ledger      *ledger.Ledger

	mu  sync.Mutex // guards rng
	rng *rand.Rand
}

// NewFake returns a Fake configured by cfg. Rates outside 0–1 are clamped.
func NewFake(cfg FakeConfig) *Fake {
	seed := uint64(cfg.Seed)
	if cfg.Seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:]) // never fails (crypto/rand panics instead)
		seed = binary.LittleEndian.Uint64(b[:])
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &Fake{
		latency:     max(cfg.Latency, 0),
		failureRate: clampRate(cfg.FailureRate),
		declineRate: clampRate(cfg.DeclineRate),
		ledger: ledger.New(ledger.Config{
			ChargePrefix: fmt.Sprintf("fk%08x_", rng.Uint32()),
			MaxKeys:      cfg.MaxKeys,
			MaxCharges:   cfg.MaxCharges,
		}),
		rng: rng,
	}
}

func clampRate(r float64) float64 {
	if r != r || r < 0 { // NaN or negative
		return 0
	}
	return min(r, 1)
}

// Name returns "fake".
func (f *Fake) Name() string { return FakeName }

// Charge charges c, with the results and errors of HTTP.Charge: a Result
// when succeeded or declined, a *payment.GatewayError for a refused charge (400), a reused
// key (422), a key in flight (409) or a simulated failure (503), and ctx's
// error wrapped when ctx ends during the simulated latency.
func (f *Fake) Charge(ctx context.Context, c payment.Charge) (payment.ChargeResult, error) {
	if err := ctx.Err(); err != nil {
		return payment.ChargeResult{}, fmt.Errorf("gateway %s: charge: %w", FakeName, err)
	}
	fields := ledger.ChargeFields{
		Key:           c.IdempotencyKey,
		PaymentID:     c.PaymentID,
		MerchantID:    c.MerchantID,
		Currency:      c.Currency,
		PaymentMethod: c.PaymentMethod,
		Description:   c.Description,
		AmountMinor:   c.AmountMinor,
	}
	if problem := fields.Validate(); problem != "" {
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRejected, StatusCode: http.StatusBadRequest,
			Code: ledger.CodeInvalidRequest, Message: problem}
	}

	verdict, stored := f.ledger.Begin(c.IdempotencyKey, fields.Fingerprint())
	switch verdict {
	case ledger.Mismatch:
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRejected, StatusCode: http.StatusUnprocessableEntity,
			Code: ledger.CodeIdempotencyKeyReused, Message: "idempotency key reused with a different request"}
	case ledger.InFlight:
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassRetry, StatusCode: http.StatusConflict,
			Code: ledger.CodeIdempotencyKeyInUse, Message: "a request with this idempotency key is in progress"}
	case ledger.Replay:
		return toResult(stored), nil
	}

	// Started: this call owns the key and must record a result or abort.
	if f.latency > 0 {
		t := time.NewTimer(f.latency)
		select {
		case <-ctx.Done():
			t.Stop()
			f.ledger.Abort(c.IdempotencyKey)
			return payment.ChargeResult{}, fmt.Errorf("gateway %s: charge: %w", FakeName, ctx.Err())
		case <-t.C:
		}
	}
	fail, decline := f.roll()
	switch {
	case fail:
		f.ledger.Abort(c.IdempotencyKey)
		return payment.ChargeResult{}, &payment.GatewayError{Class: payment.ClassTrouble, StatusCode: http.StatusServiceUnavailable,
			Code: ledger.CodeUnavailable, Message: "simulated gateway failure"}
	case ledger.DeclinesAmount(c.AmountMinor):
		return toResult(f.ledger.Decline(c.IdempotencyKey, ledger.CodeCardDeclined)), nil
	case decline:
		return toResult(f.ledger.Decline(c.IdempotencyKey, ledger.CodeRandomDecline)), nil
	default:
		return toResult(f.ledger.Charge(fields)), nil
	}
}

// Lookup tells whether the fake made a charge under key, with the results
// and errors of HTTP.Lookup: Found with the charge (also long after the key
// was forgotten for idempotency, see FakeConfig.MaxCharges); not found for
// a key never charged, declined, failed or canceled; a payment.ClassRetry
// *payment.GatewayError (409, idempotency_key_in_use) while the key's first
// charge call is still running; a payment.ClassRejected one (400,
// invalid_request) for a key that is not 1–255 bytes of printable ASCII
// without space; and ctx's error wrapped when ctx has ended. Lookups answer
// at once and never fail at FailureRate, which applies to new charges only.
func (f *Fake) Lookup(ctx context.Context, key string) (payment.LookupResult, error) {
	if err := ctx.Err(); err != nil {
		return payment.LookupResult{}, fmt.Errorf("gateway %s: lookup: %w", FakeName, err)
	}
	if problem := ledger.ValidateKey(key); problem != "" {
		return payment.LookupResult{}, &payment.GatewayError{Class: payment.ClassRejected, StatusCode: http.StatusBadRequest,
			Code: ledger.CodeInvalidRequest, Message: "idempotency_key: " + problem}
	}
	c, found, inFlight := f.ledger.Find(key)
	switch {
	case found:
		return payment.LookupResult{Found: true, ChargeID: c.ChargeID, AmountMinor: c.AmountMinor,
			Currency: c.Currency, PaymentID: c.PaymentID}, nil
	case inFlight:
		return payment.LookupResult{}, &payment.GatewayError{Class: payment.ClassRetry, StatusCode: http.StatusConflict,
			Code: ledger.CodeIdempotencyKeyInUse, Message: "a request with this idempotency key is in progress"}
	}
	return payment.LookupResult{}, nil
}

// roll draws whether a new charge fails and whether it is declined.
func (f *Fake) roll() (fail, decline bool) {
	if f.failureRate == 0 && f.declineRate == 0 {
		return false, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < f.failureRate, f.rng.Float64() < f.declineRate
}

func toResult(r ledger.Result) payment.ChargeResult {
	if r.Charged {
		return payment.ChargeResult{Status: payment.StatusSucceeded, ChargeID: r.ChargeID}
	}
	return payment.ChargeResult{Status: payment.StatusDeclined, DeclineCode: r.DeclineCode}
}

// Stats returns a snapshot of the fake's ledger counters (real charges,
// keys, keys in flight, payment ids charged under more than one key), for
// tests.
func (f *Fake) Stats() ledger.Stats { return f.ledger.Stats() }

// ChargesFor returns the number of real charges made for key: 0 or 1.
func (f *Fake) ChargesFor(key string) int { return f.ledger.ChargesFor(key) }
