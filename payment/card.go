package payment

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// The length bounds, in digits, of a raw card number (PAN).
const (
	minCardDigits = 13
	maxCardDigits = 19
)

// ContainsCardNumber reports whether s contains a raw card number: 13 to 19
// ASCII digits, optionally grouped by single spaces or dashes, that pass the
// Luhn check. The number must stand on its own: the characters just before
// and after it are not digits, so a run of more than 19 digits is never a
// card number and neither is a part of one.
//
// Grouped numbers are found in any grouping ("4111 1111 1111 1111",
// "4111-1111-1111-1111", "411111 1111111111"), and inside longer chains of
// groups ("order 12 4111 1111 1111 1111"). Other separators (two spaces,
// dots, slashes) split a number into unrelated parts.
//
// ContainsCardNumber does not allocate. (It is not inlined because, inlined
// into another package, its generic scanner would escape to the heap.)
//
//go:noinline
func ContainsCardNumber(s string) bool {
	sc := cardScanner[string]{b: s}
	_, _, ok := sc.next()
	return ok
}

// MaskCardNumbers masks every raw card number in b, as found by
// ContainsCardNumber: each digit but the last four of the number is replaced
// by '*'; separators and every other byte are kept, so masked has the length
// of b. b may be any bytes, valid JSON or not; it is never modified.
//
// When a card number is found, masked is a new slice and changed is true.
// Otherwise masked is b itself and changed is false.
//
// The result contains no card number: where masking one number leaves digits
// that, with their neighbours, form another Luhn-valid number, that one is
// masked too. Digits written as JSON escapes (\u0034) are not recognised:
// MaskCardNumbersJSON recognises them.
func MaskCardNumbers(b []byte) (masked []byte, changed bool) {
	var out []byte
	// Mask every card number of the input, overlapping ones included.
	sc := cardScanner[[]byte]{b: b}
	for {
		start, end, ok := sc.next()
		if !ok {
			break
		}
		if out == nil {
			out = make([]byte, len(b))
			copy(out, b)
		}
		maskCardDigits(out[start:end])
	}
	if out == nil {
		return b, false
	}
	// A '*' is a digit boundary, so the four digits kept of a number cut out
	// of a longer run may start a new Luhn-valid chain with the groups after
	// them. Mask those too, scanning the output in place from each masked
	// number again; every round masks at least nine more digits.
	sc = cardScanner[[]byte]{b: out}
	for {
		start, end, ok := sc.next()
		if !ok {
			break
		}
		maskCardDigits(out[start:end])
		sc.reset(start)
	}
	return out, true
}

// MaskCardNumbersJSON masks every raw card number in b, a body that is
// JSON or may be, in whatever encoding the number appears: in clear, as
// MaskCardNumbers finds it, and in the decoded text of JSON string
// literals, where digits and separators may be written as escapes
// ("\u0034\u0031\u0031\u0031…", "4111\u00201111…", "41\u0031…"). Each digit
// of a number but its last four is replaced by '*', whole escape included;
// every other byte is kept. b is never modified.
//
// When b is valid JSON, so is the result, and no string of it, once decoded,
// contains a card number (docs/contract.md §4). A JSON number that holds a
// card number becomes a string of its masked digits, since '*' cannot stand
// in a number. When b is not valid JSON, escapes are still decoded wherever
// they appear, so that a lenient reader finds no card number either, and
// the bytes in clear are masked as MaskCardNumbers masks them.
//
// When a card number is found, masked is a new slice and changed is true.
// Otherwise masked is b itself and changed is false; a body without a
// backslash and without a card number costs no allocation.
func MaskCardNumbersJSON(b []byte) (masked []byte, changed bool) {
	if bytes.IndexByte(b, '\\') < 0 {
		// Without escapes, the decoded text is the bytes themselves.
		sc := cardScanner[[]byte]{b: b}
		if _, _, ok := sc.next(); !ok {
			return b, false
		}
	}
	return maskCardNumbersJSON(b, maxMaskRounds)
}

// maxMaskRounds bounds the rounds of MaskCardNumbersJSON. Ordinary bodies
// need one round that masks and one that finds nothing left.
const maxMaskRounds = 8

