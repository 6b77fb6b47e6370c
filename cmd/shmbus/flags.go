package main

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The flag values of every command. Each refuses what it cannot parse with
// a *valueError, which the flag error function of rootCmd turns into one
// line naming the flag and echoing the text as the user typed it.

// valueError is a flag value that does not parse or is out of range.
type valueError struct {
	what   string // what the value is: "size", "priority", ...
	text   string // the value as typed
	reason string
}

func (e *valueError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.what, e.text, e.reason)
}

// sizeUnits are the units of a SIZE, in binary multiples, by the lower-case
// suffix that names them.
var sizeUnits = map[string]uint{
	"": 0, "b": 0,
	"k": 10, "kib": 10,
	"m": 20, "mib": 20,
	"g": 30, "gib": 30,
	"t": 40, "tib": 40,
}

var sizeRE = regexp.MustCompile(`^([0-9]+)([A-Za-z]*)$`)

const sizeHint = "use a whole number of bytes, optionally followed by k, M, G or T (or KiB, MiB, GiB, TiB: powers of 1024)"

// parseSize parses a SIZE: a whole number, optionally followed without a
// space by a unit: B (bytes), or k, M, G, T, also written KiB, MiB, GiB,
// TiB (powers of 1024). Units are read in any case. KB, MB, ... are refused,
// since they may mean powers of 1000. A SIZE is at least 1 byte.
func parseSize(s string) (int, error) {
	bad := func(reason string) (int, error) { return 0, &valueError{"size", s, reason} }
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return bad(sizeHint)
	}
	unit := strings.ToLower(m[2])
	shift, ok := sizeUnits[unit]
	if !ok {
		if len(unit) == 2 && unit[1] == 'b' && strings.ContainsRune("kmgt", rune(unit[0])) {
			return bad(fmt.Sprintf("%s may mean powers of 1000 or of 1024: write %s or %siB (1024)",
				m[2], m[2][:1], strings.ToUpper(m[2][:1])))
		}
		return bad(sizeHint)
	}
	n, err := strconv.ParseUint(m[1], 10, 63)
	if err != nil || n > math.MaxInt>>shift {
		return bad("too large")
	}
	if n == 0 {
		return bad("must be at least 1 byte")
	}
	return int(n << shift), nil
}

// formatSize writes n exactly, in the largest binary unit that divides it.
func formatSize(n int) string {
	if n <= 0 {
		return strconv.Itoa(n)
	}
	for _, u := range humanUnits {
		if n%(1<<u.shift) == 0 {
			return strconv.Itoa(n>>u.shift) + u.suffix
		}
	}
	return strconv.Itoa(n)
}

var humanUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}}

// humanSize writes n for tables: bytes, or one decimal in a binary unit.
func humanSize(n uint64) string {
	for _, u := range humanUnits {
		if n >= 1<<u.shift {
			v := float64(n) / float64(uint64(1)<<u.shift)
			s := strconv.FormatFloat(v, 'f', 1, 64)
			return strings.TrimSuffix(s, ".0") + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

// sizeValue is a SIZE flag; 0 means not set. text keeps what was typed,
// for errors about the value's range.
type sizeValue struct {
	n    *int
	text *string
}

func newSizeValue(n *int) sizeValue { return sizeValue{n, new(string)} }

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.n, *v.text = n, s
	return nil
}

func (v sizeValue) String() string {
	if v.n == nil || *v.n == 0 {
		return ""
	}
	return formatSize(*v.n)
}

// Typed is the value as the user typed it, or as the default prints.
func (v sizeValue) Typed() string {
	if *v.text != "" {
		return *v.text
	}
	return v.String()
}

func (v sizeValue) Type() string { return "SIZE" }

// sizeListValue is a LIST of SIZEs, comma-separated.
type sizeListValue struct {
	ns    *[]int
	texts *[]string
}

func (v sizeListValue) Set(s string) error {
	var ns []int
	var texts []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := parseSize(f)
		if err != nil {
			return err
		}
		ns, texts = append(ns, n), append(texts, f)
	}
	*v.ns, *v.texts = ns, texts
	return nil
}

func (v sizeListValue) String() string {
	if v.ns == nil {
		return ""
	}
	var out []string
	for _, n := range *v.ns {
		out = append(out, formatSize(n))
	}
	return strings.Join(out, ",")
}

func (v sizeListValue) Type() string { return "LIST" }

// intValue is an N flag: a whole number from min to max.
type intValue struct {
	n        *int
	what     string // "priority", "count", ...
	min, max int
}

func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return &valueError{v.what, s, "too large"}
	case err != nil:
		return &valueError{v.what, s, "not a number"}
	case n < v.min || n > v.max:
		return &valueError{v.what, s, rangeText(v.min, v.max)}
	}
	*v.n = n
	return nil
}

