//go:build !race

package board

import (
	"sync/atomic"
	"unsafe"
)

// storeRelease stores v in *w, ordered after every store before it and
// before every store after it, but not before later loads. On amd64 every
// store has that order (total store order) and the compiler keeps stores in
// program order, so this is a plain store: it leaves the line to the store
// buffer instead of waiting for it, as the locked exchange of an atomic
// Store does, so a writer whose lines another process last touched waits
// for their misses together instead of one after the other. The writer's
// next fenced operation (the lock release, an exchange) orders all of them
// before the doorbell load that follows (see write). Race builds use the
// atomic store: the race detector does not know this order.
func storeRelease(w *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(w)) = v }
