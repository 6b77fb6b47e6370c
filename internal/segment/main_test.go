package segment

import (
	"flag"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// Inputs FuzzOpen finds interesting are mostly whole headers, in which
	// nearly every byte matters; the fuzzing engine's minimizer then spends
	// its default 60s on each (its subset pass is quadratic in the input
	// length), so a short `go test -fuzz=FuzzOpen -fuzztime=15s` would do
	// almost nothing but minimize. Unless the flag is given explicitly, cap
	// minimization at a few seconds.
	const name = "test.fuzzminimizetime"
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if f := flag.Lookup(name); f != nil && !set {
		if err := f.Value.Set("2s"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
