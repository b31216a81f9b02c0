package payment

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits are the deployment-specific bounds of request validation.
type Limits struct {
	// MaxAmountMinor is the largest accepted amount_minor
	// (PAYSTREAM_MAX_AMOUNT_MINOR). Zero or a negative value means
	// DefaultMaxAmountMinor.
	MaxAmountMinor int64
	// SubjectPrefix is the subject prefix of the deployment
	// (PAYSTREAM_SUBJECT_PREFIX, one or more tokens, default payments):
	// Decode accepts only the subject <SubjectPrefix>.requests.<merchant_id>.
	// Empty means not known: the prefix is then the tokens before the first
	// "requests" token that is not the first token, which is right for every
	// prefix without such a token.
	SubjectPrefix string
}

// WithDefaults returns a copy of l with every zero (or negative) field set to
// its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxAmountMinor <= 0 {
		l.MaxAmountMinor = DefaultMaxAmountMinor
	}
	return l
}

// The JSON names of the request fields, used in ValidationError.Field.
const (
	fieldBody           = "body"
	fieldSubject        = "subject"
	fieldPaymentID      = "payment_id"
	fieldIdempotencyKey = "idempotency_key"
	fieldMerchantID     = "merchant_id"
	fieldCustomerID     = "customer_id"
	fieldAmountMinor    = "amount_minor"
	fieldCurrency       = "currency"
	fieldPaymentMethod  = "payment_method"
	fieldDescription    = "description"
	fieldMetadata       = "metadata"
	fieldCreatedAt      = "created_at"
)

