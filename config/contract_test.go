package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// contractPath is the contract whose settings table (§8) must match the
// settings table of this package.
var contractPath = filepath.Join("..", "docs", "contract.md")

// TestContractSettingsTable holds the settings table of docs/contract.md §8
// equal to the table of (*Config).settings: the same variables, and the same
// defaults. A setting added to the code and not to the contract (or the
// other way round), or a default changed in one place only, fails it.
//
// The rule for the default column: the cell starts with the default in
// backticks, written as the setting itself accepts it, or with the word
// "none" when the default is empty; the rest of the cell is explanation. A
// documented default is parsed by the setting's own parser and must then
// print exactly as the code's default does, so `168h` documents 7 days
// (printed 168h0m0s) and `0s` a zero duration, but `7d` or `30` for 30s fail.
func TestContractSettingsTable(t *testing.T) {
	doc, err := os.ReadFile(contractPath)
	require.NoError(t, err)
	rows, err := contractSettings(string(doc))
	require.NoError(t, err, "read the settings table of %s §8", contractPath)

	var c Config
	code := map[string]setting{}
	var codeVars []string
	for _, s := range c.settings() {
		code[envVar(s.name)] = s
		codeVars = append(codeVars, envVar(s.name))
	}
	documented := map[string]bool{}
	for _, r := range rows {
		documented[r.variable] = true
	}

	var onlyCode, onlyDoc []string
	for _, v := range codeVars {
		if !documented[v] {
			onlyCode = append(onlyCode, v)
		}
	}
	for _, r := range rows {
		if _, ok := code[r.variable]; !ok {
			onlyDoc = append(onlyDoc, r.variable)
		}
	}
	if len(onlyCode) > 0 {
		t.Errorf("settings in the config package but not in the table of %s §8 (add a row): %s",
			contractPath, strings.Join(onlyCode, ", "))
	}
	if len(onlyDoc) > 0 {
		t.Errorf("settings in the table of %s §8 but not in the config package (remove the row, or list it under the settings not implemented yet): %s",
			contractPath, strings.Join(onlyDoc, ", "))
	}

	for _, r := range rows {
		s, ok := code[r.variable]
		if !ok {
			continue
		}
		if err := checkDefault(s, r.def); err != nil {
			t.Errorf("%s (line %d of %s): %v", r.variable, r.line, contractPath, err)
		}
	}
}

// checkDefault reports whether def, a documented default (nil for "none"),
// equals the default of s as the code prints it.
func checkDefault(s setting, def *string) error {
	s.value.reset()
	want := s.value.String()
	if def == nil {
		if want != "" {
			return fmt.Errorf("the contract says none, the code's default is `%s`", want)
		}
		return nil
	}
	if want == "" {
		return fmt.Errorf("the contract says `%s`, the code has no default (write none)", *def)
	}
	if err := s.value.Set(*def); err != nil || s.value.parseError() != nil {
		return fmt.Errorf("the contract's default `%s` is not a value of this setting: %v",
			*def, errors.Join(err, s.value.parseError()))
	}
	if got := s.value.String(); got != want {
		return fmt.Errorf("the contract says `%s` (that is %s), the code's default is %s", *def, got, want)
	}
	return nil
}

// contractRow is one setting documented in the table.
type contractRow struct {
	variable string
	def      *string // nil for none
	line     int
}

var (
	// sectionHeading matches a heading of level 1 or 2; section 8 starts
	// with "## 8." and ends at the next one.
	sectionHeading = regexp.MustCompile(`^#{1,2}\s`)
	section8       = regexp.MustCompile(`^##\s+8\.\s`)
	variableCell   = regexp.MustCompile("^`(PAYSTREAM_[A-Z0-9_]+)`$")
	groupCell      = regexp.MustCompile(`^\*\*[^*]+\*\*$`)
	defaultValue   = regexp.MustCompile("^`([^`]+)`")
	defaultNone    = regexp.MustCompile(`^none\b`)
)

// contractSettings returns the rows of the one table in §8 of doc whose
// header is "variable | meaning | default". Within it, a row is either a
// setting, whose first cell is a backticked PAYSTREAM_ variable, or a group
// heading: a bold first cell and two empty ones. Anything else is an error,
// so that a typo cannot hide a row from the comparison.
func contractSettings(doc string) ([]contractRow, error) {
	lines := strings.Split(doc, "\n")
	start := slices.IndexFunc(lines, section8.MatchString)
	if start < 0 {
		return nil, errors.New(`no "## 8." heading`)
	}
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		if sectionHeading.MatchString(lines[i]) {
			end = i
			break
		}
	}

	var (
		rows    []contractRow
		tables  int
		inTable bool // inside the settings table
		seen    = map[string]int{}
		errs    []error
	)
	for i := start + 1; i < end; i++ {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := tableCells(line)
		if !inTable {
			if slices.Equal(cells, []string{"variable", "meaning", "default"}) {
				tables++
				inTable = true
				i++ // the delimiter row
			}
			continue
		}
		n := i + 1 // line number
		if len(cells) != 3 {
			errs = append(errs, fmt.Errorf("line %d: %d cells, want 3: %s", n, len(cells), line))
			continue
		}
		if groupCell.MatchString(cells[0]) && cells[1] == "" && cells[2] == "" {
			continue
		}
		m := variableCell.FindStringSubmatch(cells[0])
		if m == nil {
			errs = append(errs, fmt.Errorf("line %d: the first cell must be a backticked PAYSTREAM_ variable or a **group** heading, got %q", n, cells[0]))
			continue
		}
		r := contractRow{variable: m[1], line: n}
		if prev, dup := seen[r.variable]; dup {
			errs = append(errs, fmt.Errorf("line %d: %s is already documented on line %d", n, r.variable, prev))
			continue
		}
		seen[r.variable] = n
		if cells[1] == "" {
			errs = append(errs, fmt.Errorf("line %d: %s has no meaning", n, r.variable))
		}
		switch d := defaultValue.FindStringSubmatch(cells[2]); {
		case d != nil:
			r.def = &d[1]
		case defaultNone.MatchString(cells[2]):
		default:
			errs = append(errs, fmt.Errorf("line %d: the default of %s must start with a backticked value or with none, got %q", n, r.variable, cells[2]))
			continue
		}
		rows = append(rows, r)
	}
	switch {
	case tables == 0:
		errs = append(errs, errors.New(`no table with the header "| variable | meaning | default |"`))
	case tables > 1:
		errs = append(errs, fmt.Errorf(`%d tables with the header "| variable | meaning | default |", want one`, tables))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rows, nil
}

