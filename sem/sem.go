// Package sem wraps System V semaphore sets (semget/semtimedop/semctl), used as a sleeping
// mechanism between processes that share memory but cannot use futexes on it.
//
// Contract:
//
//   - Wait may return nil spuriously with respect to the caller's condition (a token left over
//     from an earlier Wake, or the word changing back); callers re-check their condition in a loop.
//   - Wait returns os.ErrDeadlineExceeded only once the deadline has passed, never before it.
//   - Wake does not accumulate tokens: it tops the semaphore up to at most min(n, 32767), based on
//     a GETVAL that is not atomic with the increment, so concurrent Wakes may overshoot to the sum
//     of their targets. Sleepers must therefore tolerate spurious wakeups.
//   - SEM_UNDO is never used: the count survives the death of the process that changed it.
//   - Once a set is removed (by any process), operations on it fail with an error wrapping
//     ErrRemoved; sleepers in other processes are woken with ErrRemoved.
//   - Implemented natively on linux/amd64 and linux/arm64 (semtimedop). On darwin and freebsd,
//     which lack semtimedop, Wait polls with IPC_NOWAIT and short sleeps (backing off to 1 ms).
//     Elsewhere every operation returns an error wrapping errors.ErrUnsupported.
package sem

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

var (
	// ErrRemoved means the set no longer exists: it was removed (IPC_RMID), or the id
	// never named a set.
	ErrRemoved = errors.New("sem: semaphore set removed")
	// ErrMismatch means Attach found a set whose size differs from the expected one.
	ErrMismatch = errors.New("sem: semaphore set size mismatch")
)

// semvmx is the largest value a System V semaphore can hold (SEMVMX).
const semvmx = 32767

// Set is a System V semaphore set. Its methods are safe for concurrent use.
type Set struct {
	id int
	n  int
}

// ID returns the kernel identifier of the set, which other processes pass to Attach.
func (s *Set) ID() int { return s.id }

// Len returns the number of semaphores in the set.
func (s *Set) Len() int { return s.n }

func (s *Set) checkNum(num int) error {
	if num < 0 || num >= s.n {
		return fmt.Errorf("sem: semaphore %d out of range [0,%d)", num, s.n)
	}
	return nil
}

// skipWait reports whether Wait should return at once because the word changed.
func skipWait(word *atomic.Uint32, expected uint32) bool {
	return word != nil && word.Load() != expected
}

// wakeDelta returns how much Wake must add to a semaphore currently at value so that up to n
// sleepers can pass without the count piling up.
func wakeDelta(value, n int) int {
	return max(0, min(n, semvmx)-value)
}

// Sleeper is one semaphore of a set in the shape of the waker interface of
// package ring (ring.Sleeper), which it satisfies: Sleep waits on it (after
// checking the word), Wake raises it.
type Sleeper struct {
	set *Set
	num int
}

// Sleeper returns semaphore num of s as a Sleeper.
func (s *Set) Sleeper(num int) Sleeper { return Sleeper{s, num} }

// Sleep is Wait on the semaphore.
func (x Sleeper) Sleep(word *atomic.Uint32, expected uint32, deadline time.Time) error {
	return x.set.Wait(x.num, word, expected, deadline)
}

// Wake is Wake on the semaphore; the word is not needed.
func (x Sleeper) Wake(_ *atomic.Uint32, n int) error { return x.set.Wake(x.num, n) }
