package processing

import (
	"context"
	"fmt"

	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/risk"
)

// spanRisk is the span of the risk check before a charge.
const spanRisk = "risk check"

// WithRisk makes the processor ask f before every charge that no earlier
// attempt may have made (PAYSTREAM_RISK_CHECKS; docs/fleet.md, "Fan-out
// only where it is safe"), and returns p. It takes a *risk.FanOut, whose
// providers are risk.Checkers: nothing that charges can be fanned out.
// Call it before the first Process.
//
//   - allow: the charge goes ahead as without a check;
//   - deny: the payment is recorded failed with error code risk_denied
//     and announced, without a dead letter (a deny is the payment's
//     answer, like a decline, not a fault); no charge was made, so failed
//     is true. On a take-over, whose earlier holder may have sent a charge
//     before it died, the deny is recorded only after a lookup finds no
//     charge (a charge found is recorded succeeded: the money moved);
//   - no answer (every provider failed, or the timeout): the delivery is
//     retried like a gateway that could not be reached, its lease given
//     back, and on the last delivery recorded failed exhausted — no money
//     moved. The check fails closed: a payment is never charged unchecked.
func (p *Processor) WithRisk(f *risk.FanOut) *Processor {
	p.risk = f
	return p
}

// riskCheck runs the risk check of a held lease before its charge. It
// reports false when the charge may go ahead, else true with the decision.
func (p *Processor) riskCheck(ctx context.Context, msg Message, req, creq *payment.Request, claim payment.ClaimResult, l *lease) (Decision, bool) {
	// Only a new claim is sure that no charge was sent under the key: a
	// take-over's earlier holder may have crashed mid-call.
	maybeCharged := l.ambiguous || claim.Kind != payment.ClaimNew
	rctx, span := p.tr.Start(ctx, spanRisk)
	dec, err := p.risk.Check(rctx, risk.Query{
		PaymentID:   creq.PaymentID,
		MerchantID:  creq.MerchantID,
		CustomerID:  creq.CustomerID,
		AmountMinor: creq.AmountMinor,
		Currency:    creq.Currency,
	})
	endSpan(span, err)
	switch {
	case err == nil && dec.Verdict == risk.Allow:
		return Decision{}, false
	case err == nil:
		p.log.Info().Str("idempotency_key", l.key).Str("payment_id", creq.PaymentID).
			Str("provider", dec.Provider).Str("reason", dec.Reason).Msg("risk check denied the payment: not charged")
		if maybeCharged {
			found, err := p.lookup(ctx, l)
			switch {
			case err != nil:
				return p.unresolved(ctx, msg, req, l, fmt.Errorf("look up %s before recording a risk deny: %w", l.key, err)), true
			case found.Found:
				return p.complete(ctx, msg, req, l, payment.Completion{Status: payment.StatusSucceeded,
					GatewayChargeID: found.ChargeID, Ambiguous: true}, nil), true
			}
		}
		return p.complete(ctx, msg, req, l, payment.Completion{Status: payment.StatusFailed,
			ErrorCode: payment.ErrorCodeRiskDenied, Ambiguous: maybeCharged}, nil), true
	case ctx.Err() != nil:
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls, Ambiguous: l.ambiguous})
		return p.decide(msg, req, l.attempt, fmt.Errorf("%w: risk check: %w", ErrShutdown, err)), true
	case p.lastDelivery(msg):
		return p.fail(ctx, msg, req, l, maybeCharged,
			payment.Completion{Status: payment.StatusFailed, ErrorCode: payment.ErrorCodeExhausted},
			&PermanentError{Reason: payment.ReasonExhausted,
				Err: fmt.Errorf("%w after %d deliveries: risk check: %w", ErrExhausted, msg.NumDelivered, err)}), true
	default:
		d := p.decide(msg, req, l.attempt, &RetryableError{Err: fmt.Errorf("risk check: %w", err)})
		p.release(ctx, payment.Release{Key: l.key, Attempt: l.attempt, Owner: p.cfg.Owner, Attempts: l.calls,
			Hold: holdFor(err, d.Delay), Ambiguous: l.ambiguous})
		return d, true
	}
}
