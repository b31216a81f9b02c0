// Package payment is the event schema shared by the paystream publisher and
// workers: the payment request event v1 (docs/contract.md §2) with its decoding,
// validation and fingerprint, the outcome event and dead-letter vocabulary
// (§4), and the rows and claims of the payments table (§6, §7).
//
// Money is always an int64 amount of the currency's minor units
// (CurrencyExponent gives the ISO 4217 exponent); it is never a float.
//
// The package depends on the standard library only and holds no mutable
// package-level state; every function is safe for concurrent use.
//
// Raw card numbers never belong in a request. Decode and Request.Validate
// refuse a request that carries one in payment_method, description or a
// metadata value — also when written with JSON escapes. MaskCardNumbersJSON
// masks them in every encoding of a body, such as a dead letter's, and
// MaskCardNumbers in plain bytes. Errors of this package never quote field
// values.
package payment
