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
)

// ErrUnsupported is returned (wrapped) by Wait and Wake on platforms without futexes.
// errors.Is(err, errors.ErrUnsupported) also holds.
var ErrUnsupported = fmt.Errorf("futex: %w", errors.ErrUnsupported)
