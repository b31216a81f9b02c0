// Package gateway charges payments at a payment gateway speaking the HTTP API
// of docs/contract.md §5, looks charges up by idempotency key, and maps each
// answer to a result or a classified error.
//
// Two implementations share one method set, Name, Charge and Lookup:
//
//   - HTTP talks to a real gateway (or to the simulator in gateway/sim) over
//     HTTP: POST {base}/v1/charges with an Idempotency-Key header, and GET
//     {base}/v1/charges?idempotency_key=<key> for a lookup.
//   - Fake is an in-process gateway for PAYSTREAM_GATEWAY_URL=fake, demos and
//     tests. It honours idempotency keys like a real gateway, with the same
//     ledger as the simulator.
//
// # Credentials and TLS
//
// HTTPConfig.APIKey sends "Authorization: Bearer <key>" on every charge and
// lookup. A KeyFile reads the key from a file (PAYSTREAM_GATEWAY_API_KEY_FILE)
// and reads it again, at most once a second, when a call finds the file
// changed, so that a key rotates without a restart; each client may have its
// own. HTTPConfig.TLS, built by TLSFiles.Config from a CA file and an
// optional client certificate, verifies an https gateway against that CA
// instead of the system roots; verification is never turned off, and NewHTTP
// refuses a configuration that would. A gateway that refuses the key answers
// 401 or 403, payment.ClassUnauthorized below; a certificate it cannot
// verify is a connection error, payment.ClassTrouble.
//
// # Results and errors
//
// Both speak the gateway port of package payment: Charge takes a
// payment.Charge and returns a payment.ChargeResult when the gateway decided
// the payment: succeeded (with the gateway's charge id) or declined (with a
// decline code; a decline is final and is not an error). Every other answer
// is a *payment.GatewayError whose FailureClass says what the caller does
// next; Classify is the one place that maps an HTTP answer to a charge to a
// class (docs/contract.md §5):
//
//   - payment.ClassRejected: the gateway refuses the request (400, 422
//     including idempotency_key_reused, other 4xx but 401, 403 and 408).
//     Record failed and dead-letter with reason gateway_rejected. Not a
//     circuit-breaker failure.
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
//
// # Lookup
//
// After an ambiguous attempt (payment.FailureClass.Ambiguous: a timeout, a
// connection error, a 5xx) the worker asks the gateway whether it charged
// under the key instead of guessing (docs/contract.md §6.8). Lookup returns
// a payment.LookupResult, and ClassifyLookup, next to Classify and sharing
// its status classes, maps the answer:
//
//   - 200 with the charge: Found, with the charge id, amount, currency and
//     payment id. The money moved.
//   - 404 {"error":{"code":"no_such_charge"}}: not Found, nil error. No
//     charge under the key and none in flight. A declined key answers so
//     too: a decline moves no money. This is the only answer that means "no
//     charge"; a 404 without that code (a proxy, a gateway without the
//     endpoint) is payment.ClassRejected, and a 2xx body that is not a
//     succeeded charge is payment.ClassTrouble.
//   - 409: payment.ClassRetry, a call with the key is still running; ask
//     again later.
//   - 5xx, timeout, connection error: payment.ClassTrouble, a breaker
//     failure; ask again later. 401 and 403 are payment.ClassUnauthorized as
//     for a charge.
//
// A lookup error never means "no charge", whatever its class: Final on a
// lookup error says only that asking again will not help until the gateway
// or paystream's settings change. Gateways keep charges for lookup far
// longer than idempotency keys: the Fake and the simulator find a charge
// after its key is forgotten (FakeConfig.MaxCharges, sim.Config.MaxCharges).
package gateway
