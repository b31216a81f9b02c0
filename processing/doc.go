// Package processing is the payment flow of docs/contract.md §6: it turns one
// delivery of a payment request into one Decision, and rescues stuck rows.
//
// Processor.Process, per delivery: decode and validate (invalid → dead
// letter) → wait on the rate limiter → claim the effective key through
// Claims (duplicate, in flight, busy or conflict end here) → charge through
// the circuit breaker and the Gateway port → record the outcome, fenced by
// the lease, or release the lease for a retry. Every error is classified
// once, in decide, into a Decision: Ack with an outcome event, Retry after a
// delay (never before a Retry-After or a lease's end), or Term with a dead
// letter; its Verdict names it for logs and metrics. Admit tells the puller
// how much to fetch while the breaker is open or half-open. Sweeper re-publishes
// rows whose holder died and deletes final rows past retention.
//
// The package speaks package payment's vocabulary and declares the small
// interfaces it needs (Claims, Gateway); it imports no adapter, pgx or NATS.
// Only package consumer acts on a Decision.
package processing
