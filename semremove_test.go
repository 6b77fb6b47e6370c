package shmbus

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/internal/testutil"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/sem"
)

// semBus creates a sem-mode bus and returns its name, path and set id.
func semBus(t *testing.T) (string, string, int) {
	t.Helper()
	name := fmt.Sprintf("semrm-%d-%d", os.Getpid(), time.Now().UnixNano())
	b, err := Create(name, &Options{Wake: WakeSem, LaneCapacity: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	id := b.sems.ID()
	path := b.Path()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(path)
		if left := testutil.LiveSems([]int{id}); len(left) > 0 {
			if set, err := sem.Attach(id, 3); err == nil {
				set.Remove()
			}
		}
	})
	return name, path, id
}

// Remove finds and removes the semaphore set of a sem-mode bus whose
// segment can no longer say which set is its own.
func TestRemoveDamagedSemBus(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"intact", func(*testing.T, string) {}},
		{"truncated to zero", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"one header byte flipped", func(t *testing.T, path string) {
			flipByte(t, path, layout.OffVersion)
		}},
		{"set id in the header overwritten", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f}, layout.OffSemID); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, path, id := semBus(t)
			tt.damage(t, path)
			if err := Remove("", name); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("segment file still there: %v", err)
			}
			if left := testutil.LiveSems([]int{id}); len(left) > 0 {
				t.Fatalf("semaphore set %d left behind", id)
			}
		})
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := segment.Open(path, -1); err == nil {
		t.Fatalf("flipping byte %#x left a valid header", off)
	}
}

// A set found under the bus's key that does not carry the bus's cookie is
// not removed on that evidence alone: Remove says which set it left and
// how to remove it.
func TestRemoveNamesSetItLeaves(t *testing.T) {
	name, path, id := semBus(t)
	set, err := sem.Attach(id, 3)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := set.Value(2)
	if err := set.SetValue(2, v%32767+1); err != nil { // another cookie
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	err = Remove("", name)
	want := fmt.Sprintf("ipcrm -s %d", id)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("left semaphore set %d", id)) {
		t.Fatalf("Remove: %v, want it to name set %d and %q", err, id, want)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("segment file still there: %v", err)
	}
	if left := testutil.LiveSems([]int{id}); len(left) != 1 {
		t.Fatalf("set %d removed without proof", id)
	}
}

// An unrelated set is never removed: one that the header names (as if the
// bus's set had been removed and its id reused), without the cookie, stays,
// and the bus's own set is still found by its key.
func TestRemoveSparesUnrelatedSet(t *testing.T) {
	name, path, id := semBus(t)
	other, err := sem.Create(3, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Remove()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(other.ID()), byte(other.ID()>>8), byte(other.ID()>>16), byte(other.ID()>>24)
	_, err = f.WriteAt(b[:], layout.OffSemID)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := Remove("", name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if left := testutil.LiveSems([]int{other.ID()}); len(left) != 1 {
		t.Fatal("an unrelated set was removed")
	}
	if left := testutil.LiveSems([]int{id}); len(left) != 0 {
		t.Fatalf("the bus's set %d is left", id)
	}
}
