package board

import "unsafe"

// On amd64 stores become visible in program order and loads are not
// reordered with older loads (total store order), and the compiler keeps
// the memmove of copy between the atomic sequence loads and stores around
// it, so plain copies are ordered as the protocol needs.

func copyIn(dst, src []byte)  { copy(dst, src) }
func copyOut(dst, src []byte) { copy(dst, src) }

// loadHeader and storeHeader move a copy's header (at p: revision, length,
// flags) as plain words, for the same reason.
func loadHeader(p unsafe.Pointer) copyHeader {
	return copyHeader{
		rev:   *(*uint64)(p),
		len:   *(*uint32)(unsafe.Add(p, hdrLen)),
		flags: *(*uint32)(unsafe.Add(p, hdrFlags)),
	}
}

func storeHeader(p unsafe.Pointer, h copyHeader) {
	*(*uint64)(p) = h.rev
	*(*uint32)(unsafe.Add(p, hdrLen)) = h.len
	*(*uint32)(unsafe.Add(p, hdrFlags)) = h.flags
}
