//go:build !linux

package shmbus

import "github.com/shmbus/shmbus/layout"

// DefaultWake is the wake mode of a bus created without one: System V
// semaphores, the only primitive shared across processes here.
const DefaultWake = WakeSem

func checkWake(m layout.WakeMode) error {
	if m != layout.WakeSem {
		return &unsupportedWake{m}
	}
	return nil
}
