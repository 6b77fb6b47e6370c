package board

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/internal/proc"
	"github.com/shmbus/shmbus/layout"
)

// newSeg makes an in-memory board segment (8-byte aligned, as a mapping).
func newSeg(t testing.TB, cells, maxValue int) ([]byte, layout.BoardGeometry) {
	t.Helper()
	g, err := layout.PlanBoard(layout.BoardConfig{Cells: cells, MaxValue: maxValue, WakeMode: layout.WakeFutex})
	if err != nil {
		t.Fatal(err)
	}
	words := make([]uint64, g.TotalSize/8)
	seg := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), g.TotalSize)
	h := layout.NewBoardHeader(g)
	h.Ready = layout.ReadyValue
	h.Encode(seg)
	return seg, g
}

func newBoard(t testing.TB, cells, maxValue int) *Board {
	seg, g := newSeg(t, cells, maxValue)
	self, _ := proc.Self()
	return New(seg, g, futex.Sleeper{}, self)
}

func TestCollisions(t *testing.T) {
	// Every key of a full board is found again, whatever its home cell.
	b := newBoard(t, 7, 16)
	for i := 0; i < 7; i++ {
		if _, err := b.Put(fmt.Sprintf("key-%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 7; i++ {
		v, _, err := b.Get(fmt.Sprintf("key-%d", i), nil)
		if err != nil || len(v) != 1 || v[0] != byte(i) {
			t.Fatalf("key-%d: %v %v", i, v, err)
		}
	}
	if _, _, err := b.Get("absent", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent key on a full board: %v", err)
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentBinding(t *testing.T) {
	// Goroutines racing to bind the same new keys bind each once.
	b := newBoard(t, 16, 8)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 12; i++ {
				if _, err := b.Put(fmt.Sprintf("k%d", i), []byte("v")); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Keys != 12 || s.Puts != 96 {
		t.Fatalf("%d keys, %d puts; want 12 and 96", s.Keys, s.Puts)
	}
}

func TestDeadLockHolder(t *testing.T) {
	// A lock left by a process that no longer exists is taken over; one
	// held by a live process (this one's parent) is not, however long.
	b := newBoard(t, 4, 8)
	if _, err := b.Put("k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	i, _, _ := b.Lookup("k")
	c := b.cell(i)
	c.lock().Store(proc.Tag(proc.Identity{PID: 1 << 22, Start: 7})) // beyond pid_max: no such process
	if _, err := b.Put("k", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if b.Stats().Recoveries != 1 {
		t.Fatalf("recoveries %d, want 1", b.Stats().Recoveries)
	}
	parent, err := proc.Lookup(os.Getppid())
	if err != nil {
		t.Skip("no parent identity:", err)
	}
	c.lock().Store(proc.Tag(parent))
	done := make(chan error, 1)
	go func() { _, err := b.Put("k", []byte("3")); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("put took the lock of a live process: %v", err)
	case <-time.After(50 * lockProbeEvery):
	}
	c.lock().Store(0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestHalfWrittenCopyIgnored(t *testing.T) {
	// A writer that died with the spare copy open leaves the value as it
	// was; the next write replaces the spare.
	b := newBoard(t, 4, 8)
	r1, _ := b.Put("k", []byte("good"))
	i, _, _ := b.Lookup("k")
	cw := b.cell(i).current().Load()
	spare := b.copyOf(i, 1-int(cw&1))
	spare.seq().Store(spare.seq().Load() | 1)
	copy(spare.data(4), "junk")
	if v, rev, err := b.Get("k", nil); err != nil || string(v) != "good" || rev != r1 {
		t.Fatalf("get: %q %d %v", v, rev, err)
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put("k", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := b.Get("k", nil); string(v) != "new" {
		t.Fatalf("get after rewrite: %q", v)
	}
}

func TestGetAllocs(t *testing.T) {
	b := newBoard(t, 16, 64)
	b.Put("k", make([]byte, 64))
	buf := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() { b.Get("k", buf) }); n != 0 {
		t.Errorf("Get: %v allocations", n)
	}
	v := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() { b.Put("k", v) }); n != 0 {
		t.Errorf("Put: %v allocations", n)
	}
}

// FuzzBoard: random bytes in the cells (keys, lengths, hashes, revisions,
// copies) and the board revision give ErrCorrupt or a consistent answer,
// never a panic, an out-of-bounds read or a hang.
func FuzzBoard(f *testing.F) {
	b := newBoard(f, 4, 32)
	b.Put("a", []byte("alpha"))
	b.Put("b", []byte("beta"))
	b.Put("c", nil)
	b.Delete("c")
	f.Add(b.seg[layout.HeaderSize:], uint64(4))
	f.Add([]byte{1, 0, 0, 0, 0xff}, uint64(0))
	f.Fuzz(func(t *testing.T, cells []byte, rev uint64) {
		b := newBoard(t, 4, 32)
		copy(b.seg[layout.HeaderSize:], cells)
		b.rev.Store(rev)
		for i := 0; i < b.g.Cells; i++ {
			b.cell(i).lock().Store(0) // a hostile lock word is waited on, not a fault
		}
		corrupt := func(what string, err error) {
			if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound) &&
				!errors.Is(err, ErrFull) && !errors.Is(err, ErrRevision) {
				t.Fatalf("%s: %v", what, err)
			}
		}
		corrupt("check", b.Check())
		buf := make([]byte, 32)
		for _, k := range []string{"a", "b", "c", "d"} {
			v, _, err := b.Get(k, buf)
			corrupt("get", err)
			if len(v) > 32 {
				t.Fatalf("get %s: %d bytes from a 32-byte board", k, len(v))
			}
		}
		corrupt("range", b.Range(true, func(e Entry) bool { return len(e.Value) <= 32 }))
		w := b.NewWatcher(0, nil, "", true)
		_, err := w.Next(nil, time.Now())
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			corrupt("watch", err)
		}
		_, err = b.Put("a", []byte("new"))
		corrupt("put", err)
		_, err = b.CompareAndPut("e", 0, []byte("x"))
		corrupt("cas", err)
	})
}

func BenchmarkGet(b *testing.B) {
	bd := newBoard(b, 64, 64)
	bd.Put("key", make([]byte, 64))
	buf := make([]byte, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		bd.Get("key", buf)
	}
}

func BenchmarkPut(b *testing.B) {
	bd := newBoard(b, 64, 64)
	v := make([]byte, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		bd.Put("key", v)
	}
}
