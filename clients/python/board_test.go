package pyclient_test

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

// Boards through the Python client: shmbus_cli.py's board commands against
// the real daemon, with this test process reading and writing the same
// board through its own mapping.

func createBoard(t *testing.T, d *daemon, name string, opts shmbus.BoardOptions) *shmbus.Board {
	t.Helper()
	opts.Dir = d.dir
	b, err := shmbus.CreateBoard(name, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Remove() }) // before the daemon's directory is checked
	return b
}

// revOf parses the revision a put, cas or rm printed.
func revOf(t *testing.T, out string) uint64 {
	t.Helper()
	rev, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("revision %q: %v", out, err)
	}
	return rev
}

func TestPythonBoard(t *testing.T) {
	d := startDaemon(t)
	b := createBoard(t, d, "pyboard", shmbus.BoardOptions{Keys: 4, MaxValue: 64})

	// put from Python, read by the mapping.
	rev := revOf(t, d.mustPy(t, "board", "put", "pyboard", "leader", "node-1"))
	if v, r, err := b.Get("leader", nil); err != nil || string(v) != "node-1" || r != rev {
		t.Fatalf("mapped get after Python's put: %q rev %d, %v; want node-1 rev %d", v, r, err, rev)
	}
	// put by the mapping, read from Python.
	rev2, err := b.Put("leader", []byte("node-2"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Key, Value string
		Rev        uint64
		Size       int
	}
	decodeJSON(t, d.mustPy(t, "board", "get", "pyboard", "leader", "--json"), &e)
	if e.Key != "leader" || e.Value != "node-2" || e.Rev != rev2 || e.Size != 6 {
		t.Errorf("get --json: %+v, want node-2 at rev %d", e, rev2)
	}
	if out := d.mustPy(t, "board", "get", "pyboard", "leader", "--rev"); out != strconv.FormatUint(rev2, 10)+" node-2\n" {
		t.Errorf("get --rev: %q", out)
	}
	// cas: the stale revision is refused and writes nothing, the current
	// one writes.
	r := d.py("board", "cas", "pyboard", "leader", strconv.FormatUint(rev, 10), "stale")
	if r.code != 1 || !strings.Contains(r.stderr, ": RevisionConflict: ") {
		t.Errorf("cas with a stale revision: exit %d, stderr %q; want 1, RevisionConflict", r.code, r.stderr)
	}
	rev3 := revOf(t, d.mustPy(t, "board", "cas", "pyboard", "leader", strconv.FormatUint(rev2, 10), "node-3"))
	if v, r, err := b.Get("leader", nil); err != nil || string(v) != "node-3" || r != rev3 || rev3 <= rev2 {
		t.Errorf("mapped get after cas: %q rev %d, %v; want node-3 rev %d", v, r, err, rev3)
	}
	// A value that is not UTF-8 comes as base64 in JSON, and whole as text.
	if _, err := b.Put("bin", []byte{0xff, 0, 0xfe}); err != nil {
		t.Fatal(err)
	}
	var be struct {
		ValueBase64 string `json:"value_base64"`
	}
	decodeJSON(t, d.mustPy(t, "board", "get", "pyboard", "bin", "--json"), &be)
	if be.ValueBase64 != "/wD+" {
		t.Errorf("get --json of a binary value: value_base64 %q, want /wD+", be.ValueBase64)
	}
	// rm from Python; the mapping sees the key gone.
	drev := revOf(t, d.mustPy(t, "board", "rm", "pyboard", "leader"))
	if _, r, err := b.Get("leader", nil); !errors.Is(err, shmbus.ErrNotFound) || r != drev {
		t.Errorf("mapped get after rm: rev %d, %v; want ErrNotFound at rev %d", r, err, drev)
	}

	for _, tt := range []struct {
		name  string
		args  []string
		code  int
		class string
	}{
		{"get deleted", []string{"board", "get", "pyboard", "leader"}, 1, "NoKey"},
		{"rm deleted", []string{"board", "rm", "pyboard", "leader"}, 1, "NoKey"},
		{"get never written", []string{"board", "get", "pyboard", "never"}, 1, "NoKey"},
		{"no such board", []string{"board", "get", "nosuch", "k"}, 1, "NotFound"},
		{"bad board name", []string{"board", "get", "bad/name", "k"}, 2, "BadName"},
		{"empty key", []string{"board", "get", "pyboard", ""}, 2, "BadKey"},
		{"long key", []string{"board", "put", "pyboard", strings.Repeat("k", 256), "v"}, 2, "BadKey"},
		{"too large", []string{"board", "put", "pyboard", "big", strings.Repeat("v", 65)}, 1, "TooLarge"},
		{"watch timeout", []string{"board", "watch", "pyboard", "bin", "--after", "1000000", "--timeout", "100ms"}, 3, "Timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := d.py(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, ": "+tt.class+": ") {
				t.Fatalf("exit %d, stderr %q; want exit %d naming %s", r.code, r.stderr, tt.code, tt.class)
			}
		})
	}
	// A board of four keys holds no fifth ("leader" keeps its cell).
	d.mustPy(t, "board", "put", "pyboard", "third", "3")
	d.mustPy(t, "board", "put", "pyboard", "fourth", "4")
	if r := d.py("board", "put", "pyboard", "fifth", "5"); r.code != 1 || !strings.Contains(r.stderr, ": Full: ") {
		t.Errorf("put of a fifth key: exit %d, stderr %q; want 1, Full", r.code, r.stderr)
	}
}

// TestPythonBoardWatch: a Python watcher prints each value this process
// writes through its mapping, and the deletion, one line each.
func TestPythonBoardWatch(t *testing.T) {
	d := startDaemon(t)
	b := createBoard(t, d, "pywatch", shmbus.BoardOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := d.pyCommand(ctx, "board", "watch", "pywatch", "k", "-n", "3", "--json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("watch ended early: %v\n%s", lines.Err(), stderr.String())
		}
		var m map[string]any
		decodeJSON(t, lines.Text(), &m)
		return m
	}
	// Each write waits for the line of the one before: the watcher sees
	// every revision when it keeps up.
	for _, v := range []string{"one", "two"} {
		rev, err := b.Put("k", []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		if m := next(); m["value"] != v || m["rev"] != float64(rev) || m["deleted"] != nil {
			t.Fatalf("watch line %v, want %s at rev %d", m, v, rev)
		}
	}
	rev, err := b.Delete("k")
	if err != nil {
		t.Fatal(err)
	}
	if m := next(); m["deleted"] != true || m["rev"] != float64(rev) || m["value"] != nil {
		t.Fatalf("watch line %v, want the deletion at rev %d", m, rev)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch -n 3: %v\n%s", err, stderr.String())
	}
}
