package futex

import (
	"fmt"
	"math"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Shared (not _PRIVATE) operations: the sleeper and the waker may be different processes.
const (
	futexWait = 0 // FUTEX_WAIT
	futexWake = 1 // FUTEX_WAKE
)

// Wait sleeps while *word == expected, until Wake is called on the same address (from any
// process mapping the same memory) or the deadline passes. A zero deadline means no deadline.
//
// It returns nil when woken, when *word != expected already, or spuriously, and
// os.ErrDeadlineExceeded once the deadline has passed. EINTR is retried with the remaining time
// recomputed.
//
// The timeout is passed to FUTEX_WAIT as a relative timespec recomputed from the deadline before
// every attempt. FUTEX_WAIT measures relative timeouts against CLOCK_MONOTONIC, and time.Until
// uses the monotonic reading carried by deadline, so both sides agree; an absolute
// FUTEX_WAIT_BITSET timeout would need an extra clock_gettime to translate Go's monotonic reading
// (which has a process-local origin) into the kernel's CLOCK_MONOTONIC origin.
func Wait(word *atomic.Uint32, expected uint32, deadline time.Time) error {
	for {
		var tsp *unix.Timespec
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			ts := unix.NsecToTimespec(int64(d))
			tsp = &ts
		}
		_, _, errno := unix.Syscall6(unix.SYS_FUTEX,
			uintptr(unsafe.Pointer(word)), futexWait, uintptr(expected),
			uintptr(unsafe.Pointer(tsp)), 0, 0)
		switch errno {
		case 0, unix.EAGAIN:
			// Woken (possibly spuriously), or *word != expected.
			return nil
		case unix.EINTR:
			continue
		case unix.ETIMEDOUT:
			// Loop: returns os.ErrDeadlineExceeded once time.Until agrees the deadline
			// has passed, so the caller never sees it early.
			continue
		default:
			return fmt.Errorf("futex wait: %w", errno)
		}
	}
}

// Wake wakes at most n sleepers waiting on word (in any process) and returns how many it woke.
// n <= 0 wakes nobody; n larger than math.MaxInt32 is clamped.
func Wake(word *atomic.Uint32, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	if n > math.MaxInt32 {
		n = math.MaxInt32
	}
	r, _, errno := unix.Syscall6(unix.SYS_FUTEX,
		uintptr(unsafe.Pointer(word)), futexWake, uintptr(n), 0, 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("futex wake: %w", errno)
	}
	return int(r), nil
}