// tableCells splits a markdown table row into its trimmed cells; an escaped
// pipe (\|) stays inside its cell.
func tableCells(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	const placeholder = "\x00"
	line = strings.ReplaceAll(line, `\|`, placeholder)
	cells := strings.Split(line, "|")
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(strings.TrimSpace(c), placeholder, "|")
	}
	return cells
}

// TestContractSettingsParser checks the table reader on small documents, so
// that a broken table is reported rather than read as empty.
func TestContractSettingsParser(t *testing.T) {
	const head = "## 8. Configuration\n\n| variable | meaning | default |\n|---|---|---|\n"
	tests := []struct {
		name    string
		doc     string
		want    []string // variable=default, "none" for nil
		wantErr string
	}{
		{
			name: "rows, groups and the end of the section",
			doc: head + "| **Group** | | |\n" +
				"| `PAYSTREAM_ACK_WAIT` | a \\| b | `30s` (half a minute) |\n" +
				"| `PAYSTREAM_NATS_CREDS` | b | none (derived) |\n" +
				"\n- `PAYSTREAM_LEASE` is not in a table\n" +
				"## 9. Next\n| variable | meaning | default |\n|---|---|---|\n| `PAYSTREAM_STREAM` | d | `1` |\n",
			want: []string{"PAYSTREAM_ACK_WAIT=30s", "PAYSTREAM_NATS_CREDS=none"},
		},
		{
			name:    "no section",
			doc:     "## 7. Other\n",
			wantErr: `no "## 8." heading`,
		},
		{
			name:    "no table",
			doc:     "## 8. Configuration\n\ntext\n",
			wantErr: "no table",
		},
		{
			name:    "two tables",
			doc:     head + "| `PAYSTREAM_ACK_WAIT` | a | `1` |\n\n" + head[len("## 8. Configuration\n\n"):] + "| `PAYSTREAM_NATS_CREDS` | b | `1` |\n",
			wantErr: "2 tables",
		},
		{
			name:    "first cell not a variable",
			doc:     head + "| PAYSTREAM_ACK_WAIT | a | `1` |\n",
			wantErr: "first cell must be",
		},
		{
			name:    "default neither value nor none",
			doc:     head + "| `PAYSTREAM_ACK_WAIT` | a | 30s |\n",
			wantErr: "must start with a backticked value or with none",
		},
		{
			name:    "duplicate",
			doc:     head + "| `PAYSTREAM_ACK_WAIT` | a | `1` |\n| `PAYSTREAM_ACK_WAIT` | a | `1` |\n",
			wantErr: "already documented",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := contractSettings(tt.doc)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, r := range rows {
				d := "none"
				if r.def != nil {
					d = *r.def
				}
				got = append(got, r.variable+"="+d)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

// TestContractDefaultRule shows what the default rule accepts and refuses,
// on real settings.
func TestContractDefaultRule(t *testing.T) {
	var c Config
	byName := map[string]setting{}
	for _, s := range c.settings() {
		byName[envVar(s.name)] = s
	}
	str := func(s string) *string { return &s }
	tests := []struct {
		variable string
		def      *string
		ok       bool
	}{
		{"PAYSTREAM_ACK_WAIT", str("30s"), true},
		{"PAYSTREAM_ACK_WAIT", str("0.5m"), true}, // the same duration
		{"PAYSTREAM_ACK_WAIT", str("31s"), false},
		{"PAYSTREAM_ACK_WAIT", str("30"), false}, // not a duration
		{"PAYSTREAM_ACK_WAIT", nil, false},
		{"PAYSTREAM_STREAM_MAX_AGE", str("168h"), true},
		{"PAYSTREAM_CONCURRENCY", str("64"), true},
		{"PAYSTREAM_CONCURRENCY", str("sixty-four"), false},
		{"PAYSTREAM_NATS_CREDS", nil, true},
		{"PAYSTREAM_NATS_CREDS", str("x"), false},
		{"PAYSTREAM_PROVISION", str("true"), true},
		{"PAYSTREAM_NATS_URL", str("nats://127.0.0.1:4222"), true},
	}
	for _, tt := range tests {
		name := tt.variable + "="
		if tt.def == nil {
			name += "none"
		} else {
			name += *tt.def
		}
		t.Run(name, func(t *testing.T) {
			s, ok := byName[tt.variable]
			require.True(t, ok)
			err := checkDefault(s, tt.def)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}
