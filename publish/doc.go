// Package publish is what upstream Go services use to publish payment
// requests (docs/contract.md §2) to the PAYMENTS JetStream stream, and what the
// publisher command uses for generated load and JSON lines.
//
// A Publisher wraps a jetstream.JetStream that the caller creates and owns
// (and closes, with its connection). New checks that the stream exists and
// captures the request subjects, so that a missing stream is reported once,
// clearly, instead of as a timeout on every publish:
//
//	js, _ := jetstream.New(nc)
//	p, err := publish.New(ctx, js, publish.Config{})
//	if err != nil { ... }
//	dup, err := p.Publish(ctx, req) // validates, then publishes synchronously
//
// Publish refuses a request that breaks the contract with an error matching
// payment.ErrInvalid, and publishes a valid one to
// <prefix>.requests.<merchant_id> with Nats-Msg-Id set to its payment_id and
// Content-Type: application/json. PublishRaw publishes bytes as they are, for
// test traffic. Both retry transient failures (no responders, a timed-out
// attempt when a message id makes the retry safe) a few times with a short
// backoff.
//
// # Asynchronous publishing
//
// PublishAsync starts a publish and returns; at most Config.MaxPending are
// outstanding, and PublishAsync blocks while that many are. Each started
// publish reports exactly one Result to the caller's done func, so counting
// published, duplicate and failed messages is exact. Every goroutine that
// PublishAsync starts belongs to the Publisher and ends when its publish
// ends: acknowledged, failed after its retries, or its context done. Flush
// waits until every publish started before it has ended and its done func has
// returned; a caller that wants no goroutine left behind calls Flush (after
// cancelling the publish context, if it is in a hurry) before it closes the
// connection.
//
// # Generated load
//
// Generate produces deterministic test traffic: valid requests, duplicates of
// earlier requests under a new Nats-Msg-Id (JetStream's own de-duplication
// cannot catch them; the workers' idempotency table must), and invalid
// messages of several kinds. Each Item says what it is, so tests and demos
// can compute the outcomes to expect.
package publish
