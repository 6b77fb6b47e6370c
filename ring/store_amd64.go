package ring

import (
	"sync/atomic"
	"unsafe"
)

// storeOrdered stores v in w, ordered after every earlier store of this
// thread and before every later one, but without the full barrier of
// w.Store (an XCHG): amd64 keeps stores in program order (TSO), so a plain
// MOV is a release store. It is for words of the segment that a reader
// only needs to see in the order they were written, never before a later
// load of the writer's (the single producer's tail; see claimSpan).
func storeOrdered(w *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(w)) = v }
