package segment

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shmbus/shmbus/internal/failpoint"
)

// A create whose context ends while it reserves and prefaults the pages
// stops there and leaves no file.
func TestCreateContextCanceled(t *testing.T) {
	for _, after := range []int{1, 3, 6} { // during the reservation, and the prefault
		path := filepath.Join(t.TempDir(), Prefix+"cancel")
		ctx, cancel := context.WithCancel(context.Background())
		steps := 0
		failpoint.CreateStep.Set(func() {
			if steps++; steps == after {
				cancel()
			}
		})
		m, err := CreateContext(ctx, path, 4*createChunk, 0o600)
		failpoint.CreateStep.Set(nil)
		cancel()
		if !errors.Is(err, context.Canceled) {
			if m != nil {
				m.Close()
			}
			t.Fatalf("canceled at step %d: %v, want context.Canceled", after, err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("canceled at step %d: file left behind (%v)", after, err)
		}
	}
	// Not canceled: made whole.
	path := filepath.Join(t.TempDir(), Prefix+"whole")
	m, err := CreateContext(context.Background(), path, 2*createChunk+4096, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if fi, err := os.Stat(path); err != nil || fi.Size() != 2*createChunk+4096 {
		t.Fatalf("stat: %v, %v", fi, err)
	}
}

// Room reports some room for a directory that exists, and an error for
// one that does not.
func TestRoom(t *testing.T) {
	room, what, err := Room(t.TempDir())
	if err != nil || room == 0 || what == "" {
		t.Fatalf("Room = %d, %q, %v", room, what, err)
	}
	if _, _, err := Room(filepath.Join(t.TempDir(), "nonexistent")); err == nil {
		t.Fatal("Room of a missing directory succeeded")
	}
}