// Decode decodes and validates a payment request event v1 (docs/contract.md §2)
// received on subject, and returns it. Every error it returns is a
// *ValidationError matching ErrInvalid: the message can never become valid
// and must be dead-lettered.
//
// The rules beyond Request.Validate are those of the wire format:
//   - body is at most MaxBodyBytes (checked before anything else), valid
//     UTF-8, and one JSON object. Unknown fields are ignored; a known field
//     that appears twice is refused, since parsers disagree on which one
//     wins. Field names match exactly (encoding/json's case-insensitive
//     matching is not used).
//   - each known field has its JSON type: a string, metadata an object of
//     strings, amount_minor an integer literal (100.0, 1e2 and "100" are
//     refused; the number is parsed from its digits, never as a float).
//     null counts as absent, so it fails a required field.
//   - created_at, when present, is an RFC 3339 time.
//   - subject is exactly <prefix>.requests.<merchant_id>: the prefix
//     (lim.SubjectPrefix; when empty, the tokens before the first
//     "requests" token but the first), then "requests", then one token
//     equal to merchant_id. With the default prefix that is exactly three
//     tokens. No token is empty, and the subject holds no white space, no
//     control character and no invalid UTF-8 (it is stored as text). An
//     empty subject skips this check: callers that have no subject (tools
//     reading JSON lines) pass "".
//
// Absent, null and empty idempotency_key all decode to an empty
// IdempotencyKey; Request.EffectiveKey then falls back to the payment id.
// Error messages name fields and rules, never values.
func Decode(subject string, body []byte, lim Limits) (*Request, error) {
	if len(body) > MaxBodyBytes {
		return nil, invalid(fieldBody, "larger than 65536 bytes")
	}
	if !utf8.Valid(body) {
		return nil, invalid(fieldBody, "not valid UTF-8")
	}
	if !json.Valid(body) {
		return nil, invalid(fieldBody, "not valid JSON")
	}
	r, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	if err := r.Validate(lim); err != nil {
		return nil, err
	}
	if subject != "" {
		if err := checkSubject(subject, lim.SubjectPrefix, r.MerchantID); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// requestsInfix separates the subject prefix from the merchant token.
const requestsInfix = ".requests."

// checkSubject checks that subject is <prefix>.requests.<merchantID>. An
// empty prefix stands for the tokens before the first "requests" token
// that is not the first token.
func checkSubject(subject, prefix, merchantID string) error {
	nonASCII := false
	for i := 0; i < len(subject); i++ {
		c := subject[i]
		if c <= ' ' || c == 0x7f {
			return invalid(fieldSubject, "contains white space or a control character")
		}
		nonASCII = nonASCII || c >= utf8.RuneSelf
	}
	if nonASCII && !utf8.ValidString(subject) {
		return invalid(fieldSubject, "not valid UTF-8")
	}
	const shape = "must be <prefix>.requests.<merchant_id>"
	var rest string // what follows <prefix>.requests.
	if prefix != "" {
		if !strings.HasPrefix(subject, prefix) || !strings.HasPrefix(subject[len(prefix):], requestsInfix) {
			return invalid(fieldSubject, "not <prefix>.requests. with the configured prefix")
		}
		rest = subject[len(prefix)+len(requestsInfix):]
	} else {
		i := strings.Index(subject, requestsInfix)
		if i < 0 {
			return invalid(fieldSubject, shape)
		}
		rest = subject[i+len(requestsInfix):]
	}
	if strings.IndexByte(rest, '.') >= 0 || subject[0] == '.' || strings.Contains(subject, "..") {
		return invalid(fieldSubject, shape)
	}
	if rest != merchantID {
		return invalid(fieldSubject, "last token does not equal merchant_id")
	}
	return nil
}

// Bits of decoder.seen, one per known field, to refuse duplicates.
const (
	seenPaymentID uint16 = 1 << iota
	seenIdempotencyKey
	seenMerchantID
	seenCustomerID
	seenAmountMinor
	seenCurrency
	seenPaymentMethod
	seenDescription
	seenMetadata
	seenCreatedAt
)

// decodeObject decodes the fields of the JSON object body into a Request,
// checking JSON types and the amount literal. body must be valid JSON and
// valid UTF-8, which lets the scanner skip all error handling of the syntax.
func decodeObject(body []byte) (*Request, error) {
	s := jsonScanner{b: body}
	s.space()
	if s.b[s.i] != '{' {
		return nil, invalid(fieldBody, "not a JSON object")
	}
	s.i++
	r := &Request{}
	var seen uint16
	var amountSeen bool
	for {
		rawKey, raw, ok := s.member()
		if !ok {
			break
		}
		name := memberName(rawKey)
		var bit uint16
		var err error
		switch string(name) { // no allocation: the compiler compares bytes
		case fieldPaymentID:
			bit = seenPaymentID
			r.PaymentID, err = s.stringValue(fieldPaymentID, raw)
		case fieldIdempotencyKey:
			bit = seenIdempotencyKey
			r.IdempotencyKey, err = s.stringValue(fieldIdempotencyKey, raw)
		case fieldMerchantID:
			bit = seenMerchantID
			r.MerchantID, err = s.stringValue(fieldMerchantID, raw)
		case fieldCustomerID:
			bit = seenCustomerID
			r.CustomerID, err = s.stringValue(fieldCustomerID, raw)
		case fieldAmountMinor:
			bit = seenAmountMinor
			amountSeen = raw[0] != 'n'
			if amountSeen {
				r.AmountMinor, err = amountValue(raw)
			}
		case fieldCurrency:
			bit = seenCurrency
			r.Currency, err = s.stringValue(fieldCurrency, raw)
		case fieldPaymentMethod:
			bit = seenPaymentMethod
			r.PaymentMethod, err = s.stringValue(fieldPaymentMethod, raw)
		case fieldDescription:
			bit = seenDescription
			r.Description, err = s.stringValue(fieldDescription, raw)
		case fieldMetadata:
			bit = seenMetadata
			r.Metadata, err = metadataValue(raw)
		case fieldCreatedAt:
			bit = seenCreatedAt
			r.CreatedAt, err = timeValue(raw)
		default:
			continue
		}
		if seen&bit != 0 {
			return nil, invalid(string(name), "appears more than once")
		}
		seen |= bit
		if err != nil {
			return nil, err
		}
	}
	if !amountSeen {
		return nil, invalid(fieldAmountMinor, "is required")
	}
	return r, nil
}

// amountValue parses the raw JSON value of amount_minor, which must be an
// integer literal. Its range is checked by Validate, except the int64 range.
func amountValue(raw []byte) (int64, error) {
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return 0, invalid(fieldAmountMinor, "must be an integer literal")
	}
	for _, c := range digits {
		if !isDigit(c) {
			// A string, fraction, exponent, or a value of another type.
			return 0, invalid(fieldAmountMinor, "must be an integer literal")
		}
	}
	if raw[0] == '-' {
		return 0, invalid(fieldAmountMinor, "must be greater than zero")
	}
	// Valid JSON has no leading zeros, so more than 19 digits is too big.
	const maxInt64 = 1<<63 - 1
	if len(digits) > 19 {
		return 0, invalid(fieldAmountMinor, "out of the 64-bit integer range")
	}
	var n uint64
	for _, c := range digits {
		n = n*10 + uint64(c-'0')
	}
	if n > maxInt64 {
		return 0, invalid(fieldAmountMinor, "out of the 64-bit integer range")
	}
	return int64(n), nil
}

// maxMetadataKeys is the largest number of metadata keys.
const maxMetadataKeys = 20

// metadataValue decodes the raw JSON value of metadata, an object of strings
// with at most maxMetadataKeys keys; null is no metadata. Key and value
// lengths and card numbers are checked by Validate.
func metadataValue(raw []byte) (map[string]string, error) {
	switch raw[0] {
	case 'n':
		return nil, nil
	case '{':
	default:
		return nil, invalid(fieldMetadata, "must be an object of strings")
	}
	s := jsonScanner{b: raw, i: 1}
	// Count and type-check first, so that the map is allocated once and a
	// huge object costs no allocation.
	count := 0
	for {
		_, v, ok := s.member()
		if !ok {
			break
		}
		if v[0] != '"' {
			return nil, invalid(fieldMetadata, "must be an object of strings")
		}
		count++
		if count > maxMetadataKeys {
			return nil, invalid(fieldMetadata, "more than 20 keys")
		}
	}
	if count == 0 {
		return nil, nil
	}
	m := make(map[string]string, count)
	s = jsonScanner{b: raw, i: 1}
	for {
		rawKey, v, ok := s.member()
		if !ok {
			break
		}
		k, okK := jsonString(rawKey)
		val, okV := jsonString(v)
		if !okK || !okV {
			return nil, invalid(fieldMetadata, "must be an object of strings")
		}
		if _, dup := m[k]; dup {
			return nil, invalid(fieldMetadata, "a key appears more than once")
		}
		m[k] = val
	}
	return m, nil
}

// timeValue decodes the raw JSON value of created_at, an RFC 3339 time;
// null is the zero time.
func timeValue(raw []byte) (time.Time, error) {
	switch raw[0] {
	case 'n':
		return time.Time{}, nil
	case '"':
		if s, ok := jsonString(raw); ok {
			if t, err := time.Parse(time.RFC3339, s); err == nil {
				return t, nil
			}
		}
	}
	return time.Time{}, invalid(fieldCreatedAt, "must be an RFC 3339 time")
}

// memberName returns the name of an object member from its raw JSON string:
// the bytes between the quotes when there are no escapes, else the decoded
// name (nil if it cannot be decoded, which matches no known field).
func memberName(raw []byte) []byte {
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return body
	}
	s, _ := jsonString(raw)
	return []byte(s)
}

