package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"time"

	"github.com/paystream/paystream/payment"
)

// mask masks every card number in s: defence in depth over the masking ops
// does already.
func mask(s string) string {
	m, _ := payment.MaskCardNumbers([]byte(s))
	return string(m)
}

// prettyJSON indents a JSON document (as is when it is not JSON) and masks
// card numbers in it.
func prettyJSON(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return mask(string(b))
	}
	m, _ := payment.MaskCardNumbersJSON(out.Bytes())
	return mask(string(m))
}

// money formats an amount in minor units with its currency (two decimals:
// an operator's reading aid; the minor units are shown beside it).
func money(minor int64, currency string) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, minor/100, minor%100, currency)
}

// thousands writes n with thin separators: 10 000 000.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteRune(' ')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func funcs() template.FuncMap {
	return template.FuncMap{
		"mask":   mask,
		"pretty": func(b []byte) string { return prettyJSON(b) },
		"prettyRaw": func(b json.RawMessage) string {
			return prettyJSON(b)
		},
		"money":     money,
		"thousands": thousands,
		"u64":       func(n uint64) string { return thousands(int64(n)) },
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05.000Z")
		},
		"tsp": func(t *time.Time) string {
			if t == nil || t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05.000Z")
		},
		"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"dur": func(d time.Duration) string { return roundDuration(d) },
		"secs": func(s float64) string {
			return roundDuration(time.Duration(s * float64(time.Second)))
		},
		"dash": func(s string) string {
			if s == "" {
				return "—"
			}
			return mask(s)
		},
		"join": strings.Join,
		"add":  func(a, b int) int { return a + b },
		"pct": func(done, total int) int {
			if total == 0 {
				return 0
			}
			return done * 100 / total
		},
	}
}

func roundDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}
