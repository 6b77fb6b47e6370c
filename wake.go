package shmbus

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
	"github.com/shmbus/shmbus/sem"
)

// sleeper is the wake primitive of doorbell num: semaphore 0 of the bus's
// set is the data doorbell, 1+i the space doorbell of lane i, and the last
// one holds the bus's cookie; with futexes every doorbell sleeps on its own
// word.
func (b *Bus) sleeper(num int) ring.Sleeper {
	if b.sems != nil {
		return b.sems.Sleeper(num)
	}
	return futex.Sleeper{}
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
