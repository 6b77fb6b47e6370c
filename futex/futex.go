// Package futex exposes the Linux futex(2) wait/wake primitive on a 32-bit word, typically one
// that lives in memory shared between processes (a MAP_SHARED mapping).
//
// Contract:
//
//   - Wait may return nil spuriously (on a wake meant for someone else, on a value change that
//     was undone, or for no reason at all); callers must always re-check their condition in a loop.
//   - Wait returns nil without sleeping if *word != expected when the kernel looks at it.
//   - Wait returns os.ErrDeadlineExceeded only once the deadline has passed, never before it.
//   - The shared (non-PRIVATE) futex operations are used, so a Wake in one process reaches
//     sleepers in every process that maps the same memory.
//   - On platforms without futexes, Wait and Wake return an error wrapping ErrUnsupported
//     (which itself wraps errors.ErrUnsupported).
package futex

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrUnsupported is returned (wrapped) by Wait and Wake on platforms without futexes.
// errors.Is(err, errors.ErrUnsupported) also holds.
var ErrUnsupported = fmt.Errorf("futex: %w", errors.ErrUnsupported)

// Sleeper sleeps and wakes on the word it is given: the shape of the waker
// interface of package ring (ring.Sleeper), which it satisfies.
type Sleeper struct{}

// Sleep is Wait.
func (Sleeper) Sleep(word *atomic.Uint32, expected uint32, deadline time.Time) error {
	return Wait(word, expected, deadline)
}

// Wake is Wake, without the count.
func (Sleeper) Wake(word *atomic.Uint32, n int) error {
	_, err := Wake(word, n)
	return err
}
