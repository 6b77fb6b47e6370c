package shmbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/internal/failpoint"
	"github.com/shmbus/shmbus/internal/testutil"
)

var badNameByte = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func init() {
	roles["board-writer"] = roleBoardWriter
	roles["board-reader"] = roleBoardReader
	roles["board-counter"] = roleBoardCounter
	roles["board-victim"] = roleBoardVictim
	roles["board-steady"] = roleBoardSteady
	roles["board-ringer"] = roleBoardRinger
}

var boardSeq int

// testBoardName is a board name unique to this test process.
func testBoardName(t testing.TB) string {
	boardSeq++
	return fmt.Sprintf("b%d-%d-%s", os.Getpid(), boardSeq, badNameByte.ReplaceAllString(t.Name(), "-"))
}

func newTestBoard(t testing.TB, opts *BoardOptions) *Board {
	t.Helper()
	b, err := CreateBoard(testBoardName(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Remove(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func TestBoardBasics(t *testing.T) {
	for _, wake := range []WakeMode{WakeFutex, WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			b := newTestBoard(t, &BoardOptions{Keys: 8, MaxValue: 64, Wake: wake})
			if _, _, err := b.Get("leader", nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get of a new key: %v, want ErrNotFound", err)
			}
			r1, err := b.Put("leader", []byte("pid 1"))
			if err != nil {
				t.Fatal(err)
			}
			v, rev, err := b.Get("leader", make([]byte, 0, 64))
			if err != nil || string(v) != "pid 1" || rev != r1 {
				t.Fatalf("get: %q %d %v, want %q %d", v, rev, err, "pid 1", r1)
			}
			if _, err := b.CompareAndPut("leader", 0, []byte("x")); !errors.Is(err, ErrRevision) {
				t.Fatalf("CAS rev 0 on a live key: %v, want ErrRevision", err)
			}
			if _, err := b.CompareAndPut("leader", r1+100, []byte("x")); !errors.Is(err, ErrRevision) {
				t.Fatalf("CAS wrong rev: %v, want ErrRevision", err)
			}
			r2, err := b.CompareAndPut("leader", r1, []byte("pid 2"))
			if err != nil || r2 <= r1 {
				t.Fatalf("CAS: %d %v, want a revision past %d", r2, err, r1)
			}
			r3, err := b.Delete("leader")
			if err != nil || r3 <= r2 {
				t.Fatalf("delete: %d %v", r3, err)
			}
			if _, rev, err := b.Get("leader", nil); !errors.Is(err, ErrNotFound) || rev != r3 {
				t.Fatalf("get deleted: rev %d %v, want ErrNotFound at %d", rev, err, r3)
			}
			if _, err := b.Delete("leader"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := b.CompareAndPut("leader", 0, []byte("pid 3")); err != nil {
				t.Fatalf("CAS 0 on a deleted key: %v", err)
			}
			if _, err := b.Put("big", make([]byte, 65)); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("65 bytes into a 64-byte board: %v", err)
			}
			if _, err := b.Put("", nil); !errors.Is(err, ErrBadKey) {
				t.Fatalf("empty key: %v", err)
			}
			if _, err := b.Put(strings.Repeat("k", 256), nil); !errors.Is(err, ErrBadKey) {
				t.Fatalf("256-byte key: %v", err)
			}
			if _, err := b.Put(strings.Repeat("k", 255), []byte{}); err != nil {
				t.Fatalf("255-byte key, empty value: %v", err)
			}
			for i := 0; i < 6; i++ {
				if _, err := b.Put(fmt.Sprintf("k%d", i), []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := b.Put("one-too-many", nil); !errors.Is(err, ErrFull) {
				t.Fatalf("ninth key of 8: %v, want ErrFull", err)
			}
			keys, err := b.Keys()
			if err != nil || len(keys) != 8 {
				t.Fatalf("keys: %v %v, want 8", keys, err)
			}
			if err := b.Check(); err != nil {
				t.Fatal(err)
			}
			// Another attachment sees the same values.
			o, err := OpenBoard(b.Name(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			if v, _, err := o.Get("leader", nil); err != nil || string(v) != "pid 3" {
				t.Fatalf("other attachment: %q %v", v, err)
			}
			if err := CheckBoard("", b.Name()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBoardNotABus(t *testing.T) {
	b := newTestBoard(t, nil)
	if _, err := OpenFile("x", b.File(), nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "a board, not a bus") {
		t.Fatalf("a board opened as a bus: %v", err)
	}
	bus, err := Create(testBoardName(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Remove()
	if _, err := OpenBoardFile("x", bus.File(), nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "a bus, not a board") {
		t.Fatalf("a bus opened as a board: %v", err)
	}
	if _, err := OpenBoard("no-such-board", nil); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing board: %v", err)
	}
	if _, err := CreateBoard(b.Name(), nil); !errors.Is(err, ErrExist) {
		t.Fatalf("second create: %v", err)
	}
	names, err := ListBoards("")
	if err != nil || !contains(names, b.Name()) {
		t.Fatalf("ListBoards: %v %v", names, err)
	}
	if buses, _ := List(""); contains(buses, b.Name()) {
		t.Fatalf("List of buses shows board %q", b.Name())
	}
	// A board file with another version.
	name := testBoardName(t)
	c, err := CreateBoard(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	seg := c.m.Bytes()
	binary.LittleEndian.PutUint32(seg[8:], 9)
	c.Close()
	defer RemoveBoard("", name)
	if _, err := OpenBoard(name, nil); !errors.Is(err, ErrVersion) {
		t.Fatalf("version 9 board: %v, want ErrVersion", err)
	}
}

func TestBoardMemfd(t *testing.T) {
	b := newTestBoard(t, &BoardOptions{Memfd: true})
	if _, err := b.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	o, err := OpenBoardFile(b.Name(), b.File(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if v, _, err := o.Get("k", nil); err != nil || string(v) != "v" {
		t.Fatalf("%q %v", v, err)
	}
}

func TestBoardClosed(t *testing.T) {
	b := newTestBoard(t, nil)
	o, err := OpenBoard(b.Name(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := o.Watch(context.Background(), "k", 0); done <- err }()
	time.Sleep(20 * time.Millisecond)
	o.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("watch across Close: %v, want ErrClosed", err)
	}
	if _, _, err := o.Get("k", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after Close: %v", err)
	}
}

// A board file truncated under its mappings: every call that touches the
// cells fails with ErrTruncated (and ErrCorrupt), none dies of SIGBUS;
// Remove still deletes the file.
func TestBoardTruncated(t *testing.T) {
	b, err := CreateBoard(testBoardName(t), &BoardOptions{Keys: 64, MaxValue: 64})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(b.Path(), 4096); err != nil { // the header page only
		t.Fatal(err)
	}
	if _, _, err := b.Get("k", make([]byte, 64)); !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get from a truncated board: %v", err)
	}
	if _, err := b.Put("k", []byte("w")); !errors.Is(err, ErrTruncated) {
		t.Fatalf("put to a truncated board: %v", err)
	}
	if _, err := b.CompareAndPut("k", 1, []byte("w")); !errors.Is(err, ErrTruncated) {
		t.Fatalf("compare-and-put to a truncated board: %v", err)
	}
	if err := b.Check(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("check of a truncated board: %v", err)
	}
	if err := b.Remove(); err != nil {
		t.Fatalf("remove truncated board: %v", err)
	}
	if _, err := os.Stat(b.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("board file still there: %v", err)
	}
}

// Close while other goroutines Get and Put as fast as they can: each call
// either completes or fails with ErrClosed, none touches the mapping after
// it is gone (that would be a fault: ErrTruncated, or a crash).
func TestBoardCloseUnderCalls(t *testing.T) {
	for round := 0; round < 20; round++ {
		b := newTestBoard(t, &BoardOptions{Keys: 16, MaxValue: 64})
		o, err := OpenBoard(b.Name(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var started sync.WaitGroup
		errs := make(chan error, 4)
		for g := 0; g < 4; g++ {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				buf, v := make([]byte, 64), make([]byte, 64)
				for i := 0; ; i++ {
					var err error
					if g%2 == 0 {
						_, err = o.Put("k", v)
					} else {
						_, _, err = o.Get("k", buf)
						if errors.Is(err, ErrNotFound) {
							err = nil
						}
					}
					if i == 100 {
						started.Done()
					}
					if err != nil {
						if i < 100 {
							started.Done()
						}
						if !errors.Is(err, ErrClosed) {
							errs <- err
						}
						return
					}
				}
			}()
		}
		started.Wait()
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: a call racing Close: %v, want ErrClosed", round, err)
		}
		if err := b.Check(); err != nil {
			t.Fatal(err)
		}
	}
}

// Torn-read hunt. Writer w puts to key (rev%4) values whose bytes are all
// functions of (w, its sequence number), with a CRC at the end; readers
// check every value they get, and that each key's revision never goes
// back.

const boardHuntKeys = 4

func huntValue(buf []byte, w, seq uint32, max int) []byte {
	n := 9 + int(mix(w, seq)%uint64(max-8))
	v := buf[:n]
	v[0] = byte(w)
	binary.LittleEndian.PutUint32(v[1:], seq)
	x := mix(seq, w)
	for i := 5; i < n-4; i++ {
		v[i] = byte(x >> (8 * (i % 8)))
		if i%8 == 7 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	binary.LittleEndian.PutUint32(v[n-4:], crc32.ChecksumIEEE(v[:n-4]))
	return v
}

func checkHunt(got []byte, max int) error {
	if len(got) < 9 {
		return fmt.Errorf("%d-byte value", len(got))
	}
	w, seq := uint32(got[0]), binary.LittleEndian.Uint32(got[1:])
	want := huntValue(make([]byte, max), w, seq, max)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("torn or mixed value: %d bytes claiming writer %d seq %d (want %d bytes)", len(got), w, seq, len(want))
	}
	return nil
}

func boardDuration() time.Duration {
	if os.Getenv("SHMBUS_LONG") != "" {
		return 30 * time.Second
	}
	if testing.Short() {
		return time.Second
	}
	return 5 * time.Second
}

func roleBoardWriter() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	w := uint32(envInt("WRITER"))
	until := time.Now().Add(time.Duration(envInt("MILLIS")) * time.Millisecond)
	buf := make([]byte, b.MaxValue())
	for seq := uint32(0); time.Now().Before(until); seq++ {
		key := "k" + strconv.Itoa(int(seq%boardHuntKeys))
		if _, err := b.Put(key, huntValue(buf, w, seq, b.MaxValue())); err != nil {
			return err
		}
	}
	return nil
}

func roleBoardReader() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	until := time.Now().Add(time.Duration(envInt("MILLIS")) * time.Millisecond)
	buf := make([]byte, b.MaxValue())
	var last [boardHuntKeys]uint64
	keys := make([]string, boardHuntKeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	reads := 0
	for i := 0; time.Now().Before(until) || reads < 1000; i++ {
		k := i % boardHuntKeys
		v, rev, err := b.Get(keys[k], buf)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := checkHunt(v, b.MaxValue()); err != nil {
			return fmt.Errorf("key %s rev %d: %w", keys[k], rev, err)
		}
		if rev < last[k] {
			return fmt.Errorf("key %s: revision went back from %d to %d", keys[k], last[k], rev)
		}
		last[k] = rev
		reads++
	}
	fmt.Printf("%d\n", reads)
	return nil
}

func TestBoardTornReadHunt(t *testing.T) {
	b := newTestBoard(t, &BoardOptions{Keys: 16, MaxValue: 512})
	d := boardDuration()
	env := []string{"BOARD=" + b.Name(), "MILLIS=" + strconv.Itoa(int(d.Milliseconds()))}
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < 4; i++ {
		c := child(t, "board-writer", append(env, "WRITER="+strconv.Itoa(i))...)
		cmds = append(cmds, c)
	}
	for i := 0; i < 4; i++ {
		c := child(t, "board-reader", env...)
		var out bytes.Buffer
		c.Stdout = &out
		outs = append(outs, &out)
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cmds {
		if err := waitTimeout(c, d+2*time.Minute); err != nil {
			t.Error(err)
		}
	}
	total := 0
	for _, o := range outs {
		n, _ := strconv.Atoi(strings.TrimSpace(o.String()))
		total += n
	}
	s, _ := b.Stats()
	t.Logf("%v: %d puts, %d checked reads", d, s.Puts, total)
	if err := b.Check(); err != nil {
		t.Error(err)
	}
}

// Lost updates: processes increment one counter with CompareAndPut.

// boardIncrements is the 100 000 per process, or 5000 with -short.
func boardIncrements() int {
	if testing.Short() {
		return 5000
	}
	return 100000
}

func roleBoardCounter() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	n := envInt("N")
	buf := make([]byte, 8)
	val := make([]byte, 8)
	for i := 0; i < n; {
		v, rev, err := b.Get("counter", buf)
		var c uint64
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case len(v) != 8:
			return fmt.Errorf("counter is %d bytes", len(v))
		default:
			c = binary.LittleEndian.Uint64(v)
		}
		binary.LittleEndian.PutUint64(val, c+1)
		if _, err := b.CompareAndPut("counter", rev, val); errors.Is(err, ErrRevision) {
			continue
		} else if err != nil {
			return err
		}
		i++
	}
	return nil
}

func TestBoardLostUpdates(t *testing.T) {
	b := newTestBoard(t, &BoardOptions{Keys: 4, MaxValue: 8})
	n := boardIncrements()
	var cmds []*exec.Cmd
	for i := 0; i < 8; i++ {
		c := child(t, "board-counter", "BOARD="+b.Name(), "N="+strconv.Itoa(n))
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for _, c := range cmds {
		if err := waitTimeout(c, 10*time.Minute); err != nil {
			t.Error(err)
		}
	}
	v, _, err := b.Get("counter", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := binary.LittleEndian.Uint64(v)
	s, _ := b.Stats()
	t.Logf("8 x %d increments, %d conflicts", n, s.Conflicts)
	if got != uint64(8*n) {
		t.Fatalf("counter %d, want %d", got, 8*n)
	}
}

// A writer killed in the middle of Put, at a failpoint or at a random
// moment: every key stays readable and writable, and Check is clean.

func roleBoardVictim() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	if name := os.Getenv("POINT"); name != "" {
		p := failpoint.Lookup(name)
		if p == nil {
			return fmt.Errorf("no failpoint %q", name)
		}
		after := envInt("AFTER")
		p.Set(func() {
			if after--; after < 0 {
				unix.Kill(os.Getpid(), unix.SIGKILL)
				select {}
			}
		})
	}
	fmt.Println("ready")
	buf := make([]byte, b.MaxValue())
	if k := os.Getenv("NEWKEY"); k != "" {
		if _, err := b.Put(k, []byte("new")); err != nil {
			return err
		}
	}
	for seq := uint32(0); ; seq++ {
		key := "k" + strconv.Itoa(int(seq%boardHuntKeys))
		if _, err := b.Put(key, huntValue(buf, 9, seq, b.MaxValue())); err != nil {
			return err
		}
	}
}

func TestBoardWriterKilled(t *testing.T) {
	b := newTestBoard(t, &BoardOptions{Keys: 8, MaxValue: 256})
	rounds := 200
	if testing.Short() || raceEnabled {
		rounds = 60
	}
	if os.Getenv("SHMBUS_LONG") != "" {
		rounds = 3000
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	buf := make([]byte, 256)
	for r := 0; r < rounds; r++ {
		env := []string{"BOARD=" + b.Name()}
		point := ""
		if r%2 == 0 {
			p := failpoint.BoardPoints[(r/2)%len(failpoint.BoardPoints)]
			point = p.Name()
			after := rng.IntN(20)
			if p == failpoint.BoardBinding {
				// Dies binding a cell to a new key (the same key every
				// such round: the next victim takes the dead one's lock).
				env, after = append(env, "NEWKEY=fresh"), 0
			}
			env = append(env, "POINT="+point, "AFTER="+strconv.Itoa(after))
		}
		c := child(t, "board-victim", env...)
		var out testutil.SyncBuffer
		c.Stdout = &out
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if point == "" {
			// Kill it at a random moment of its writing.
			for !strings.Contains(out.String(), "ready") {
				time.Sleep(100 * time.Microsecond)
			}
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			c.Process.Signal(unix.SIGKILL)
		}
		err := waitTimeout(c, time.Minute)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
			t.Fatalf("round %d (point %q): victim ended with %v, want SIGKILL", r, point, err)
		}
		// Every key readable (a complete value or none yet) and writable.
		if _, _, err := b.Get("fresh", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d: the key whose binding was cut short: %v, want ErrNotFound", r, err)
		}
		for k := 0; k < boardHuntKeys; k++ {
			key := "k" + strconv.Itoa(k)
			if v, _, err := b.Get(key, buf); err == nil && len(v) > 3 {
				if err := checkHunt(v, 256); err != nil {
					t.Fatalf("round %d (point %q): %s: %v", r, point, key, err)
				}
			} else if !errors.Is(err, ErrNotFound) {
				t.Fatalf("round %d: get %s: %v", r, key, err)
			}
			if _, err := b.Put(key, huntValue(buf, 1, uint32(r), 256)); err != nil {
				t.Fatalf("round %d (point %q): put %s after the kill: %v", r, point, key, err)
			}
		}
		if err := b.Check(); err != nil {
			t.Fatalf("round %d (point %q): %v", r, point, err)
		}
	}
	if _, err := b.Put("fresh", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, _, err := b.Get("fresh", nil); err != nil || string(v) != "v" {
		t.Fatalf("fresh: %q %v", v, err)
	}
	s, _ := b.Stats()
	t.Logf("%d rounds, %d dead writers' locks taken over", rounds, s.Recoveries)
	if s.Recoveries == 0 {
		t.Error("no lock was ever taken from a dead writer: the kills missed every write")
	}
}

// Watch. A writer process puts key "w" with values 1, 2, ... N, either
// waiting for the watcher's acknowledgement (key "ack") after each (slow
// writes: the watcher must see every revision) or as fast as it can (the
// watcher must end with the last value, and every value it sees must be
// newer than the one before).

func roleBoardSteady() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	n, slow := envInt("N"), os.Getenv("SLOW") != ""
	for i := 1; i <= n; i++ {
		if _, err := b.Put("w", []byte(strconv.Itoa(i))); err != nil {
			return err
		}
		if slow {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err := waitValue(ctx, b, "ack", strconv.Itoa(i))
			cancel()
			if err != nil {
				return fmt.Errorf("waiting for ack %d: %w", i, err)
			}
		}
	}
	return nil
}

func waitValue(ctx context.Context, b *Board, key, want string) (uint64, error) {
	var after uint64
	for {
		e, err := b.Watch(ctx, key, after)
		if err != nil {
			return 0, err
		}
		if string(e.Value) == want {
			return e.Rev, nil
		}
		after = e.Rev
	}
}

func TestBoardWatch(t *testing.T) {
	for _, wake := range []WakeMode{WakeFutex, WakeSem} {
		for _, slow := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/slow=%v", wake, slow), func(t *testing.T) {
				b := newTestBoard(t, &BoardOptions{Keys: 4, MaxValue: 16, Wake: wake})
				n := 300
				env := []string{"BOARD=" + b.Name(), "N=" + strconv.Itoa(n)}
				if slow {
					env = append(env, "SLOW=1")
				}
				c := child(t, "board-steady", env...)
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				// No backstop rescue: a watch that slept through a change
				// would take the writer's ack a backstop late; we time
				// every watch and fail one that took a whole backstop
				// when the value was already there.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				var after uint64
				prev := 0
				seen := 0
				for prev < n {
					e, err := b.Watch(ctx, "w", after)
					if err != nil {
						t.Fatalf("after %d: %v", prev, err)
					}
					v, _ := strconv.Atoi(string(e.Value))
					if e.Rev <= after || v <= prev {
						t.Fatalf("watch after rev %d (value %d) returned rev %d value %d", after, prev, e.Rev, v)
					}
					if slow && v != prev+1 {
						t.Fatalf("slow writes: value %d after %d, a revision was missed", v, prev)
					}
					// Latest, never stale: what Get says now is no older.
					if _, rev, err := b.Get("w", nil); err != nil || rev < e.Rev {
						t.Fatalf("get after watch: rev %d %v, watch said %d", rev, err, e.Rev)
					}
					after, prev = e.Rev, v
					seen++
					if slow {
						if _, err := b.Put("ack", []byte(strconv.Itoa(v))); err != nil {
							t.Fatal(err)
						}
					}
				}
				if err := waitTimeout(c, time.Minute); err != nil {
					t.Fatal(err)
				}
				t.Logf("%d writes, %d seen", n, seen)
			})
		}
	}
}

// TestBoardWatchNoSleepThrough: a watcher that never spins and whose
// sleeps have no backstop (an hour) is woken by every put of another
// process that finds it announced. A lost wake-up leaves it asleep, and
// the test fails at its one-minute deadline.
func TestBoardWatchNoSleepThrough(t *testing.T) {
	for _, wake := range []WakeMode{WakeFutex, WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			b := newTestBoard(t, &BoardOptions{Keys: 4, MaxValue: 16, Wake: wake})
			n := 200
			c := child(t, "board-ringer", "BOARD="+b.Name(), "N="+strconv.Itoa(n))
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			w, err := b.WatchKeys(0, "x")
			if err != nil {
				t.Fatal(err)
			}
			w.w.Spin.Min = -1
			w.w.Backstop = time.Hour
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			wakes := 0
			for v := 0; v < n; {
				es, err := w.Next(ctx)
				if err != nil {
					t.Fatalf("after value %d, %d wake-ups: %v (a lost wake-up?)", v, wakes, err)
				}
				wakes++
				for _, e := range es {
					v, _ = strconv.Atoi(string(e.Value))
				}
			}
			if err := waitTimeout(c, time.Minute); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d puts, %d wake-ups", n, wakes)
		})
	}
}

// roleBoardRinger puts x = 1..N, each once the board has an announced
// watcher.
func roleBoardRinger() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	var sleeps uint64
	for i := 1; i <= envInt("N"); i++ {
		// A new sleep, announced: the watcher is asleep or about to be.
		for {
			s, err := b.Stats()
			if err != nil {
				return err
			}
			if s.Sleeps > sleeps && b.b.Doorbell().Sleepers() > 0 {
				sleeps = s.Sleeps
				break
			}
			time.Sleep(20 * time.Microsecond)
		}
		if _, err := b.Put("x", []byte(strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

func TestBoardWatchMany(t *testing.T) {
	b := newTestBoard(t, &BoardOptions{Keys: 32, MaxValue: 16})
	b.Put("cfg/a", []byte("1"))
	w := b.WatchPrefix(0, "cfg/")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	es, err := w.Next(ctx)
	if err != nil || len(es) != 1 || es[0].Key != "cfg/a" {
		t.Fatalf("first Next: %v %v", es, err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		b.Put("other", []byte("x")) // not watched
		b.Put("cfg/b", []byte("2"))
		b.Put("cfg/a", []byte("3"))
		b.Delete("cfg/b")
	}()
	seen := map[string]BoardEntry{}
	for len(seen) < 2 || !seen["cfg/b"].Deleted || string(seen["cfg/a"].Value) != "3" {
		es, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if !strings.HasPrefix(e.Key, "cfg/") {
				t.Fatalf("prefix watch returned %q", e.Key)
			}
			seen[e.Key] = e
		}
	}
	kw, err := b.WatchKeys(b.b.Revision(), "x1", "x2")
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(10 * time.Millisecond); b.Put("x2", []byte("v")) }()
	es, err = kw.Next(ctx)
	if err != nil || len(es) != 1 || es[0].Key != "x2" {
		t.Fatalf("key set Next: %v %v", es, err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); ccancel() }()
	if _, err := kw.Next(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Next: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
