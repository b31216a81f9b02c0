package payment_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/paystream/paystream/payment"
)

func TestContainsCardNumber(t *testing.T) {
	t.Parallel()

	const visa = "4111111111111111"
	visa13 := "4222222222222"
	nineteen := withCheckDigit("400000000000000000")
	twelve := withCheckDigit("41111111111")
	// A 17-digit run holding a valid 16-digit number, itself not valid.
	seventeen := "1" + visa
	require.True(t, luhnValid(visa13) && luhnValid(nineteen) && luhnValid(twelve))
	require.False(t, luhnValid(seventeen))
	require.False(t, luhnValid(visa+"0"))

	tests := []struct {
		name string
		s    string
		want bool
	}{
		{"empty", "", false},
		{"plain", visa, true},
		{"in text", "card:" + visa + ".", true},
		{"between letters", "x" + visa + "x", true},
		{"spaces", "4111 1111 1111 1111", true},
		{"dashes", "4111-1111-1111-1111", true},
		{"mixed separators", "4111 1111-1111 1111", true},
		{"amex grouping", "3782 822463 10005", true},
		{"uneven grouping", "41 1111111111 1111", true},
		{"single-digit groups", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", true},
		{"13 digits", visa13, true},
		{"19 digits", nineteen, true},
		{"12 digits", twelve, false},
		{"20-digit run", "0000" + visa, false},
		{"17-digit run holding a card", seventeen, false},
		{"card then a digit", visa + "0", false},
		{"not Luhn", "4111111111111112", false},
		{"not Luhn grouped", "4111 1111 1111 1112", false},
		{"two spaces", "4111  1111 1111 1111", false},
		{"dots", "4111.1111.1111.1111", false},
		{"space and dash", "4111 -1111-1111-1111", false},
		{"card after unrelated groups", "order 12 34 4111 1111 1111 1111", true},
		{"card before unrelated groups", "4111 1111 1111 1111 2 99", true},
		{"card after a long run", "1234567890123456789012 4111 1111 1111 1111", true},
		{"long run ends a chain", "4111 1111 1111 1111 123456789012345678901", true},
		{"full-width digits", "４１１１１１１１１１１１１１１１", false},
		{"all zeros (Luhn-valid)", "0000000000000", true},
		{"phone number", "+1 415-555-0100", false},
		{"date and time", "2025-03-01 12:30", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, refContainsCard(tt.s), "reference disagrees with the test case")
			require.Equal(t, tt.want, payment.ContainsCardNumber(tt.s))
		})
	}
}

