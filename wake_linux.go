package shmbus

import "github.com/shmbus/shmbus/layout"

// DefaultWake is the wake mode of a bus created without one: futexes.
const DefaultWake = WakeFutex

func checkWake(m layout.WakeMode) error {
	if m != layout.WakeFutex && m != layout.WakeSem {
		return &unsupportedWake{m}
	}
	return nil
}