// maskCardNumbersJSON is MaskCardNumbersJSON with at most maxRounds (at
// least 1) rounds of masking; when the last one still masked, every digit
// is masked.
func maskCardNumbersJSON(b []byte, maxRounds int) (masked []byte, changed bool) {
	valid := json.Valid(b)
	out := b
	for round := 0; ; round++ {
		if round == maxRounds {
			// Each round masked numbers that the masks of the round before
			// made: a body built to chain them. Masking every digit ends
			// the chain in one more pass rather than one round per link.
			out = maskAllDigits(out, valid)
			break
		}
		// Masking a number in one view (the decoded text, or the bytes in
		// clear) may leave digits that form a number in the other, since a
		// '*' is a digit boundary: repeat until a round masks nothing.
		next, ch := maskRound(out, valid)
		if !ch {
			break
		}
		out, changed = next, true
	}
	if !changed {
		return b, false
	}
	if valid {
		out = quoteMaskedNumbers(out)
	}
	return out, true
}

// maskAllDigits replaces every unit of b that stands for a digit by '*',
// and, unless valid (b was valid JSON, whose escapes must stay whole),
// every digit in clear too, so that no view of the result holds a digit.
func maskAllDigits(b []byte, valid bool) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		size, c := escapeUnit(b, i)
		switch {
		case isDigit(c):
			out = append(out, '*')
		case valid:
			out = append(out, b[i:i+size]...)
		default:
			for _, e := range b[i : i+size] {
				if isDigit(e) {
					e = '*'
				}
				out = append(out, e)
			}
		}
		i += size
	}
	return out
}

// maskRound masks the card numbers of the decoded text of b, whole escapes
// at a time, then those of the bytes in clear, and returns the result, a
// new slice when changed. When valid (b was valid JSON), the bytes of an
// escape do not count as digits in clear, because masking them would break
// the escape; when not, every byte counts as itself.
func maskRound(b []byte, valid bool) (out []byte, changed bool) {
	// The decoded view: one byte per unit (a byte in clear, or an escape),
	// the digit, space or dash it stands for, or 'x' for anything else.
	view := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		size, c := escapeUnit(b, i)
		view = append(view, scanClass(c))
		i += size
	}
	out = b
	if m, ch := MaskCardNumbers(view); ch {
		out = make([]byte, 0, len(b))
		for i, k := 0, 0; i < len(b); k++ {
			size, _ := escapeUnit(b, i)
			if m[k] != view[k] {
				out = append(out, '*')
			} else {
				out = append(out, b[i:i+size]...)
			}
			i += size
		}
		changed = true
	}

	// The bytes in clear.
	clear := out
	if valid {
		clear = make([]byte, 0, len(out))
		for i := 0; i < len(out); {
			size, c := escapeUnit(out, i)
			if size > 1 {
				c = 'x'
			}
			for range size {
				clear = append(clear, c)
			}
			i += size
		}
	}
	if m, ch := MaskCardNumbers(clear); ch {
		if !changed {
			out = bytes.Clone(out)
		}
		for i := range m {
			if m[i] != clear[i] {
				out[i] = '*'
			}
		}
		changed = true
	}
	return out, changed
}

// escapeUnit returns the size of the unit at b[i], a JSON escape or a single
// byte, and the byte it stands for: the decoded character when it is ASCII,
// and 0x80 for a non-ASCII escape. A backslash that starts no valid escape
// is a unit of its own.
func escapeUnit(b []byte, i int) (size int, c byte) {
	if b[i] != '\\' || i+1 == len(b) {
		return 1, b[i]
	}
	switch e := b[i+1]; e {
	case '"', '\\', '/':
		return 2, e
	case 'b':
		return 2, '\b'
	case 'f':
		return 2, '\f'
	case 'n':
		return 2, '\n'
	case 'r':
		return 2, '\r'
	case 't':
		return 2, '\t'
	case 'u':
		if i+6 > len(b) {
			break
		}
		r := 0
		for _, h := range b[i+2 : i+6] {
			switch {
			case '0' <= h && h <= '9':
				r = r<<4 | int(h-'0')
			case 'a' <= h && h <= 'f':
				r = r<<4 | int(h-'a'+10)
			case 'A' <= h && h <= 'F':
				r = r<<4 | int(h-'A'+10)
			default:
				return 1, '\\'
			}
		}
		if r < utf8.RuneSelf {
			return 6, byte(r)
		}
		return 6, utf8.RuneSelf
	}
	return 1, '\\'
}

