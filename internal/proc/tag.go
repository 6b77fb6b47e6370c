package proc

import "errors"

// Tag packs id into one 64-bit word that shared memory can hold and
// compare-and-swap: pid<<32 | (start time & 0xffffffff). It is never 0 for
// a real process (pid 0 is not one). Two live processes never share a tag;
// a tag outlives its process only as evidence to be checked with TagState.
func Tag(id Identity) uint64 {
	return uint64(uint32(id.PID))<<32 | id.Start&0xffffffff
}

// TagState is Check for a Tag: Dead only with proof that the process the
// tag names no longer runs (no such pid, the pid now has another start
// time, or it is a zombie); Alive or Unknown otherwise, which callers that
// reclaim resources must treat alike.
func TagState(tag uint64) State {
	pid := int(tag >> 32)
	id, err := Lookup(pid)
	if errors.Is(err, ErrNoProcess) {
		return Dead
	}
	if err != nil {
		return Unknown
	}
	if uint32(id.Start) != uint32(tag) {
		return Dead // the pid was reused
	}
	return Check(id)
}