func TestMaskCardNumbers(t *testing.T) {
	t.Parallel()

	// overlap has two cards sharing groups: 0000 y 4111 1111 and
	// 4111 1111 1111 1111. Both are masked, so only the last group stays.
	var overlap string
	for y := 1000; y < 10000; y++ {
		cand := "0000" + strconv.Itoa(y) + "41111111"
		if luhnValid(cand) && !luhnValid(strconv.Itoa(y)+"411111111111") {
			overlap = "0000 " + strconv.Itoa(y) + " 4111 1111 1111 1111"
			break
		}
	}
	require.NotEmpty(t, overlap)

	// cascade has a 17-digit card whose last four digits, once the rest is
	// masked, start a second card with the groups after them.
	var cascade string
	run := withCheckDigit("4111111111111111")
	require.Len(t, run, 17)
	for d := range 10 {
		tail := "012" + strconv.Itoa(d)
		if luhnValid(run[13:]+"23456789"+tail) && !luhnValid(run+"23456789"+tail) {
			cascade = run + " 2345 6789 " + tail
			break
		}
	}
	require.NotEmpty(t, cascade)
	require.Len(t, refCardSpans([]byte(cascade)), 1, "the second card must not exist before masking")

	tests := []struct {
		name string
		in   string
		want string
	}{
		{"plain", "4111111111111111", "************1111"},
		{"in JSON", `{"payment_method":"4111111111111111","amount_minor":1999}`,
			`{"payment_method":"************1111","amount_minor":1999}`},
		{"spaces", "card 4111 1111 1111 1111 end", "card **** **** **** 1111 end"},
		{"dashes", "4111-1111-1111-1111", "****-****-****-1111"},
		{"amex", "3782-822463-10005", "****-******-*0005"},
		{"two cards", "a 5555555555554444, b 4111 1111 1111 1111", "a ************4444, b **** **** **** 1111"},
		{"invalid JSON around", "{\"x\":\"4111111111111111\xff", "{\"x\":\"************1111\xff"},
		{"last four split over groups", "4111 1111 1111 11 11", "**** **** **** 11 11"},
		{"unrelated groups kept", "order 12 4111 1111 1111 1111 x", "order 12 **** **** **** 1111 x"},
		{"overlapping cards", overlap, "**** **** **** **** **** 1111"},
		{"masking reveals a second card", cascade, strings.Repeat("*", 17) + " **** **** " + cascade[len(cascade)-4:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tt.in)
			got, changed := payment.MaskCardNumbers(in)
			require.True(t, changed)
			require.Equal(t, tt.want, string(got))
			require.Equal(t, tt.in, string(in), "input modified")
			require.Empty(t, refCardSpans(got))
		})
	}

	t.Run("nothing to mask returns the input", func(t *testing.T) {
		t.Parallel()
		in := []byte(`{"payment_method":"pm_card_visa","description":"4111 1111 1111 1112, 00004111111111111111"}`)
		got, changed := payment.MaskCardNumbers(in)
		require.False(t, changed)
		require.Equal(t, &in[0], &got[0])
		got, changed = payment.MaskCardNumbers(nil)
		require.False(t, changed)
		require.Empty(t, got)
	})
}

// TestCardNumbersAgainstReference compares both functions with the brute
// force reference on many generated strings made of digits and separators.
func TestCardNumbersAgainstReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("0123456789012345678901234567890123456789  --x*")
	for i := range 5000 {
		b := make([]byte, rng.IntN(60))
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		if i%3 == 0 { // plant a card
			card := []byte(withCheckDigit(strconv.Itoa(rng.IntN(1e9)) + strconv.Itoa(rng.IntN(1e6))))
			at := rng.IntN(len(b) + 1)
			b = append(b[:at:at], append(card, b[at:]...)...)
		}
		checkMasking(t, b)
	}
}

// checkMasking checks MaskCardNumbers and ContainsCardNumber on b against
// the reference.
func checkMasking(t *testing.T, b []byte) {
	t.Helper()
	orig := string(b)
	spans := refCardSpans(b)
	require.Equal(t, len(spans) > 0, payment.ContainsCardNumber(orig), "ContainsCardNumber(%q)", orig)

	got, changed := payment.MaskCardNumbers(b)
	require.Equal(t, orig, string(b), "input modified")
	require.Equal(t, len(spans) > 0, changed, "changed for %q", orig)
	require.Len(t, got, len(b))
	for i := range b {
		if got[i] != b[i] {
			require.True(t, isDigitByte(b[i]) && got[i] == '*', "byte %d of %q changed to %q", i, orig, got[i])
		}
	}
	// Every card of the input is masked but (at most) its last four digits.
	for _, sp := range spans {
		clear := 0
		for i := sp[0]; i < sp[1]; i++ {
			if isDigitByte(got[i]) {
				clear++
			}
		}
		require.LessOrEqual(t, clear, 4, "card %q of %q masked as %q", orig[sp[0]:sp[1]], orig, got[sp[0]:sp[1]])
	}
	require.Empty(t, refCardSpans(got), "card left in %q (from %q)", got, orig)
}

