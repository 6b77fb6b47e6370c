//go:build !linux

package futex

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Wait is unsupported on this platform; it returns an error wrapping ErrUnsupported.
func Wait(word *atomic.Uint32, expected uint32, deadline time.Time) error {
	return fmt.Errorf("futex wait: %w", ErrUnsupported)
}

// Wake is unsupported on this platform; it returns an error wrapping ErrUnsupported.
func Wake(word *atomic.Uint32, n int) (int, error) {
	return 0, fmt.Errorf("futex wake: %w", ErrUnsupported)
}
