//go:build !(linux && (amd64 || arm64)) && !darwin && !freebsd

package sem

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// This platform is not supported (other Linux architectures would need their own semid64_ds
// layout and semtimedop number): every operation returns an error wrapping errors.ErrUnsupported.

var errUnsupported = fmt.Errorf("sem: %w", errors.ErrUnsupported)

// CreateKey is unsupported on this platform.
func CreateKey(key int32, n int, mode os.FileMode) (*Set, error) { return nil, errUnsupported }

// Info is what the kernel says about a set.
type Info struct {
	Key       int32
	UID, CUID uint32
	Len       int
}

// Stat is not supported on this platform.
func Stat(id int) (Info, error) { return Info{}, errUnsupported }

// Lookup is unsupported on this platform.
func Lookup(key int32) (*Set, Info, error) { return nil, Info{}, errUnsupported }

// Create is unsupported on this platform.
func Create(n int, mode os.FileMode) (*Set, error) { return nil, errUnsupported }

// Attach is unsupported on this platform.
func Attach(id, n int) (*Set, error) { return nil, errUnsupported }

// Remove is unsupported on this platform.
func (s *Set) Remove() error { return errUnsupported }

// Wait is unsupported on this platform.
func (s *Set) Wait(num int, word *atomic.Uint32, expected uint32, deadline time.Time) error {
	return errUnsupported
}

// Wake is unsupported on this platform.
func (s *Set) Wake(num, n int) error { return errUnsupported }

// Value is unsupported on this platform.
func (s *Set) Value(num int) (int, error) { return 0, errUnsupported }

// SetValue is unsupported on this platform.
func (s *Set) SetValue(num, v int) error { return errUnsupported }

// Waiting is unsupported on this platform.
func (s *Set) Waiting(num int) (int, error) { return 0, errUnsupported }
