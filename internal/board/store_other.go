//go:build !amd64 || race

package board

import "sync/atomic"

// storeRelease is an atomic store away from amd64 (and in race builds): see
// store_amd64.go.
func storeRelease(w *atomic.Uint64, v uint64) { w.Store(v) }
