package payment

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
// masked too. Digits written as JSON escapes (\u0034) are not recognised.
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
