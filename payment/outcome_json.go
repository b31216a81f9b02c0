package payment

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the outcome event's JSON to b: byte for byte what
// encoding/json's Marshal makes of o (field order, omitted empty strings,
// HTML-safe escaping, RFC 3339 time with nanoseconds), without reflection.
// A time encoding/json cannot encode (a year outside 0-9999) is its error.
func (o Outcome) AppendJSON(b []byte) ([]byte, error) {
	if y := o.CompletedAt.Year(); y < 0 || y > 9999 {
		body, err := json.Marshal(o)
		return append(b, body...), err
	}
	b = append(b, `{"payment_id":`...)
	b = appendJSONString(b, o.PaymentID)
	b = append(b, `,"idempotency_key":`...)
	b = appendJSONString(b, o.IdempotencyKey)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(o.Status))
	b = append(b, `,"amount_minor":`...)
	b = strconv.AppendInt(b, o.AmountMinor, 10)
	b = append(b, `,"currency":`...)
	b = appendJSONString(b, o.Currency)
	if o.Gateway != "" {
		b = append(b, `,"gateway":`...)
		b = appendJSONString(b, o.Gateway)
	}
	if o.GatewayChargeID != "" {
		b = append(b, `,"gateway_charge_id":`...)
		b = appendJSONString(b, o.GatewayChargeID)
	}
	if o.ErrorCode != "" {
		b = append(b, `,"error_code":`...)
		b = appendJSONString(b, o.ErrorCode)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(o.Attempts), 10)
	b = append(b, `,"completed_at":"`...)
	b = o.CompletedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string escaped as encoding/json does
// by default: quotes, backslashes and control characters, <, > and & (HTML
// safety), U+2028 and U+2029, and each invalid UTF-8 byte as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
