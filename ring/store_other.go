//go:build !amd64

package ring

import "sync/atomic"

// storeOrdered stores v in w, ordered after every earlier store of this
// thread (see store_amd64.go). Elsewhere that takes an atomic store.
func storeOrdered(w *atomic.Uint64, v uint64) { w.Store(v) }
