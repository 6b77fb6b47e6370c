package cclient

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
)

// TestToolConventions: shmbus-c's send and recv keep the shmbus command's
// conventions: help, exit statuses (2 for usage and bad names, 3 for a
// timeout, 130 for an interrupt), Go-style durations, and recv -n 0 that
// receives until the timeout or an interrupt, not just what is there.
func TestToolConventions(t *testing.T) {
	needC(t)
	env := baseEnv()
	b, name := newBus(t, shmbus.Options{Priorities: 2})

	out, errOut, code := runC(t, env, nil, cBin, "--help")
	if code != 0 || !strings.Contains(out, "recv BUS [-n N] [--timeout DUR]") || errOut != "" {
		t.Errorf("--help: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out2, _, code := runC(t, env, nil, cBin, "help"); code != 0 || out2 != out {
		t.Errorf("help: exit %d, %q; want the text of --help", code, out2)
	}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{}, 2, "missing command"},
		{[]string{"recv", "bad..name"}, 2, "bad bus name"},
		{[]string{"send", ".hidden", "x"}, 2, "bad bus name"},
		{[]string{"send", name, "-p", "abc", "x"}, 2, `invalid priority "abc": not a number`},
		{[]string{"send", name, "-p", "64", "x"}, 2, `invalid priority "64": want 0 to 63`},
		{[]string{"send", name, "-p", "2", "x"}, 1, "priority out of range: 2, the bus has 2 priorities (0..1)"},
		{[]string{"recv", name, "--timeout", "soon"}, 2, `invalid duration "soon"`},
		{[]string{"recv", name, "-n", "-1"}, 2, `invalid count "-1"`},
		{[]string{"recv", name, "--timeout", "200ms"}, 3, `recv from bus "` + name + `": timed out after 200ms: received 0 of 1 message(s)`},
		{[]string{"recv", name, "--timeout", "0.2"}, 3, "timed out after 0.2"},
	} {
		_, errOut, code := runC(t, env, nil, cBin, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.stderr) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and one line with %q", tc.args, code, errOut, tc.code, tc.stderr)
		}
	}

	// -n 0 with a timeout: everything that comes until then, also what is
	// sent after recv started; then exit 0.
	if _, errOut, code := runC(t, env, nil, cBin, "send", name, "-p", "1", "one", "two"); code != 0 {
		t.Fatalf("send: exit %d, %s", code, errOut)
	}
	rx := startC(t, cBin, "recv", name, "-n", "0", "--timeout", "3s")
	waitConsumer(t, b)
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.TrySend([]byte("late"), 0); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if out := rx.wait(t, 30*time.Second); out != "one\ntwo\nlate\n" {
		t.Errorf("recv -n 0 --timeout 3s: %q, want one, two and late", out)
	}

	// -n 0 without a timeout: until interrupted, then exit 130 after
	// writing what it took.
	if _, errOut, code := runC(t, env, nil, cBin, "send", name, "three"); code != 0 {
		t.Fatalf("send: exit %d, %s", code, errOut)
	}
	rx = startC(t, cBin, "recv", name, "-n", "0")
	waitDrained(t, b) // recv took "three" (and catches SIGINT since before it attached)
	rx.Process.Signal(unix.SIGINT)
	<-rx.done
	var ee *exec.ExitError
	if !errors.As(rx.err, &ee) || ee.ExitCode() != 130 || rx.out.String() != "three\n" ||
		!strings.Contains(rx.errb.String(), "interrupted: received 1 message(s)") {
		t.Errorf("recv -n 0, SIGINT: %v, stdout %q, stderr %q; want exit 130 after three", rx.err, rx.out.String(), rx.errb.String())
	}
}

// waitDrained waits until no lane of b holds a record: the consumer took
// everything.
func waitDrained(t *testing.T, b *shmbus.Bus) {
	t.Helper()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		st, err := b.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Depth() == 0 {
			return
		}
		time.Sleep(wait)
	}
}

// waitConsumer waits until a consumer is attached to b.
func waitConsumer(t *testing.T, b *shmbus.Bus) {
	t.Helper()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		st, err := b.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.Role == "consumer" && p.Alive {
				return
			}
		}
		time.Sleep(wait)
	}
}
