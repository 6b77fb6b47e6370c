package layout

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// This file is the only place in shmbus that turns mapped bytes into typed
// atomics. A word of shared memory is used only through the pointer returned
// here, and only with Load/Store/CompareAndSwap/Add, which compile to the
// fences the protocol comments rely on (sequentially consistent in Go).

// Word32 is the 4-byte word at off in b as an atomic. It panics if the word
// is out of range or misaligned: offsets passed here come from a validated
// Geometry, so a failure is a bug in shmbus, not bad input.
func Word32(b []byte, off uint64) *atomic.Uint32 {
	check(b, off, 4)
	return (*atomic.Uint32)(unsafe.Pointer(unsafe.SliceData(b[off : off+4])))
}

// Word64 is the 8-byte word at off in b as an atomic (see Word32).
func Word64(b []byte, off uint64) *atomic.Uint64 {
	check(b, off, 8)
	return (*atomic.Uint64)(unsafe.Pointer(unsafe.SliceData(b[off : off+8])))
}

func check(b []byte, off, size uint64) {
	if off > uint64(len(b)) || uint64(len(b))-off < size {
		panic(fmt.Sprintf("layout: %d-byte word at %d outside %d-byte region", size, off, len(b)))
	}
	if p := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(off); p%uintptr(size) != 0 {
		panic(fmt.Sprintf("layout: %d-byte word at %#x misaligned", size, p))
	}
}

// HostLittleEndian reports whether this machine stores words little-endian,
// as the format requires for words accessed atomically in place.
func HostLittleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// Word32At is Word32 for hot paths: the range is still checked (by Go's
// bounds check) but alignment is the caller's promise. Ring code calls it
// only with record offsets, which are multiples of 8 from an aligned base.
func Word32At(b []byte, off uint64) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&b[off : off+4][0]))
}

// Word64At is Word32At for 8-byte words. Board code calls it only with
// offsets of a validated board geometry, which are multiples of 8 from the
// page-aligned start of the mapping.
func Word64At(b []byte, off uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&b[off : off+8][0]))
}