func TestMaskCardNumbersJSON(t *testing.T) {
	t.Parallel()

	// esc writes every character of s as a \u escape.
	esc := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		return b.String()
	}
	const visa = "4111111111111111"
	require.False(t, luhnValid(visa+"0"))

	tests := []struct {
		name string
		in   string
		want string
	}{
		{"every digit escaped", `{"description":"` + esc(visa) + `"}`,
			`{"description":"************` + esc("1111") + `"}`},
		{"upper-case hex", `{"d":"\u0034\u0031\u0031\u0031` + visa[4:] + `"}`, `{"d":"************1111"}`},
		{"split by escaped spaces", `{"d":"4111\u00201111\u00201111\u00201111"}`, `{"d":"****\u0020****\u0020****\u00201111"}`},
		{"split by escaped dashes", `{"d":"4111\u002d1111\u002D1111-1111"}`, `{"d":"****\u002d****\u002D****-1111"}`},
		{"escaped digits inside", `{"d":"41\u0031\u0031` + visa[4:] + `"}`, `{"d":"************1111"}`},
		{"escaped last four", `{"d":"` + visa[:12] + esc("1111") + `"}`, `{"d":"************` + esc("1111") + `"}`},
		{"between escapes of other characters", `{"d":"\"\u00e9\n` + visa + `\t\\"}`, `{"d":"\"\u00e9\n************1111\t\\"}`},
		{"escaped in a key", `{"` + esc("4111") + visa[4:] + `":"v"}`, `{"************1111":"v"}`},
		{"in a metadata value", `{"metadata":{"k":"pan ` + esc("5555 5555 5555 4444") + `"}}`,
			`{"metadata":{"k":"pan ****` + esc(" ") + "****" + esc(" ") + "****" + esc(" 4444") + `"}}`},
		{"in clear", `{"payment_method":"4111 1111 1111 1111"}`, `{"payment_method":"**** **** **** 1111"}`},
		{"in clear before an escaped digit", `{"d":"` + visa + `\u0030"}`, `{"d":"************1111\u0030"}`},
		{"a number", `{"amount_minor":4111111111111111,"n":[1,-4111111111111111.5e3]}`,
			`{"amount_minor":"************1111","n":[1,"-************1111.5e3"]}`},
		{"a number and a string", `[4111111111111111,"` + esc(visa) + `"]`, `["************1111","************` + esc("1111") + `"]`},
		{"not JSON: escapes decoded", `{"d":"` + esc(visa) + `",`, `{"d":"************` + esc("1111") + `",`},
		{"not JSON: digits of an escape in clear", `ref \u4111111111111111 x`, `ref \u************1111 x`},
		{"not JSON: invalid escapes", `\x4111111111111111\u12`, `\x************1111\u12`},
		{"not JSON: a number", `{"n":4111111111111111`, `{"n":************1111`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tt.in)
			got, changed := payment.MaskCardNumbersJSON(in)
			require.True(t, changed)
			require.Equal(t, tt.want, string(got))
			require.Equal(t, tt.in, string(in), "input modified")
			require.Equal(t, json.Valid(in), json.Valid(got), "JSON validity changed")
			checkJSONMasking(t, in)
		})
	}

	t.Run("nothing to mask returns the input", func(t *testing.T) {
		t.Parallel()
		for _, s := range []string{
			`{"payment_method":"pm_card_visa","description":"4111 1111 1111 1112, 00004111111111111111"}`,
			`{"d":"caf\u00e9 \"x\"\n4111\u00201111 1111 1112","n":4111111111111112}`,
			`{"d":"\\u0034` + visa[1:] + `"}`, // the escaped backslash makes a 19-digit run, not a card
			`not JSON \`,
		} {
			in := []byte(s)
			got, changed := payment.MaskCardNumbersJSON(in)
			require.False(t, changed, s)
			require.Equal(t, &in[0], &got[0], s)
		}
		got, changed := payment.MaskCardNumbersJSON(nil)
		require.False(t, changed)
		require.Empty(t, got)
	})
}

// TestMaskCardNumbersJSONAgainstReference checks MaskCardNumbersJSON on
// many generated JSON documents whose strings mix digits and separators in
// clear and escaped.
func TestMaskCardNumbersJSONAgainstReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		b := make([]byte, rng.IntN(120))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		checkJSONMasking(t, denseJSON(b))
	}
}

// TestMaskCardNumbersJSONRoundBound checks that a body whose masks keep
// making new card numbers, round after round, ends masked all the same: with
// the rounds bounded at one, every body that needs a second round has all
// its digits masked.
func TestMaskCardNumbersJSONRoundBound(t *testing.T) {
	t.Parallel()
	oneRound := func(b []byte) ([]byte, bool) { return payment.MaskCardNumbersJSONRounds(b, 1) }
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		b := make([]byte, rng.IntN(120))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		checkJSONMaskingBy(t, denseJSON(b), oneRound)
	}

	in := []byte(`{"n":4111111111111111,"d":"4111\u00201111 1111 1111 \u0031\u00e9 42","e":"\u0034","r":"2025"}`)
	got, changed := oneRound(in)
	require.True(t, changed)
	require.Equal(t, `{"n":"****************","d":"****\u0020**** **** **** *\u00e9 **","e":"*","r":"****"}`, string(got))
	got, changed = payment.MaskCardNumbersJSONRounds([]byte(`x \u0034\u00e9 4111111111111111`), 1)
	require.True(t, changed)
	require.Equal(t, `x *\u**e* ****************`, string(got))
}

// denseJSON reads b in an alphabet of JSON pieces that make long chains of
// digits and separators, in clear and escaped, and returns a document: most
// often an object with one string, sometimes with a number, and sometimes
// not JSON at all.
func denseJSON(b []byte) []byte {
	digits := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
		`\u0030`, `\u0031`, `\u0034`, `\u0039`, "1", "4"}
	others := []string{" ", "-", `\u0020`, `\u002d`, " ", "-", `\\`, `\"`, `\n`, `\u00e9`, "x", "*", "é"}
	var s strings.Builder
	for _, c := range b {
		if c%4 != 0 { // three digits out of four
			s.WriteString(digits[int(c/4)%len(digits)])
		} else {
			s.WriteString(others[int(c/4)%len(others)])
		}
	}
	switch len(b) % 5 {
	case 0:
		return []byte(`{"n":` + strings.Repeat("4", len(b)%20) + `0,"d":"` + s.String() + `"}`)
	case 1:
		return []byte(`["` + s.String())
	default:
		return []byte(`{"d":"` + s.String() + `"}`)
	}
}

// escapeRE matches a JSON escape, as a decoder reading left to right finds
// them.
var escapeRE = regexp.MustCompile(`\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])`)

// decodedView returns b with every JSON escape replaced by the character it
// stands for when ASCII, else by '~': the text a lenient JSON reader sees,
// byte for byte for the digits and separators.
func decodedView(b []byte) []byte {
	return escapeRE.ReplaceAllFunc(b, func(e []byte) []byte {
		if e[1] != 'u' {
			var s string
			_ = json.Unmarshal([]byte(`"`+string(e)+`"`), &s)
			return []byte(s)
		}
		r, _ := strconv.ParseUint(string(e[2:]), 16, 32)
		if r < 0x80 {
			return []byte{byte(r)}
		}
		return []byte("~")
	})
}

// clearView returns b with the bytes of every JSON escape replaced by 'x':
// the digits a reader of the bytes sees, not counting those of escapes.
func clearView(b []byte) []byte {
	return escapeRE.ReplaceAllFunc(b, func(e []byte) []byte { return bytes.Repeat([]byte("x"), len(e)) })
}

// checkJSONMasking checks MaskCardNumbersJSON on b: the input is kept; no
// card number is left in the decoded text nor in clear; a valid document
// stays valid, and decodes, token by token, to the same values but for
// digits turned into '*' (and masked numbers turned into strings), every
// card of it masked but its last four digits.
func checkJSONMasking(t *testing.T, b []byte) {
	t.Helper()
	checkJSONMaskingBy(t, b, payment.MaskCardNumbersJSON)
}

// checkJSONMaskingBy is checkJSONMasking of the function mask.
func checkJSONMaskingBy(t *testing.T, b []byte, mask func([]byte) ([]byte, bool)) {
	t.Helper()
	orig := bytes.Clone(b)
	got, changed := mask(b)
	require.Equal(t, orig, b, "input modified")
	valid := json.Valid(b)
	if !changed {
		require.Equal(t, string(b), string(got))
	}
	require.Empty(t, refCardSpans(decodedView(got)), "card left in the decoded text of %q (from %q)", got, b)
	if !valid {
		require.Empty(t, refCardSpans(got), "card left in %q (from %q)", got, b)
		return
	}
	require.Empty(t, refCardSpans(clearView(got)), "card left in clear in %q (from %q)", got, b)
	require.True(t, json.Valid(got), "%q masked to invalid JSON %q", b, got)
	if changed != (len(refCardSpans(decodedView(b))) > 0 || len(refCardSpans(clearView(b))) > 0) {
		t.Fatalf("changed %v for %q", changed, b)
	}

	in, out := jsonTokens(t, b), jsonTokens(t, got)
	require.Len(t, out, len(in))
	for i, tok := range in {
		var ins string
		switch v := tok.(type) {
		case string:
			ins = v
		case json.Number:
			if n, ok := out[i].(json.Number); ok {
				require.Equal(t, v, n)
				continue
			}
			ins = string(v)
		default:
			require.Equal(t, tok, out[i])
			continue
		}
		outs, ok := out[i].(string)
		require.True(t, ok, "token %v masked as %v", tok, out[i])
		require.Len(t, outs, len(ins))
		for j := range len(ins) {
			if ins[j] != outs[j] {
				require.True(t, isDigitByte(ins[j]) && outs[j] == '*', "%q masked as %q", ins, outs)
			}
		}
		for _, sp := range refCardSpans([]byte(ins)) {
			clear := 0
			for j := sp[0]; j < sp[1]; j++ {
				if isDigitByte(outs[j]) {
					clear++
				}
			}
			require.LessOrEqual(t, clear, 4, "card in %q masked as %q", ins, outs)
		}
		require.False(t, refContainsCard(outs), "card left in %q", outs)
	}
}

// jsonTokens returns the tokens of the JSON document b, numbers as
// json.Number.
func jsonTokens(t *testing.T, b []byte) []json.Token {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var toks []json.Token
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return toks
		}
		require.NoError(t, err)
		toks = append(toks, tok)
	}
}

// TestMaskCardNumbersJSONAllocations checks that a body without escapes
// and without a card costs no allocation. It cannot run in parallel
// (testing.AllocsPerRun).
func TestMaskCardNumbersJSONAllocations(t *testing.T) {
	body := []byte(typicalBody)
	require.Zero(t, testing.AllocsPerRun(100, func() { _, _ = payment.MaskCardNumbersJSON(body) }))
}

// BenchmarkMaskCardNumbersJSON masks a 64 KiB dead-letter body with a few
// cards, in clear and escaped.
func BenchmarkMaskCardNumbersJSON(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`[`)
	for buf.Len() < payment.MaxBodyBytes-200 {
		buf.WriteString(`{"description":"order 1234-5678 paid\n","ref":"00004111111111111111","n":12345678901},`)
	}
	buf.WriteString(`{"payment_method":"4111 1111 1111 1111","d":"\u0034\u0031\u0031\u0031` + "111111111111" + `"}]`)
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, changed := payment.MaskCardNumbersJSON(body); !changed {
			b.Fatal("card not masked")
		}
	}
}
