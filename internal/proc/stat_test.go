package proc

import (
	"bytes"
	"fmt"
	"testing"
)

const sampleStat = "4242 (my prog) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 987654 1234567 89 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

// statLine builds a plausible stat line with the given comm, state and starttime.
func statLine(pid int, comm []byte, state byte, start uint64) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d (", pid)
	b.Write(comm)
	fmt.Fprintf(&b, ") %c 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 %d 1234567 89 18446744073709551615\n", state, start)
	return b.Bytes()
}

func TestParseStat(t *testing.T) {
	st, err := parseStat([]byte(sampleStat))
	if err != nil {
		t.Fatal(err)
	}
	if st.pid != 4242 || string(st.comm) != "my prog" || st.state != 'S' || st.start != 987654 {
		t.Fatalf("parseStat = %+v", st)
	}
	tricky := []byte("7 (a) Z 1 (b)) ) R 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 55 1234567 89\n")
	st, err = parseStat(tricky)
	if err != nil {
		t.Fatal(err)
	}
	if string(st.comm) != "a) Z 1 (b)) " || st.state != 'R' || st.start != 55 {
		t.Fatalf("parseStat(tricky) = %+v comm %q", st, st.comm)
	}
	for _, bad := range []string{
		"",
		"42",
		"42 (x",
		"x) (y",
		"abc (x) S 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 5 6 7",
		"-3 (x) S 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 5 6 7",
		"42 (x) S 1 2 3",
		"42 (x) SS 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 5 6 7",
		"42 (x) S 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 -5 6 7",
		"42 (x) S 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 99999999999999999999 6 7",
	} {
		if st, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) = %+v, want error", bad, st)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(sampleStat), uint64(0))
	f.Add([]byte("1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 2 3 4\n"), uint64(1))
	f.Add([]byte("9 (x) y) z) Z 1 2 3 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 5"), uint64(1<<63))
	f.Add([]byte("12 ()"), uint64(42))
	f.Add([]byte(""), uint64(7))
	f.Fuzz(func(t *testing.T, data []byte, start uint64) {
		// Arbitrary content must never panic, and success must be self-consistent.
		if st, err := parseStat(data); err == nil {
			if st.pid <= 0 || st.state == ' ' || !bytes.Contains(data, st.comm) {
				t.Fatalf("parseStat(%q) = %+v", data, st)
			}
		}
		// data used as comm (which may hold anything, ')' included) must round-trip.
		line := statLine(31337, data, 'R', start)
		st, err := parseStat(line)
		if err != nil {
			t.Fatalf("parseStat(%q): %v", line, err)
		}
		if st.pid != 31337 || !bytes.Equal(st.comm, data) || st.state != 'R' || st.start != start {
			t.Fatalf("parseStat(%q) = %+v comm %q", line, st, st.comm)
		}
	})
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Unknown: "unknown", Alive: "alive", Dead: "dead", State(9): "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
