package cclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

func newBoard(t *testing.T, wake shmbus.WakeMode) (*shmbus.Board, string) {
	t.Helper()
	name := fmt.Sprintf("%s.%d", nameRE.ReplaceAllString(t.Name(), "_"), busCount.Add(1))
	b, err := shmbus.CreateBoard(name, &shmbus.BoardOptions{Keys: 16, MaxValue: 64, Wake: wake})
	if err != nil {
		t.Fatal(err)
	}
	if wake == shmbus.WakeSem {
		semMu.Lock()
		semIDs = append(semIDs, int(b.Header().SemID))
		semMu.Unlock()
	}
	t.Cleanup(func() {
		if err := b.Remove(); err != nil {
			t.Errorf("remove board: %v", err)
		}
	})
	return b, name
}

// TestBoardInterop: C writes what Go reads and the reverse, written from
// docs/layout.md section 7; a Go watcher is woken by C's puts; C and Go
// writers of one key never lose the lock or tear a value; Check is clean.
func TestBoardInterop(t *testing.T) {
	needC(t)
	for _, wake := range []shmbus.WakeMode{shmbus.WakeFutex, shmbus.WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			b, name := newBoard(t, wake)
			out, err := exec.Command(cSan, "board-put", name, "leader", "from-c").CombinedOutput()
			if err != nil {
				t.Fatalf("board-put: %v: %s", err, out)
			}
			v, rev, err := b.Get("leader", nil)
			if err != nil || string(v) != "from-c" || strconv.FormatUint(rev, 10) != strings.TrimSpace(string(out)) {
				t.Fatalf("Go get of C's put: %q rev %d %v (C said %s)", v, rev, err, out)
			}
			rev, err = b.Put("leader", []byte("from-go"))
			if err != nil {
				t.Fatal(err)
			}
			out, err = exec.Command(cSan, "board-get", name, "leader").CombinedOutput()
			if want := fmt.Sprintf("%d from-go\n", rev); err != nil || string(out) != want {
				t.Fatalf("C get of Go's put: %q %v, want %q", out, err, want)
			}
			if _, err := b.Delete("leader"); err != nil {
				t.Fatal(err)
			}
			if err := exec.Command(cSan, "board-get", name, "leader").Run(); err == nil {
				t.Fatal("C get of a deleted key succeeded")
			}

			// A Go watcher asleep is woken by a C put.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			w, _ := b.WatchKeys(0, "w")
			done := make(chan error, 1)
			go func() { _, err := w.Next(ctx); done <- err }()
			for s, _ := b.Stats(); s.Sleeps == 0; s, _ = b.Stats() {
				time.Sleep(time.Millisecond)
			}
			if out, err := exec.Command(cSan, "board-put", name, "w", "ring").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if err := <-done; err != nil {
				t.Fatalf("watcher woken by C: %v", err)
			}

			// C and Go writers of one key at once, then a check.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 2000; i++ {
					if _, err := b.Put("shared", []byte(strings.Repeat("g", 40))); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			out, err = exec.Command(cBin, "board-put", name, "shared", strings.Repeat("c", 50), "2000").CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			wg.Wait()
			v, _, err = b.Get("shared", nil)
			if err != nil || !(string(v) == strings.Repeat("g", 40) || string(v) == strings.Repeat("c", 50)) {
				t.Fatalf("shared: %q %v", v, err)
			}
			if err := b.Check(); err != nil {
				t.Fatal(err)
			}
			out, _ = exec.Command(cBin, "board-get", "no-such-board", "k").CombinedOutput()
			if !strings.Contains(string(out), "No such file") {
				t.Fatalf("missing board: %s", out)
			}
		})
	}
}

