package payment_test

import (
	"math/rand/v2"
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
