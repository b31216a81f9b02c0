package payment

import (
	"strconv"
	"unicode/utf8"
)

// Byte-length bounds of the request fields (docs/contract.md §2).
const (
	maxIDBytes             = 64
	maxIdempotencyKeyBytes = 255
	maxCustomerIDBytes     = 64
	maxPaymentMethodBytes  = 128
	maxDescriptionBytes    = 500
	maxMetadataKeyBytes    = 40
	maxMetadataValueBytes  = 500
)

// Validate checks r against the field rules of the payment request event v1
// (docs/contract.md §2) and lim, and returns the first rule broken as a
// *ValidationError matching ErrInvalid, or nil. Decode calls it; publishers
// that build a Request in Go call it before Marshal. It does not check the
// subject, nor JSON types, which a Request cannot get wrong.
//
// A Request that passes Validate marshals to a body that Decode accepts and
// decodes to a Request with the same Fingerprint; that is why strings must
// also be valid UTF-8 and CreatedAt must be representable in RFC 3339.
//
// No string may contain a C0 control character (0x00 to 0x1F), except tab
// and newline in description and metadata values: a request that passes
// Validate can be stored (Postgres refuses NUL in text) and logged as is.
func (r *Request) Validate(lim Limits) error {
	lim = lim.WithDefaults()
	if err := checkID(fieldPaymentID, r.PaymentID); err != nil {
		return err
	}
	if k := r.IdempotencyKey; k != "" {
		if len(k) > maxIdempotencyKeyBytes {
			return invalid(fieldIdempotencyKey, "longer than 255 bytes")
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x21 || k[i] > 0x7e {
				return invalid(fieldIdempotencyKey, "must be printable ASCII without spaces")
			}
		}
	}
	if err := checkID(fieldMerchantID, r.MerchantID); err != nil {
		return err
	}
	if err := checkText(fieldCustomerID, r.CustomerID, maxCustomerIDBytes, false); err != nil {
		return err
	}
	switch {
	case r.AmountMinor <= 0:
		return invalid(fieldAmountMinor, "must be greater than zero")
	case r.AmountMinor > lim.MaxAmountMinor:
		return invalid(fieldAmountMinor, "larger than the maximum of "+strconv.FormatInt(lim.MaxAmountMinor, 10))
	}
	if err := checkCurrency(r.Currency); err != nil {
		return err
	}
	if r.PaymentMethod == "" {
		return invalid(fieldPaymentMethod, "is required")
	}
	if err := checkText(fieldPaymentMethod, r.PaymentMethod, maxPaymentMethodBytes, false); err != nil {
		return err
	}
	if ContainsCardNumber(r.PaymentMethod) {
		return invalid(fieldPaymentMethod, "contains a raw card number")
	}
	if err := checkText(fieldDescription, r.Description, maxDescriptionBytes, true); err != nil {
		return err
	}
	if ContainsCardNumber(r.Description) {
		return invalid(fieldDescription, "contains a raw card number")
	}
	if err := checkMetadata(r.Metadata); err != nil {
		return err
	}
	if !r.CreatedAt.IsZero() {
		_, offset := r.CreatedAt.Zone()
		if y := r.CreatedAt.Year(); y < 0 || y > 9999 || offset <= -24*3600 || offset >= 24*3600 {
			return invalid(fieldCreatedAt, "not representable in RFC 3339")
		}
	}
	return nil
}

// checkID checks a required identifier: 1 to 64 of [A-Za-z0-9_-].
func checkID(field, s string) error {
	if s == "" {
		return invalid(field, "is required")
	}
	if len(s) > maxIDBytes {
		return invalid(field, "longer than 64 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return invalid(field, "must contain only A-Z, a-z, 0-9, '_' and '-'")
		}
	}
	return nil
}

// checkText checks an optional free-text field: valid UTF-8 of at most max
// bytes without C0 control characters, except tab and newline when
// multiline.
func checkText(field, s string, max int, multiline bool) error {
	if len(s) > max {
		return invalid(field, "longer than "+strconv.Itoa(max)+" bytes")
	}
	control, nonASCII := scanText(s, multiline)
	if nonASCII && !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8")
	}
	if control {
		if multiline {
			return invalid(field, "contains a control character other than tab and newline")
		}
		return invalid(field, "contains a control character")
	}
	return nil
}

// scanText reports whether s contains a C0 control character (0x00 to
// 0x1F), not counting tab and newline when multiline, and whether it
// contains a byte that is not ASCII, in one pass. NUL is a C0 control:
// Postgres refuses it in text, so a request that carries one could never be
// stored. DEL (0x7F) and the C1 controls are not C0 and are allowed.
func scanText(s string, multiline bool) (control, nonASCII bool) {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			// Eight bytes at a time while all are printable ASCII or DEL:
			// subtracting 0x20 from each sets no top bit, and none had it.
			x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
				uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
			if (x-0x20*lo|x)&hi == 0 {
				i += 8
				continue
			}
		}
		switch c := s[i]; {
		case c < 0x20:
			control = control || !multiline || c != '\t' && c != '\n'
		case c >= utf8.RuneSelf:
			nonASCII = true
		}
		i++
	}
	return control, nonASCII
}

// checkCurrency checks that code is an upper-case ISO 4217 code of an
// active currency that can be charged.
func checkCurrency(code string) error {
	if code == "" {
		return invalid(fieldCurrency, "is required")
	}
	if len(code) != 3 || !isUpper(code[0]) || !isUpper(code[1]) || !isUpper(code[2]) {
		return invalid(fieldCurrency, "must be an ISO 4217 code of three upper-case letters")
	}
	if isNonCurrency(code) {
		return invalid(fieldCurrency, "metals, units of account, XTS and XXX are not currencies that can be charged")
	}
	if _, ok := CurrencyExponent(code); !ok {
		return invalid(fieldCurrency, "not an active ISO 4217 currency")
	}
	return nil
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// checkMetadata checks the metadata object. Each rule is checked over all
// keys before the next, so that the reported error does not depend on map
// order.
func checkMetadata(m map[string]string) error {
	if len(m) > maxMetadataKeys {
		return invalid(fieldMetadata, "more than 20 keys")
	}
	for k := range m {
		if k == "" || len(k) > maxMetadataKeyBytes {
			return invalid(fieldMetadata, "keys must be 1 to 40 bytes")
		}
	}
	for _, v := range m {
		if len(v) > maxMetadataValueBytes {
			return invalid(fieldMetadata, "values must be at most 500 bytes")
		}
	}
	// Text rules in one pass, reported in a fixed order.
	var badUTF8, keyControl, valueControl bool
	for k, v := range m {
		kc, kn := scanText(k, false)
		vc, vn := scanText(v, true)
		badUTF8 = badUTF8 || kn && !utf8.ValidString(k) || vn && !utf8.ValidString(v)
		keyControl = keyControl || kc
		valueControl = valueControl || vc
	}
	switch {
	case badUTF8:
		return invalid(fieldMetadata, "not valid UTF-8")
	case keyControl:
		return invalid(fieldMetadata, "a key contains a control character")
	case valueControl:
		return invalid(fieldMetadata, "a value contains a control character other than tab and newline")
	}
	for _, v := range m {
		if ContainsCardNumber(v) {
			return invalid(fieldMetadata, "a value contains a raw card number")
		}
	}
	return nil
}
