//go:build !linux

package bench

import (
	"context"
	"fmt"
)

// MethodNames lists the methods Run knows: none off Linux.
func MethodNames() []string { return nil }

// Run is not available off Linux.
func Run(ctx context.Context, opts Options) (*Report, error) {
	return nil, fmt.Errorf("bench: the IPC comparison: %w", ErrUnsupported)
}

// ChildMain never has anything to do off Linux.
func ChildMain() (handled bool, err error) { return false, nil }
