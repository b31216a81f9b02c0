package config

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// flagValue is the flag.Value every setting registers. Unlike the standard
// library's values, Set never fails: an unparseable input is recorded (see
// parseError) and the field keeps its previous value, so that ff goes on and
// Parse can report every bad input together with every invalid setting.
type flagValue interface {
	// Set and String as in flag.Value.
	Set(string) error
	String() string
	// reset sets the bound field to its default.
	reset()
	// parseError says why the last Set did not parse, or is nil.
	parseError() error
	// logTo adds the field's current value to e under key.
	logTo(e *zerolog.Event, key string)
}

// value binds one Config field of type T to the flag package.
type value[T any] struct {
	p      *T
	def    T
	parse  func(string) (T, error)
	format func(T) string
	isBool bool

	err error // why the last Set failed; nil once a later Set succeeds
}

var _ flagValue = (*value[int])(nil)

// Set parses s into the field. It returns nil even when s does not parse; the
// problem is kept for parseError.
func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		v.err = err
		return nil
	}
	*v.p, v.err = x, nil
	return nil
}

// String formats the field. The flag package also calls it on a zero value to
// find out whether a default is worth printing, hence the nil checks.
func (v *value[T]) String() string {
	if v == nil || v.p == nil || v.format == nil {
		return ""
	}
	return v.format(*v.p)
}

// Get implements flag.Getter.
func (v *value[T]) Get() any { return *v.p }

// IsBoolFlag makes the flag package accept a bare --name for bool settings.
func (v *value[T]) IsBoolFlag() bool { return v != nil && v.isBool }

func (v *value[T]) reset() {
	d := v.def
	if s, ok := any(d).([]string); ok { // do not share the default's array
		d = any(slices.Clone(s)).(T)
	}
	*v.p, v.err = d, nil
}

func (v *value[T]) parseError() error { return v.err }

func (v *value[T]) logTo(e *zerolog.Event, key string) {
	switch x := any(*v.p).(type) {
	case string:
		e.Str(key, x)
	case []string:
		e.Strs(key, x)
	case int:
		e.Int(key, x)
	case int64:
		e.Int64(key, x)
	case float64:
		e.Float64(key, x)
	case bool:
		e.Bool(key, x)
	default: // time.Duration: "30s" reads better than zerolog's number of ms
		e.Str(key, v.String())
	}
}

func newString(p *string, def string) *value[string] {
	return &value[string]{p: p, def: def,
		parse:  func(s string) (string, error) { return s, nil },
		format: func(s string) string { return s },
	}
}

// newList binds a comma-separated list; surrounding spaces are dropped from
// each entry. A repeated flag replaces the list rather than appending to it.
func newList(p *[]string, def []string) *value[[]string] {
	return &value[[]string]{p: p, def: def,
		parse: func(s string) ([]string, error) {
			parts := strings.Split(s, ",")
			for i := range parts {
				parts[i] = strings.TrimSpace(parts[i])
			}
			return parts, nil
		},
		format: func(l []string) string { return strings.Join(l, ",") },
	}
}

func newInt(p *int, def int) *value[int] {
	return &value[int]{p: p, def: def,
		parse: func(s string) (int, error) {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return 0, numError(s, "an integer", err)
			}
			return n, nil
		},
		format: strconv.Itoa,
	}
}

func newInt64(p *int64, def int64) *value[int64] {
	return &value[int64]{p: p, def: def,
		parse: func(s string) (int64, error) {
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				return 0, numError(s, "an integer", err)
			}
			return n, nil
		},
		format: func(n int64) string { return strconv.FormatInt(n, 10) },
	}
}

// newFloat binds a float64; NaN and infinities are refused at parse time so
// that range rules can compare safely.
func newFloat(p *float64, def float64) *value[float64] {
	return &value[float64]{p: p, def: def,
		parse: func(s string) (float64, error) {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return 0, numError(s, "a number", err)
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return 0, fmt.Errorf("cannot parse %q as a finite number", s)
			}
			return f, nil
		},
		format: func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) },
	}
}

func newBool(p *bool, def bool) *value[bool] {
	return &value[bool]{p: p, def: def, isBool: true,
		parse: func(s string) (bool, error) {
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return false, fmt.Errorf("cannot parse %q as a boolean (true or false)", s)
			}
			return b, nil
		},
		format: strconv.FormatBool,
	}
}

func newDuration(p *time.Duration, def time.Duration) *value[time.Duration] {
	return &value[time.Duration]{p: p, def: def,
		parse: func(s string) (time.Duration, error) {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return 0, fmt.Errorf("cannot parse %q as a duration (a Go duration such as 30s, 500ms or 2h45m)", s)
			}
			return d, nil
		},
		format: time.Duration.String,
	}
}

// newRetention is a duration that also accepts -1 (KeepForever).
func newRetention(p *time.Duration, def time.Duration) *value[time.Duration] {
	v := newDuration(p, def)
	parse := v.parse
	v.parse = func(s string) (time.Duration, error) {
		if strings.TrimSpace(s) == "-1" {
			return KeepForever, nil
		}
		return parse(s)
	}
	v.format = func(d time.Duration) string {
		if d == KeepForever {
			return "-1"
		}
		return d.String()
	}
	return v
}

// numError describes a strconv failure without repeating strconv's prefix.
func numError(s, what string, err error) error {
	if ne := (*strconv.NumError)(nil); errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
		return fmt.Errorf("cannot parse %q as %s: value out of range", s, what)
	}
	return fmt.Errorf("cannot parse %q as %s", s, what)
}
