//go:build !unix

package proc

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Platforms without kill(2): Self works, Lookup fails with errors.ErrUnsupported and Check
// always answers Unknown.

var self = sync.OnceValues(func() (Identity, error) { return Identity{PID: os.Getpid()}, nil })

// Self returns the identity of the calling process (Start is 0 on this platform).
func Self() (Identity, error) { return self() }

// Lookup is unsupported on this platform.
func Lookup(pid int) (Identity, error) {
	return Identity{}, fmt.Errorf("proc: lookup pid %d: %w", pid, errors.ErrUnsupported)
}

// Check always returns Unknown on this platform.
func Check(id Identity) State { return Unknown }
