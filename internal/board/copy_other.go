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
