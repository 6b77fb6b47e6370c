//go:build linux && amd64 && !race

package shmbus

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The asymmetric gate (see gate.go): plain increments on the call's side,
// membarrier on Close's. Race-detector builds use gate_race.go instead:
// the detector sees the order atomics make, not the one membarrier makes.

const (
	membarrierPrivateExpedited         = 1 << 3 // MEMBARRIER_CMD_PRIVATE_EXPEDITED
	membarrierRegisterPrivateExpedited = 1 << 4 // MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
)

// asymmetric says whether the process registered for expedited private
// membarriers (Linux 4.14); without it the gate uses atomics.
var asymmetric = func() bool {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierRegisterPrivateExpedited, 0, 0)
	return errno == 0
}()

// gateAdd adds d to the call count n and returns the new count. Only the
// handle's goroutine writes n.
func gateAdd(n *int32, d int32) int32 {
	if !asymmetric {
		return atomic.AddInt32(n, d)
	}
	*n += d
	return *n
}

// gateBarrier runs a full memory barrier on every running thread of the
// process. The registration succeeded, so the call cannot fail short of a
// kernel bug; if it does, it panics rather than let Close unmap under a
// running call.
func gateBarrier() {
	if !asymmetric {
		return
	}
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierPrivateExpedited, 0, 0); errno != 0 {
		panic("shmbus: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) after registering: " + errno.Error())
	}
}