// jsonString decodes the raw JSON string literal raw (quotes included) of a
// valid UTF-8 document. Without escapes this is a plain conversion; with
// them, encoding/json does the work.
func jsonString(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') >= 0 {
		return unescape(raw)
	}
	return string(raw[1 : len(raw)-1]), true
}

// unescape decodes a JSON string literal with escapes.
func unescape(raw []byte) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonScanner walks the members of one JSON object in a document already
// known to be valid JSON, so it does no syntax checking of its own.
type jsonScanner struct {
	b     []byte
	i     int
	value int    // where the value of the last member returned starts
	text  string // b as a string, once stringValue needs it
}

// space skips white space.
func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// member returns the raw key (with its quotes) and the raw value of the
// next member of the object whose '{' has been consumed, or false after
// consuming its '}'.
func (s *jsonScanner) member() (key, value []byte, ok bool) {
	s.space()
	if s.b[s.i] == ',' {
		s.i++
		s.space()
	}
	if s.b[s.i] == '}' {
		s.i++
		return nil, nil, false
	}
	start := s.i
	s.skipString()
	key = s.b[start:s.i]
	s.space()
	s.i++ // ':'
	s.space()
	s.value = s.i
	s.skipValue()
	return key, s.b[s.value:s.i], true
}

// stringValue decodes the value member just returned, raw, as a string
// field; null is "". A string without escapes is a substring of one copy
// of the whole document, made the first time, so that decoding a request
// costs one string allocation rather than one per field. So a Request's
// fields share that copy: whatever keeps one of them beyond the request
// (a cache, a ledger) should keep strings.Clone of it.
func (s *jsonScanner) stringValue(field string, raw []byte) (string, error) {
	switch raw[0] {
	case 'n':
		return "", nil
	case '"':
		if bytes.IndexByte(raw, '\\') >= 0 {
			if str, ok := unescape(raw); ok {
				return str, nil
			}
			break
		}
		if s.text == "" {
			s.text = string(s.b)
		}
		return s.text[s.value+1 : s.value+len(raw)-1], nil
	}
	return "", invalid(field, "must be a string")
}

// skipString skips the string starting at s.i.
func (s *jsonScanner) skipString() {
	s.i++ // opening quote
	for {
		c := s.b[s.i]
		s.i++
		switch c {
		case '\\':
			s.i++ // the escaped byte; \uXXXX digits are not quotes
		case '"':
			return
		}
	}
}

// skipValue skips the value starting at s.i.
func (s *jsonScanner) skipValue() {
	switch s.b[s.i] {
	case '"':
		s.skipString()
	case '{', '[':
		depth := 0
		for {
			switch s.b[s.i] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.i++
			if depth == 0 {
				return
			}
		}
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}
