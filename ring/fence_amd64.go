package ring

import "sync/atomic"

// loadFence orders the plain loads before it before the atomic loads after
// it. amd64 does not reorder loads with loads, so it is free here.
func loadFence(*atomic.Uint32) {}