// TestBoardCASDeleteC: C's compare-and-put and delete, written from
// docs/layout.md 7.7, against Go's revisions; a Go watcher sees C's
// tombstone; C's refusals write nothing.
func TestBoardCASDeleteC(t *testing.T) {
	needC(t)
	for _, wake := range []shmbus.WakeMode{shmbus.WakeFutex, shmbus.WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			b, name := newBoard(t, wake)
			c := func(want int, args ...string) string {
				t.Helper()
				cmd := exec.Command(cSan, args...)
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				if code != want {
					t.Fatalf("%v: exit %d, want %d: %s%s", args, code, want, out, stderr.String())
				}
				return strings.TrimSpace(string(out))
			}
			// rev 0: only a key without a value; C binds the cell.
			r1 := c(0, "board-cas", name, "k", "0", "one")
			if v, rev, err := b.Get("k", nil); err != nil || string(v) != "one" || strconv.FormatUint(rev, 10) != r1 {
				t.Fatalf("Go get of C's cas: %q %d %v (C said %s)", v, rev, err, r1)
			}
			// A stale revision is refused, nothing is written, the
			// conflict is counted, and C says the key's revision.
			s0, _ := b.Stats()
			if got := c(4, "board-cas", name, "k", "0", "two"); got != r1 {
				t.Fatalf("refused cas said revision %s, want %s", got, r1)
			}
			if got := c(4, "board-cas", name, "k", r1+"0", "two"); got != r1 {
				t.Fatalf("refused cas said revision %s, want %s", got, r1)
			}
			if s1, _ := b.Stats(); s1.Conflicts != s0.Conflicts+2 || s1.Revision != s0.Revision {
				t.Fatalf("after two refusals: %+v, before %+v", s1, s0)
			}
			// Go's revision is the one C compares with.
			rev, err := b.Put("k", []byte("go"))
			if err != nil {
				t.Fatal(err)
			}
			r2 := c(0, "board-cas", name, "k", strconv.FormatUint(rev, 10), "c-after-go")
			if v, rev, _ := b.Get("k", nil); string(v) != "c-after-go" || strconv.FormatUint(rev, 10) != r2 {
				t.Fatalf("after C's cas: %q %d, C said %s", v, rev, r2)
			}
			// A Go watcher sees C's delete as a tombstone.
			w, _ := b.WatchKeys(rev, "k")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			es, err := w.Next(ctx) // C's cas
			if err != nil || len(es) != 1 || string(es[0].Value) != "c-after-go" {
				t.Fatalf("watch: %+v %v", es, err)
			}
			done := make(chan []shmbus.BoardEntry, 1)
			go func() { es, _ := w.Next(ctx); done <- es }()
			rd := c(0, "board-rm", name, "k")
			es = <-done
			if len(es) != 1 || !es[0].Deleted || strconv.FormatUint(es[0].Rev, 10) != rd {
				t.Fatalf("watcher after C's delete: %+v (C said %s)", es, rd)
			}
			if _, rev, err := b.Get("k", nil); !errors.Is(err, shmbus.ErrNotFound) || strconv.FormatUint(rev, 10) != rd {
				t.Fatalf("Go get after C's delete: rev %d %v", rev, err)
			}
			c(1, "board-rm", name, "k")     // no value to delete
			c(1, "board-rm", name, "never") // never written: refused, no cell bound
			c(4, "board-cas", name, "never", "3", "x")
			if keys, _ := b.Keys(); len(keys) != 0 {
				t.Fatalf("keys after refusals: %v", keys)
			}
			if s, _ := b.Stats(); s.Keys != 1 {
				t.Fatalf("%d cells bound, want 1 (refusals bind none)", s.Keys)
			}
			// A deleted key takes rev 0 again, from C and from Go.
			c(0, "board-cas", name, "k", "0", "back")
			if _, err := b.Delete("k"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.CompareAndPut("k", 0, []byte("go-back")); err != nil {
				t.Fatal(err)
			}
			if err := b.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBoardWatchC: a C watcher (futex, or semaphore 0 of the board's set)
// asleep on the doorbell is woken by Go's writes and sees each revision
// when the writes are slower than its wake-up, the tombstone of a delete
// too; a watch of an unchanged key times out.
func TestBoardWatchC(t *testing.T) {
	needC(t)
	for _, wake := range []shmbus.WakeMode{shmbus.WakeFutex, shmbus.WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			b, name := newBoard(t, wake)
			r0, err := b.Put("k", []byte("start"))
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(cSan, "board-watch", name, "k", strconv.FormatUint(r0, 10), "4", "60000")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := make(chan string)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			s0, _ := b.Stats()
			asleep := func() {
				// The C watcher announces itself and sleeps: only then
				// does a write have to wake it.
				for s, _ := b.Stats(); s.Sleeps == s0.Sleeps; s, _ = b.Stats() {
					time.Sleep(time.Millisecond)
				}
				s0, _ = b.Stats()
			}
			var want []string
			for i, op := range []string{"a", "b", "", "c"} {
				asleep()
				var rev uint64
				if op == "" {
					rev, err = b.Delete("k")
					want = append(want, fmt.Sprintf("%d (deleted)", rev))
				} else {
					rev, err = b.Put("k", []byte(op))
					want = append(want, fmt.Sprintf("%d %s", rev, op))
				}
				if err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-lines:
					if got != want[i] {
						t.Fatalf("C watcher line %d: %q, want %q", i, got, want[i])
					}
				case <-time.After(time.Minute):
					t.Fatalf("C watcher slept through write %d (%s)", i, stderr.String())
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("C watcher: %v: %s", err, stderr.String())
			}
			// Nothing past the last revision: a timeout (exit 3).
			_, last, _ := b.Get("k", nil)
			err = exec.Command(cSan, "board-watch", name, "k", strconv.FormatUint(last, 10), "1", "50").Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Fatalf("watch of an unchanged key: %v, want exit 3", err)
			}
		})
	}
}

// TestBoardCounterCAndGo: two C processes and a Go goroutine increment
// one counter by compare-and-put with retries: no update is lost.
func TestBoardCounterCAndGo(t *testing.T) {
	needC(t)
	for _, wake := range []shmbus.WakeMode{shmbus.WakeFutex, shmbus.WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			b, name := newBoard(t, wake)
			const n = 3000
			var cmds []*exec.Cmd
			for range 2 {
				cmd := exec.Command(cBin, "board-incr", name, "ctr", strconv.Itoa(n))
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds = append(cmds, cmd)
			}
			for i := 0; i < n; {
				v, rev, err := b.Get("ctr", nil)
				if err != nil && !errors.Is(err, shmbus.ErrNotFound) {
					t.Fatal(err)
				}
				x, _ := strconv.Atoi(string(v))
				if _, err := b.CompareAndPut("ctr", rev, []byte(strconv.Itoa(x+1))); errors.Is(err, shmbus.ErrRevision) {
					continue
				} else if err != nil {
					t.Fatal(err)
				}
				i++
			}
			for _, cmd := range cmds {
				if err := cmd.Wait(); err != nil {
					t.Fatal(err)
				}
			}
			if v, _, err := b.Get("ctr", nil); err != nil || string(v) != strconv.Itoa(3*n) {
				t.Fatalf("counter %q %v, want %d", v, err, 3*n)
			}
			if err := b.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
