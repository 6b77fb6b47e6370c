//go:build !amd64

package ring

import "sync/atomic"

// loadFence orders the plain loads before it before the atomic loads after
// it: an atomic read-modify-write of a word the caller owns, which Go
// compiles to a full barrier (on arm64 a load-acquire/store-release pair
// or an LSE atomic with both semantics).
func loadFence(w *atomic.Uint32) { w.Add(1) }
