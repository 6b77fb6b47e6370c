package shmbus

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
	"github.com/shmbus/shmbus/sem"
)

// futexSleeper sleeps on the doorbell word itself.
type futexSleeper struct{}

func (futexSleeper) Sleep(w *atomic.Uint32, v uint32, d time.Time) error { return futex.Wait(w, v, d) }
func (futexSleeper) Wake(w *atomic.Uint32, n int) error {
	_, err := futex.Wake(w, n)
	return err
}

// semSleeper sleeps on one semaphore of the bus's set: semaphore 0 is the
// data doorbell, 1+i the space doorbell of lane i, and the last one holds
// the bus's cookie.
type semSleeper struct {
	set *sem.Set
	num int
}

func (s semSleeper) Sleep(w *atomic.Uint32, v uint32, d time.Time) error {
	return s.set.Wait(s.num, w, v, d)
}
func (s semSleeper) Wake(_ *atomic.Uint32, n int) error { return s.set.Wake(s.num, n) }

func (b *Bus) sleeper(num int) ring.Sleeper {
	if b.sems != nil {
		return semSleeper{b.sems, num}
	}
	return futexSleeper{}
}

// createSems makes the semaphore set of a bus with lanes lanes: one per
// doorbell plus one holding a random cookie (1..32767) that the header
// records, so that an attacher can tell the bus's set from an unrelated one
// that reused its id after removal.
func createSems(lanes int, mode os.FileMode) (*sem.Set, uint32, error) {
	set, err := sem.Create(lanes+2, mode)
	if err != nil {
		return nil, 0, fmt.Errorf("semaphore set: %w", err)
	}
	if onSemCreate != nil {
		onSemCreate(set.ID())
	}
	var r [2]byte
	rand.Read(r[:])
	cookie := uint32(binary.LittleEndian.Uint16(r[:]))%32767 + 1
	if err := set.SetValue(lanes+1, int(cookie)); err != nil {
		set.Remove()
		return nil, 0, fmt.Errorf("semaphore set: %w", err)
	}
	return set, cookie, nil
}

// onSemCreate, if set (by tests), is told every semaphore set created.
var onSemCreate func(id int)

func attachSems(id, lanes int, cookie uint32) (*sem.Set, error) {
	set, err := sem.Attach(id, lanes+2)
	if err != nil {
		return nil, fmt.Errorf("semaphore set %d: %w", id, err)
	}
	v, err := set.Value(lanes + 1)
	if err != nil {
		return nil, fmt.Errorf("semaphore set %d: %w", id, err)
	}
	if uint32(v) != cookie {
		return nil, fmt.Errorf("semaphore set %d: %w: cookie %d, header says %d (set removed and its id reused?)", id, layout.ErrCorrupt, v, cookie)
	}
	return set, nil
}

type unsupportedWake struct{ m layout.WakeMode }

func (e *unsupportedWake) Error() string {
	return fmt.Sprintf("wake mode %v not supported on this platform", e.m)
}

func (e *unsupportedWake) Unwrap() error { return ErrUnsupported }
