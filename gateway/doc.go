// Package gateway charges payments at a payment gateway speaking the HTTP API
// of docs/contract.md §5, and maps each answer to a result or a classified error.
//
// Two implementations share one method set, Name and Charge:
//
//   - HTTP talks to a real gateway (or to the simulator in gateway/sim) over
//     HTTP: POST {base}/v1/charges with an Idempotency-Key header.
//   - Fake is an in-process gateway for PAYSTREAM_GATEWAY_URL=fake, demos and
//     tests. It honours idempotency keys like a real gateway, with the same
//     ledger as the simulator.
//
// # Results and errors
//
// Both speak the gateway port of package payment: Charge takes a
// payment.Charge and returns a payment.ChargeResult when the gateway decided
// the payment: succeeded (with the gateway's charge id) or declined (with a
// decline code; a decline is final and is not an error). Every other answer
// is a *payment.GatewayError whose FailureClass says what the caller does
// next; Classify is the one place that maps an HTTP answer to a class
// (docs/contract.md §5):
//
//   - payment.ClassRejected: the gateway refuses the request (400, 422
//     including idempotency_key_reused, other 4xx but 401, 403 and 408). Record failed and
//     dead-letter with reason gateway_rejected. Not a circuit-breaker failure.
//   - payment.ClassRetry: 409 (the same key is still in flight at the
//     gateway) or 429 (too fast). Retry later, no sooner than RetryAfter.
//     Not a circuit-breaker failure.
//   - payment.ClassUnauthorized: 401 or 403, the gateway refuses paystream's
//     credentials. A configuration error, not the payment's fault: retry
//     later and report the worker not ready (FailureClass.Misconfigured);
//     a circuit-breaker failure. No money moved.
//   - payment.ClassTrouble: 5xx, 408, 3xx, 1xx, other statuses outside the
//     table, timeout, connection error, malformed 2xx body. Retry later; a
//     circuit-breaker failure (see payment.IsBreakerFailure). The gateway
//     may have charged. The client follows no redirect, not even with a
//     caller's HTTPConfig.Client.
//
// When the caller's own context ends first, Charge returns the context's
// error wrapped (errors.Is(err, context.Canceled) holds), not an *Error: the
// caller stopped waiting, the gateway did not fail. The gateway may still have
// charged, which is why every retry must carry the same idempotency key.
package gateway
