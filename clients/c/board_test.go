package cclient

import (
	"context"
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