// scanClass returns c if it can be part of a card number (a digit, space or
// dash), else 'x'.
func scanClass(c byte) byte {
	if isDigit(c) || c == ' ' || c == '-' {
		return c
	}
	return 'x'
}

// quoteMaskedNumbers turns each number of the JSON document b that masking
// turned invalid (it holds a '*') into a string of the same characters.
// Strings are skipped, escapes and all.
func quoteMaskedNumbers(b []byte) []byte {
	if bytes.IndexByte(b, '*') < 0 {
		return b
	}
	var out []byte
	last := 0 // b[last:] is not yet in out
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (isDigit(c) || c == '-' || c == '*'):
			end := i
			hasStar := false
			for end < len(b) && strings.IndexByte("0123456789+-.eE*", b[end]) >= 0 {
				hasStar = hasStar || b[end] == '*'
				end++
			}
			if hasStar {
				out = append(out, b[last:i]...)
				out = append(out, '"')
				out = append(out, b[i:end]...)
				out = append(out, '"')
				last = end
			}
			i = end - 1
		}
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}

// maskCardDigits replaces every ASCII digit of p but the last four by '*'.
func maskCardDigits(p []byte) {
	kept := 0
	for i := len(p) - 1; i >= 0; i-- {
		if !isDigit(p[i]) {
			continue
		}
		if kept < 4 {
			kept++
			continue
		}
		p[i] = '*'
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digitRun is the byte span [start, end) of a maximal run of ASCII digits.
type digitRun struct{ start, end int }

// cardScanner finds card numbers in b, left to right, without allocating.
//
// A chain is a sequence of digit runs, each separated from the next by
// exactly one space or dash. A card number is a sub-sequence of consecutive
// runs of one chain with 13 to 19 digits in all that passes the Luhn check.
// The scanner keeps the last runs of the current chain (at most 19 can take
// part in a number ending at the newest run) and, at the end of each run,
// checks every number ending there.
type cardScanner[T string | []byte] struct {
	b   T
	pos int // next byte to read
	// chain holds the newest runs of the current chain, oldest first.
	chain [maxCardDigits]digitRun
	n     int
}

// reset makes the scanner start over at pos with no chain.
func (s *cardScanner[T]) reset(pos int) {
	s.pos = pos
	s.n = 0
}

// next returns the span [start, end) of the longest card number that ends
// with the next digit run that ends one, or false when there is none left.
// The shorter numbers ending at that run are inside the span and share its
// last four digits.
func (s *cardScanner[T]) next() (start, end int, ok bool) {
	b := s.b
	for s.pos < len(b) {
		if !isDigit(b[s.pos]) {
			s.pos++
			continue
		}
		run := digitRun{start: s.pos}
		for s.pos < len(b) && isDigit(b[s.pos]) {
			s.pos++
		}
		run.end = s.pos
		if s.n > 0 {
			last := s.chain[s.n-1]
			if run.start != last.end+1 || (b[last.end] != ' ' && b[last.end] != '-') {
				s.n = 0
			}
		}
		if run.end-run.start > maxCardDigits {
			// Too long to be, or to be part of, a card number.
			s.n = 0
			continue
		}
		if s.n == len(s.chain) {
			copy(s.chain[:], s.chain[1:])
			s.n--
		}
		s.chain[s.n] = run
		s.n++
		if first := s.longestCard(); first >= 0 {
			return s.chain[first].start, run.end, true
		}
	}
	return 0, 0, false
}

// longestCard returns the index in s.chain of the first run of the longest
// card number that ends with the newest run, or -1 when none does. Going
// backwards from the newest run, a digit's position from the right does not
// change as runs are added on the left, so one pass computes the Luhn sum of
// every candidate.
func (s *cardScanner[T]) longestCard() int {
	first := -1
	sum, digits := 0, 0
	for i := s.n - 1; i >= 0; i-- {
		r := s.chain[i]
		if digits+(r.end-r.start) > maxCardDigits {
			break
		}
		for j := r.end - 1; j >= r.start; j-- {
			d := int(s.b[j] - '0')
			if digits&1 == 1 {
				d *= 2
				if d > 9 {
					d -= 9
				}
			}
			sum += d
			digits++
		}
		if digits >= minCardDigits && sum%10 == 0 {
			first = i
		}
	}
	return first
}
