package payment

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
)

// fingerprintVersion starts the fingerprinted bytes, so that a future change
// of the encoding can never collide with fingerprints stored today.
const fingerprintVersion = "paystream.request.v1\x00"

// Fingerprint returns the request fingerprint (docs/contract.md §2): the lower-case
// hex SHA-256 of payment_id, merchant_id, customer_id, amount_minor, currency
// and payment_method. Two requests with the same effective key are
// duplicates when their fingerprints are equal and a conflict otherwise.
//
// Each string is encoded as its length (8 bytes, big-endian) followed by its
// bytes, and the amount as 8 bytes big-endian, after a version tag, so that
// no two different field tuples hash the same bytes. The idempotency key,
// description, metadata and created_at are not part of it. The fingerprint
// is stored; changing this encoding turns every replay into a conflict.
func (r *Request) Fingerprint() string {
	var stack [512]byte // holds any request that passes Validate
	b := append(stack[:0], fingerprintVersion...)
	b = appendField(b, r.PaymentID)
	b = appendField(b, r.MerchantID)
	b = appendField(b, r.CustomerID)
	b = binary.BigEndian.AppendUint64(b, uint64(r.AmountMinor))
	b = appendField(b, r.Currency)
	b = appendField(b, r.PaymentMethod)
	sum := sha256.Sum256(b)
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

// appendField appends s, prefixed with its length, to b.
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// Marshal returns the JSON body of r: a payment request event v1 with
// amount_minor as a JSON integer and empty optional fields omitted. It does
// not validate r (publishers may send invalid requests on purpose); call
// Validate first. The error comes from encoding/json and only happens for a
// CreatedAt that RFC 3339 cannot represent.
func (r *Request) Marshal() ([]byte, error) {
	return json.Marshal(r)
}
