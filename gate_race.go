//go:build race

package shmbus

import "sync/atomic"

// The gate under the race detector (see gate.go): sequentially consistent
// atomics, as gate_other.go, and every call also adds to one word of the
// process. The detector sees the order atomics on the heap make, not the
// one membarrier makes, nor that of the atomics in the mapping (the ring's
// publish and release), which order a producer's last Send before the
// Close a consumer's receipt of that message led to. The shared word
// gives it that order, as the bus-wide gate did before gates were per
// handle; builds without -race do not pay for it.

var raceOrder atomic.Int64

func gateAdd(n *int32, d int32) int32 {
	raceOrder.Add(1)
	return atomic.AddInt32(n, d)
}

func gateBarrier() {}
