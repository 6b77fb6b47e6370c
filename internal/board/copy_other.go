//go:build !amd64

package board

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Elsewhere (arm64, ...) plain loads and stores may be reordered with the
// sequence words' atomics, so the value moves as atomic 8-byte words
// (copies start 8-byte aligned and are padded to 64 bytes, so the last word
// stays inside the copy): a reader's loads are then ordered before its
// second sequence load, and a writer's stores after its opening store.

func word(b []byte, i int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(unsafe.SliceData(b[i : i+8 : i+8])))
}

func copyIn(dst, src []byte) {
	full := dst[:cap(dst)]
	for i := 0; i < len(src); i += 8 {
		var w [8]byte
		copy(w[:], src[i:])
		word(full, i).Store(binary.LittleEndian.Uint64(w[:]))
	}
}

func copyOut(dst, src []byte) {
	full := src[:cap(src)]
	for i := 0; i < len(dst); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], word(full, i).Load())
		copy(dst[i:], w[:])
	}
}

// loadHeader and storeHeader move a copy's header (at p: revision, then
// length and flags in one word) as atomic words too.
func loadHeader(p unsafe.Pointer) copyHeader {
	w := (*atomic.Uint64)(unsafe.Add(p, hdrLen)).Load()
	return copyHeader{rev: (*atomic.Uint64)(p).Load(), len: uint32(w), flags: uint32(w >> 32)}
}

func storeHeader(p unsafe.Pointer, h copyHeader) {
	(*atomic.Uint64)(p).Store(h.rev)
	(*atomic.Uint64)(unsafe.Add(p, hdrLen)).Store(uint64(h.len) | uint64(h.flags)<<32)
}
