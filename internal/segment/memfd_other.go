//go:build !linux

package segment

import (
	"errors"
	"fmt"
)

// CreateMemfd needs Linux's memfd_create.
func CreateMemfd(name string, size int64, seal bool) (*Mapping, error) {
	return nil, fmt.Errorf("create memfd segment %q: %w", name, errors.ErrUnsupported)
}

// Seals is 0: only Linux memfds have seals.
func (m *Mapping) Seals() (int, error) { return 0, nil }
