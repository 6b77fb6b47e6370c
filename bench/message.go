package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
)

// Every benchmark message starts with an 8-byte sequence word: the sending
// producer in the top 16 bits, the sequence number (from 1) in the rest.
// Messages of 16 bytes or more end with the word's complement, so that a
// short, torn or shifted message shows at both ends; the bytes between are
// a fixed pseudo-random pattern that the receiver can compare whole.

const (
	seqBits = 48
	seqMask = 1<<seqBits - 1
	endSeq  = seqMask // the sequence number of a producer's last message
)

func seqWord(producer int, seq uint64) uint64 { return uint64(producer)<<seqBits | seq&seqMask }

// template returns a message of size bytes filled with the pattern.
func template(size int) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{'s', 'h', 'm', 'b', 'u', 's', '-', 'b', 'e', 'n', 'c', 'h'})
	r.Read(b)
	return b
}

// stamp writes the sequence word (and its complement at the end) into msg.
func stamp(msg []byte, producer int, seq uint64) {
	w := seqWord(producer, seq)
	binary.LittleEndian.PutUint64(msg, w)
	if len(msg) >= 16 {
		binary.LittleEndian.PutUint64(msg[len(msg)-8:], ^w)
	}
}

// unstamp reads the sequence word of msg.
func unstamp(msg []byte) (producer int, seq uint64) {
	w := binary.LittleEndian.Uint64(msg)
	return int(w >> seqBits), w & seqMask
}

// checkMessage verifies msg, received where a message of len(tmpl) bytes
// was sent: its size, its end word and, if whole, every pattern byte.
func checkMessage(msg, tmpl []byte, whole bool) error {
	if len(msg) != len(tmpl) {
		return fmt.Errorf("message of %d bytes, want %d", len(msg), len(tmpl))
	}
	if len(msg) < 16 {
		return nil
	}
	w := binary.LittleEndian.Uint64(msg)
	if e := binary.LittleEndian.Uint64(msg[len(msg)-8:]); e != ^w {
		return fmt.Errorf("message %#x: end word %#x, want %#x (torn or shifted)", w, e, ^w)
	}
	if whole && !bytes.Equal(msg[8:len(msg)-8], tmpl[8:len(tmpl)-8]) {
		i := 8
		for msg[i] == tmpl[i] {
			i++
		}
		return fmt.Errorf("message %#x: byte %d is %#x, want %#x", w, i, msg[i], tmpl[i])
	}
	return nil
}
