// Package risk asks risk services whether a payment may be charged, before
// the charge: the one place where paystream fans a call out to several
// providers at once (docs/fleet.md, "Fan-out only where it is safe").
//
// A fan-out is safe only for a call without side effects: calling three
// providers and keeping the first answer is harmless when the calls change
// nothing, and charges a customer three times when they are charges. The
// package makes the second impossible by construction:
//
//   - FanOut calls only Checkers, whose one call is Check(ctx, Query). The
//     gateway port (processing.Gateway: Charge and Lookup) is a different
//     type with different methods; no gateway client is a Checker
//     (TestChargingGatewaysAreNoCheckers), so a charge cannot be handed to
//     a FanOut — the program does not compile.
//   - A Query carries what a risk decision needs — payment id, merchant,
//     customer, amount, currency — and neither the payment method nor an
//     idempotency key (TestQueryCannotCharge): even a Checker written to
//     wrap a gateway has nothing to charge with.
//   - The package imports nothing of paystream: no payment, no gateway. A
//     Checker cannot even name a charge (internal/archtest keeps it so).
//   - riskhttp.HTTP, the one Checker the worker builds, posts to
//     {base}/v1/risk and nowhere else.
package risk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Query is what a risk check sees of a payment. It deliberately has no
// payment method and no idempotency key (see the package comment).
type Query struct {
	PaymentID   string `json:"payment_id"`
	MerchantID  string `json:"merchant_id"`
	CustomerID  string `json:"customer_id,omitempty"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// Verdict is a risk service's answer.
type Verdict string

// The verdicts.
const (
	Allow Verdict = "allow"
	Deny  Verdict = "deny"
)

// Decision is one answer to a Query.
type Decision struct {
	Verdict Verdict
	// Reason is the provider's reason code for a deny, if it gave one.
	Reason string
	// Provider names the Checker that answered.
	Provider string
}

// Checker is a side-effect-free call: asking it twice, or asking several
// at once and ignoring all answers but one, changes nothing anywhere.
// Implementations are safe for concurrent use and return promptly when ctx
// ends.
type Checker interface {
	// Name identifies the provider in decisions and logs.
	Name() string
	// Check answers q: a Decision whose Verdict is Allow or Deny, or an
	// error when the provider cannot answer now.
	Check(ctx context.Context, q Query) (Decision, error)
}

// ErrNoAnswer is the error of a FanOut whose every provider failed or ran
// out of time: the payment's risk is unknown.
var ErrNoAnswer = errors.New("no risk provider answered")

// FanOut asks every Checker at once and takes the first answer (hedged,
// first answer wins): the providers are replicas of one risk service, so
// any answer is the answer, and the fastest one bounds the latency. A
// provider's error does not decide: the others may still answer. When one
// answers, the calls still running are cancelled through their context,
// and Check returns only after every call has returned, so that no
// goroutine outlives it. The whole fan-out is bounded by a timeout.
//
// FanOut is the wrong tool for providers with different policies (where
// every answer matters, and a deny from any should win): it is offered for
// redundancy, not for a quorum.
type FanOut struct {
	checkers []Checker
	timeout  time.Duration
}

// NewFanOut returns a FanOut over checkers, each call bounded by timeout.
// It fails with no checker, a nil one, or a timeout that is not positive.
func NewFanOut(timeout time.Duration, checkers ...Checker) (*FanOut, error) {
	if len(checkers) == 0 {
		return nil, errors.New("risk: a fan-out needs at least one checker")
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("risk: timeout must be positive, got %s", timeout)
	}
	for i, c := range checkers {
		if c == nil {
			return nil, fmt.Errorf("risk: checker %d is nil", i)
		}
	}
	return &FanOut{checkers: checkers, timeout: timeout}, nil
}

// Timeout returns the fan-out's timeout.
func (f *FanOut) Timeout() time.Duration { return f.timeout }

// answer is one provider's result.
type answer struct {
	d   Decision
	err error
}

// Check asks every provider and returns the first Decision whose verdict
// is Allow or Deny. When none answers — all failed, or the timeout or ctx
// ended first — it returns an error wrapping ErrNoAnswer and every
// provider's error (ctx's own error too, when ctx ended). It returns only
// after every call it started has returned.
func (f *FanOut) Check(ctx context.Context, q Query) (Decision, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.timeout, fmt.Errorf("%w within %s", ErrNoAnswer, f.timeout))
	answers := make(chan answer, len(f.checkers)) // never blocks a sender
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: the losers are told to stop first
	defer cancel()
	for _, c := range f.checkers {
		wg.Go(func() {
			d, err := c.Check(ctx, q)
			if err == nil && d.Verdict != Allow && d.Verdict != Deny {
				err = fmt.Errorf("risk provider %s: unknown verdict %q", c.Name(), d.Verdict)
			}
			if err != nil {
				err = fmt.Errorf("risk provider %s: %w", c.Name(), err)
			}
			if d.Provider == "" {
				d.Provider = c.Name()
			}
			answers <- answer{d, err}
		})
	}
	var errs []error
	for range f.checkers {
		a := <-answers
		if a.err == nil {
			return a.d, nil
		}
		errs = append(errs, a.err)
	}
	if cause := context.Cause(ctx); cause != nil {
		errs = append(errs, cause)
	}
	return Decision{}, fmt.Errorf("%w: %w", ErrNoAnswer, errors.Join(errs...))
}
