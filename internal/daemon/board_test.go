//go:build linux

package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

func init() {
	roles["board-writer"] = roleBoardWriter
	roles["board-other-user"] = roleBoardOtherUser
}

// roleBoardWriter maps board DAEMON_BOARD in DAEMON_DIR and puts
// DAEMON_COUNT values "v1", "v2", ... under key "k", each once the line
// "next" arrives on stdin (so that the test decides the pace).
func roleBoardWriter() error {
	b, err := shmbus.OpenBoard(os.Getenv("DAEMON_BOARD"), &shmbus.OpenOptions{Dir: os.Getenv("DAEMON_DIR")})
	if err != nil {
		return err
	}
	defer b.Close()
	n, _ := strconv.Atoi(os.Getenv("DAEMON_COUNT"))
	line := make([]byte, 5)
	for i := 1; i <= n; i++ {
		if _, err := os.Stdin.Read(line); err != nil {
			return err
		}
		rev, err := b.Put("k", []byte("v"+strconv.Itoa(i)))
		if err != nil {
			return err
		}
		if _, err := fmt.Printf("%d\n", rev); err != nil {
			return err
		}
	}
	return nil
}

// roleBoardOtherUser runs as another user: it tries BOARD_GET, BOARD_WATCH
// (with a short timeout), BOARD_PUT, BOARD_CAS and BOARD_DELETE on
// DAEMON_BOARD and prints each result's code.
func roleBoardOtherUser() error {
	c, err := Dial(os.Getenv("DAEMON_SOCKET"), "other")
	if err != nil {
		return err
	}
	name := os.Getenv("DAEMON_BOARD")
	code := func(err error) string {
		var de *Error
		if errors.As(err, &de) {
			return de.Code.String()
		}
		if err != nil {
			return err.Error()
		}
		return "OK"
	}
	_, _, e1 := c.BoardGet(name, "k")
	_, e2 := c.BoardWatch(name, "k", 1<<40, 10*time.Millisecond)
	_, e3 := c.BoardPut(name, "other", []byte("x"))
	_, e4 := c.BoardCAS(name, "other", 0, []byte("y"))
	_, e5 := c.BoardDelete(name, "other")
	_, err = os.Stdout.WriteString(strings.Join([]string{code(e1), code(e2), code(e3), code(e4), code(e5)}, " ") + "\n")
	return err
}

func createBoard(t *testing.T, d *testDaemon, name string, opts shmbus.BoardOptions) *shmbus.Board {
	t.Helper()
	opts.Dir = d.dir
	b, err := shmbus.CreateBoard(name, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Remove() })
	return b
}

func TestBoardThroughSocket(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	b := createBoard(t, d, "cfg", shmbus.BoardOptions{Keys: 2, MaxValue: 16})

	rev, err := a.BoardPut("cfg", "leader", []byte("node-1"))
	if err != nil {
		t.Fatal(err)
	}
	// What the socket wrote, the mapping reads, and the other way round.
	if v, r, err := b.Get("leader", nil); err != nil || string(v) != "node-1" || r != rev {
		t.Fatalf("mapped get: %q rev %d, %v; want node-1 rev %d", v, r, err, rev)
	}
	mrev, err := b.Put("leader", []byte("node-2"))
	if err != nil {
		t.Fatal(err)
	}
	if v, r, err := a.BoardGet("cfg", "leader"); err != nil || string(v) != "node-2" || r != mrev || r <= rev {
		t.Fatalf("socket get: %q rev %d, %v; want node-2 rev %d", v, r, err, mrev)
	}
	if _, err := a.BoardCAS("cfg", "leader", rev, []byte("stale")); code(err) != CodeRevision {
		t.Errorf("cas with an old revision: %v, want REVISION", err)
	}
	crev, err := a.BoardCAS("cfg", "leader", mrev, []byte("node-3"))
	if err != nil || crev <= mrev {
		t.Fatalf("cas with the current revision: rev %d, %v", crev, err)
	}
	if _, err := a.BoardCAS("cfg", "fresh", 0, []byte("")); err != nil {
		t.Errorf("cas of a new key with revision 0: %v", err)
	}
	if v, _, err := a.BoardGet("cfg", "fresh"); err != nil || len(v) != 0 {
		t.Errorf("get of an empty value: %q, %v", v, err)
	}
	drev, err := a.BoardDelete("cfg", "leader")
	if err != nil || drev <= crev {
		t.Fatalf("delete: rev %d, %v", drev, err)
	}
	if _, _, err := b.Get("leader", nil); !errors.Is(err, shmbus.ErrNotFound) {
		t.Errorf("mapped get after delete: %v, want ErrNotFound", err)
	}
	for _, tc := range []struct {
		what string
		err  error
		want Code
	}{
		{"get of a deleted key", second(a.BoardGet("cfg", "leader")), CodeNoKey},
		{"get of a key never written", second(a.BoardGet("cfg", "never")), CodeNoKey},
		{"delete of a deleted key", first(a.BoardDelete("cfg", "leader")), CodeNoKey},
		{"get of an empty key", second(a.BoardGet("cfg", "")), CodeBadKey},
		{"put of a 256-byte key", first(a.BoardPut("cfg", strings.Repeat("k", 256), nil)), CodeBadKey},
		{"put over max_value", first(a.BoardPut("cfg", "fresh", make([]byte, 17))), CodeTooLarge},
		{"put of a third key on a board of two", first(a.BoardPut("cfg", "third", []byte("x"))), CodeFull},
		{"get on a missing board", second(a.BoardGet("nosuch", "k")), CodeNotFound},
		{"put on a bad board name", first(a.BoardPut("../etc", "k", nil)), CodeBadName},
		{"watch of a bad key", firstE(a.BoardWatch("cfg", "", 0, time.Millisecond)), CodeBadKey},
	} {
		if code(tc.err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.what, tc.err, tc.want)
		}
	}
	// A value of the board's largest size goes both ways whole.
	big := bytes.Repeat([]byte{0xA5}, 16)
	if _, err := a.BoardPut("cfg", "fresh", big); err != nil {
		t.Fatal(err)
	}
	if v, _, err := a.BoardGet("cfg", "fresh"); err != nil || !bytes.Equal(v, big) {
		t.Errorf("get of a max_value value: %x, %v", v, err)
	}
}

