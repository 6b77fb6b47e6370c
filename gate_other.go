//go:build !(linux && amd64) && !race

package shmbus

import "sync/atomic"

// The symmetric gate (see gate.go): sequentially consistent atomics on both
// sides. Race-detector builds use it everywhere: the detector sees the
// order atomics make, not the one membarrier makes, and would report every
// Close.

func gateAdd(n *int32, d int32) int32 { return atomic.AddInt32(n, d) }

func gateBarrier() {}
