package ring

import (
	"encoding/binary"
	"testing"

	"github.com/shmbus/shmbus/layout"
)

// FuzzWaiting: Waiting over arbitrary lane bytes and positions neither
// panics nor counts more messages than records could fit between the
// positions.
func FuzzWaiting(f *testing.F) {
	seed := make([]byte, 64)
	binary.LittleEndian.PutUint32(seed[0:], 16)
	binary.LittleEndian.PutUint32(seed[4:], layout.TypeData|uint32(layout.FragBegin|layout.FragEnd)<<8)
	f.Add(uint64(0), uint64(16), seed)
	f.Add(uint64(1<<64-16), uint64(32), []byte{16, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255})
	f.Add(uint64(8), uint64(1<<20), []byte{24, 0, 0, 0, 2, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, head, tail uint64, data []byte) {
		s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, Flags: layout.FlagMultiProducer}, 0)
		l := s.lanes[0]
		copy(l.data, data)
		head &^= 7
		l.head.Store(head)
		l.tail.Store(tail)
		n := l.Waiting()
		if n > 0 && tail-head > l.capacity {
			t.Fatalf("counted %d messages between positions %d and %d, more than a lane apart", n, head, tail)
		}
		if n > (tail-head)/layout.RecordHeader {
			t.Fatalf("counted %d messages in %d bytes", n, tail-head)
		}
	})
}