func first[T any](_ T, err error) error          { return err }
func second[T, U any](_ T, _ U, err error) error { return err }
func firstE(_ BoardEntry, err error) error       { return err }

// TestBoardWatchThroughSocket watches a key that another process writes
// through its own mapping, one value at a time.
func TestBoardWatchThroughSocket(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	createBoard(t, d, "watched", shmbus.BoardOptions{})
	const n = 5
	cmd := child(t, "board-writer", "DAEMON_BOARD=watched", "DAEMON_DIR="+d.dir, "DAEMON_COUNT="+strconv.Itoa(n))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BoardWatch("watched", "k", 0, 20*time.Millisecond); code(err) != CodeTimeout {
		t.Fatalf("watch of a key nobody writes: %v, want TIMEOUT", err)
	}
	var after uint64
	revs := make([]byte, 64)
	for i := 1; i <= n; i++ {
		// The writer is told to write while the watch waits: the wait
		// is what returns the value.
		type result struct {
			e   BoardEntry
			err error
		}
		done := make(chan result, 1)
		go func() {
			e, err := a.BoardWatch("watched", "k", after, 0)
			done <- result{e, err}
		}()
		if _, err := in.Write([]byte("next\n")); err != nil {
			t.Fatal(err)
		}
		k, err := out.Read(revs)
		if err != nil {
			t.Fatal(err)
		}
		wrote, _ := strconv.ParseUint(strings.TrimSpace(string(revs[:k])), 10, 64)
		r := <-done
		if r.err != nil {
			t.Fatalf("watch %d: %v", i, r.err)
		}
		if want := "v" + strconv.Itoa(i); string(r.e.Value) != want || r.e.Revision != wrote || r.e.Deleted {
			t.Fatalf("watch %d: %q rev %d deleted %v; want %q rev %d", i, r.e.Value, r.e.Revision, r.e.Deleted, want, wrote)
		}
		after = r.e.Revision
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// A deletion wakes a watcher too, with a tombstone.
	done := make(chan error, 1)
	go func() {
		e, err := a.BoardWatch("watched", "k", after, 0)
		if err == nil && (!e.Deleted || e.Revision <= after || len(e.Value) != 0) {
			err = fmt.Errorf("entry %+v, want a tombstone past %d", e, after)
		}
		done <- err
	}()
	b := d.dial(t)
	if _, err := b.BoardDelete("watched", "k"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("watch of a deletion: %v", err)
	}
}

// TestBoardWatchEndsWithConnection: a client that goes away while its
// WATCH waits ends the wait, and what was reserved for the reply is given
// back.
func TestBoardWatchEndsWithConnection(t *testing.T) {
	d := startDaemon(t)
	// Values larger than a connection's own buffer: the reply is reserved
	// from the budget for the wait.
	createBoard(t, d, "large", shmbus.BoardOptions{MaxValue: 256 << 10})
	a := d.dial(t)
	go a.BoardWatch("large", "k", 0, 0)
	waitFor(t, "the watch to reserve its reply", func() bool { return d.srv.mem.used.Load() >= 256<<10 })
	a.Conn().Close() // the watching goroutine holds the client

	waitFor(t, "the budget to be given back", func() bool { return d.srv.mem.used.Load() == 0 })
}

// TestBoardBudget: GET and WATCH of a board whose values could be larger
// than one request may hold are refused; smaller ones come whole.
func TestBoardBudget(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.MaxMemory = 1 << 20 })
	a := d.dial(t)
	b := createBoard(t, d, "huge", shmbus.BoardOptions{MaxValue: 1 << 20})
	if _, err := b.Put("k", []byte("small")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.BoardGet("huge", "k"); code(err) != CodeTooLarge {
		t.Errorf("get on a board of 1 MiB values, budget 1 MiB: %v, want TOO_LARGE", err)
	}
	if _, err := a.BoardWatch("huge", "k", 0, 0); code(err) != CodeTooLarge {
		t.Errorf("watch on a board of 1 MiB values, budget 1 MiB: %v, want TOO_LARGE", err)
	}
	createBoard(t, d, "half", shmbus.BoardOptions{MaxValue: 512 << 10})
	v := bytes.Repeat([]byte("0123456789abcdef"), 32<<10)
	if _, err := a.BoardPut("half", "k", v); err != nil {
		t.Fatal(err)
	}
	if got, _, err := a.BoardGet("half", "k"); err != nil || !bytes.Equal(got, v) {
		t.Errorf("get of a 512 KiB value: %d bytes, %v", len(got), err)
	}
	waitFor(t, "the budget to be given back", func() bool { return d.srv.mem.used.Load() <= smallMessage+5 })
}

func TestBoardPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	d := startDaemon(t)
	exe := copyExecutable(t)
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{0o600, "PERMISSION PERMISSION PERMISSION PERMISSION PERMISSION"},
		// TIMEOUT and NO_KEY are past the permission check.
		{0o604, "OK TIMEOUT PERMISSION PERMISSION PERMISSION"},
		{0o606, "OK TIMEOUT OK REVISION OK"},
	} {
		name := "perm" + strconv.FormatUint(uint64(tc.mode), 8)
		b := createBoard(t, d, name, shmbus.BoardOptions{Mode: tc.mode})
		if _, err := b.Put("k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		cmd := child(t, "board-other-user", "DAEMON_SOCKET="+d.socket, "DAEMON_BOARD="+name)
		cmd.Path, cmd.Args[0] = exe, exe
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mode %#o: client as uid 65534: %v", tc.mode, err)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("mode %#o: uid 65534 got get, watch, put, cas, delete = %s; want %s", tc.mode, got, tc.want)
		}
	}
}

func TestBoardMetrics(t *testing.T) {
	d := startDaemon(t)
	scrape := func() string {
		rec := httptest.NewRecorder()
		d.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	a := d.dial(t)
	// A board the daemon has not been asked about yet is reported too.
	b := createBoard(t, d, "metered", shmbus.BoardOptions{Keys: 8})
	body := scrape()
	for _, w := range []string{
		`shmbus_board_puts_total{board="metered"} 0`,
		`shmbus_board_conflicts_total{board="metered"} 0`,
		`shmbus_board_cells{board="metered"} 8`,
		`shmbus_daemon_board_watches_total{board="metered"} 0`,
	} {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("metrics lack %s", w)
		}
	}
	// Writes of the mapping process and of the socket count alike.
	rev, err := b.Put("x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.BoardPut("metered", "y", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CompareAndPut("x", rev+100, []byte("3")); !errors.Is(err, shmbus.ErrRevision) {
		t.Fatalf("mapped cas: %v, want ErrRevision", err)
	}
	if _, err := a.BoardCAS("metered", "x", 0, []byte("4")); code(err) != CodeRevision {
		t.Fatalf("socket cas: %v, want REVISION", err)
	}
	if _, err := a.BoardCAS("metered", "x", rev, []byte("5")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BoardDelete("metered", "y"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BoardWatch("metered", "x", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BoardWatch("metered", "x", 1<<40, time.Millisecond); code(err) != CodeTimeout {
		t.Fatal(err)
	}
	body = scrape()
	for _, w := range []string{
		`shmbus_board_puts_total{board="metered"} 4`,
		`shmbus_board_conflicts_total{board="metered"} 2`,
		`shmbus_board_keys{board="metered"} 2`,
		`shmbus_daemon_board_watches_total{board="metered"} 2`,
		`shmbus_daemon_requests_total{result="REVISION",type="board_cas"} 1`,
		`shmbus_daemon_requests_total{result="TIMEOUT",type="board_watch"} 1`,
	} {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("metrics lack %s", w)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}
