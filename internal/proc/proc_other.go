//go:build unix && !linux

package proc

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Without /proc, identities carry no start time: pid reuse cannot be detected here.

var self = sync.OnceValues(func() (Identity, error) { return Identity{PID: os.Getpid()}, nil })

// Self returns the identity of the calling process (Start is 0 on this platform).
func Self() (Identity, error) { return self() }

// Lookup returns Identity{pid, 0} if kill(pid, 0) finds the process, or an error wrapping
// ErrNoProcess if it does not exist.
func Lookup(pid int) (Identity, error) {
	if pid <= 0 {
		return Identity{}, fmt.Errorf("proc: invalid pid %d: %w", pid, ErrNoProcess)
	}
	switch err := unix.Kill(pid, 0); {
	case err == nil, errors.Is(err, unix.EPERM):
		return Identity{PID: pid}, nil
	case errors.Is(err, unix.ESRCH):
		return Identity{}, fmt.Errorf("kill(%d, 0): %w: %w", pid, ErrNoProcess, err)
	default:
		return Identity{}, fmt.Errorf("kill(%d, 0): %w", pid, err)
	}
}

// Check reports whether the process named by id is alive using kill(pid, 0): ESRCH gives Dead,
// success or EPERM gives Alive, anything else Unknown. id.Start is ignored; a pid <= 0 gives
// Unknown (kill would address a process group).
func Check(id Identity) State {
	if id.PID <= 0 {
		return Unknown
	}
	switch err := unix.Kill(id.PID, 0); {
	case err == nil, errors.Is(err, unix.EPERM):
		return Alive
	case errors.Is(err, unix.ESRCH):
		return Dead
	default:
		return Unknown
	}
}