func rangeText(min, max int) string {
	if max == math.MaxInt {
		return fmt.Sprintf("must be at least %d", min)
	}
	return fmt.Sprintf("want %d to %d", min, max)
}

func (v intValue) String() string {
	if v.n == nil {
		return ""
	}
	return strconv.Itoa(*v.n)
}

func (v intValue) Type() string { return "N" }

// parseDuration parses a DUR: a Go duration (500ms, 2s, 1m30s) or a plain
// number of seconds (2, 0.5). Negative durations are refused.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, &valueError{"duration", s, "use a number with a unit (500ms, 2s, 1m30s) or a number of seconds"}
		}
		if math.Abs(f) > float64(math.MaxInt64)/float64(time.Second) {
			return 0, &valueError{"duration", s, "too large"}
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, &valueError{"duration", s, "must not be negative"}
	}
	return d, nil
}

// durValue is a DUR flag.
type durValue struct{ d *time.Duration }

func (v durValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (v durValue) String() string {
	if v.d == nil || *v.d == 0 {
		return "0"
	}
	return v.d.String()
}

func (v durValue) Type() string { return "DUR" }

// enumValue is a flag with a fixed set of values; its value name lists
// them ("text|json|raw"), and shell completion offers them.
type enumValue struct {
	s       *string
	allowed []string
}

func (v enumValue) Set(s string) error {
	for _, a := range v.allowed {
		if s == a {
			*v.s = s
			return nil
		}
	}
	return &valueError{"value", s, "want one of " + strings.Join(v.allowed, ", ")}
}

func (v enumValue) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}

func (v enumValue) Type() string { return strings.Join(v.allowed, "|") }

// modeValue is an OCTAL permission flag (1..0777).
type modeValue struct{ m *uint32 }

func (v modeValue) Set(s string) error {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return &valueError{"mode", s, "want octal permission bits from 0 to 0777"}
	}
	if m == 0 {
		return &valueError{"mode", s, "admits nobody"}
	}
	*v.m = uint32(m)
	return nil
}

func (v modeValue) String() string {
	if v.m == nil {
		return ""
	}
	return fmt.Sprintf("%04o", *v.m)
}

func (v modeValue) Type() string { return "OCTAL" }

// cpuPairValue is the A,B of bench --cpu: two CPU numbers.
type cpuPairValue struct{ cpus *[]int }

func (v cpuPairValue) Set(s string) error {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return &valueError{"CPU pair", s, "want two CPU numbers, A,B"}
	}
	var out []int
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return &valueError{"CPU pair", s, fmt.Sprintf("%q is not a CPU number", p)}
		}
		out = append(out, n)
	}
	*v.cpus = out
	return nil
}

func (v cpuPairValue) String() string {
	if v.cpus == nil || len(*v.cpus) == 0 {
		return ""
	}
	return fmt.Sprintf("%d,%d", (*v.cpus)[0], (*v.cpus)[1])
}

func (v cpuPairValue) Type() string { return "A,B" }

// listValue is a LIST: comma-separated words, each one of allowed.
type listValue struct {
	list    *[]string
	what    string
	allowed []string
}

func (v listValue) Set(s string) error {
	var out []string
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		if !contains(v.allowed, w) {
			return &valueError{v.what, w, "want one of " + strings.Join(v.allowed, ", ")}
		}
		out = append(out, w)
	}
	*v.list = append(*v.list, out...)
	return nil
}

func (v listValue) String() string {
	if v.list == nil {
		return ""
	}
	return strings.Join(*v.list, ",")
}

func (v listValue) Type() string { return "LIST" }
