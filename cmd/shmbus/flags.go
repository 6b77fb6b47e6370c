package main

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

var sizeRE = regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`)

// parseSize parses a SIZE: a whole number of bytes, optionally followed by
// B, KiB, MiB, GiB or TiB. It must be at least 1.
func parseSize(s string) (int, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: use a number of bytes, optionally followed by B, KiB, MiB, GiB or TiB", s)
	}
	n, err := strconv.ParseUint(m[1], 10, 63)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	var shift uint
	for _, u := range sizeUnits {
		if u.suffix == m[2] {
			shift = u.shift
		}
	}
	if n > math.MaxInt>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q must be at least 1 byte", s)
	}
	return int(n << shift), nil
}

// formatSize writes n exactly, in the largest binary unit that divides it.
func formatSize(n int) string {
	if n <= 0 {
		return strconv.Itoa(n)
	}
	for _, u := range sizeUnits[:4] {
		if n%(1<<u.shift) == 0 {
			return strconv.Itoa(n>>u.shift) + u.suffix
		}
	}
	return strconv.Itoa(n)
}

// humanSize writes n for tables: bytes, or one decimal in a binary unit.
func humanSize(n uint64) string {
	for _, u := range sizeUnits[:4] {
		if n >= 1<<u.shift {
			v := float64(n) / float64(uint64(1)<<u.shift)
			s := strconv.FormatFloat(v, 'f', 1, 64)
			return strings.TrimSuffix(s, ".0") + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

// sizeValue is a SIZE flag; 0 means not set.
type sizeValue struct{ n *int }

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

func (v sizeValue) String() string {
	if v.n == nil || *v.n == 0 {
		return ""
	}
	return formatSize(*v.n)
}

func (v sizeValue) Type() string { return "SIZE" }

// enumValue is a flag with a fixed set of values.
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
	return fmt.Errorf("%q is not one of %s", s, strings.Join(v.allowed, ", "))
}

func (v enumValue) String() string {
	if v.s == nil {
		return ""
	}
	return *v.s
}

func (v enumValue) Type() string { return strings.Join(v.allowed, "|") }

// modeValue is an OCTAL permission flag (0..0777).
type modeValue struct{ m *uint32 }

func (v modeValue) Set(s string) error {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return fmt.Errorf("%q is not an octal file mode from 0 to 0777", s)
	}
	if m == 0 {
		return fmt.Errorf("mode %q admits nobody", s)
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
