package ring

import (
	"testing"

	"github.com/shmbus/shmbus/layout"
)

// Depth counts what the lane holds from its positions and records, and
// what it cannot count it names.
func TestLaneDepth(t *testing.T) {
	cfg := layout.Config{Lanes: 1, LaneCapacity: 1024, RecordLimit: 128, Flags: layout.FlagMultiProducer}
	send := func(t *testing.T, p *Producer, n int, flags uint8) {
		t.Helper()
		b, err := p.Reserve(n, flags)
		if err != nil {
			t.Fatal(err)
		}
		clear(b)
		p.Commit()
	}
	whole := uint8(layout.FragBegin | layout.FragEnd)
	tests := []struct {
		name  string
		start uint64
		fill  func(t *testing.T, s *testSeg)
		want  Depth
	}{
		{name: "empty", fill: func(*testing.T, *testSeg) {}, want: Depth{}},
		{name: "three whole", fill: func(t *testing.T, s *testSeg) {
			p := s.producer(0, 0)
			for range 3 {
				send(t, p, 10, whole)
			}
		}, want: Depth{Bytes: 3 * 24, Messages: 3}},
		{name: "across the end of the ring", start: 1024 - 16, fill: func(t *testing.T, s *testSeg) {
			p := s.producer(0, 0)
			send(t, p, 20, whole) // 32 bytes: padding first
			send(t, p, 1, whole)
		}, want: Depth{Bytes: 16 + 32 + 16, Messages: 2}},
		{name: "taken, not released", fill: func(t *testing.T, s *testSeg) {
			p := s.producer(0, 0)
			send(t, p, 10, whole)
			send(t, p, 10, whole)
			c := s.consumer(t, 0)
			if _, _, err := c.Next(); err != nil {
				t.Fatal(err)
			}
		}, want: Depth{Bytes: 48, Messages: 2}},
		{name: "released", fill: func(t *testing.T, s *testSeg) {
			p := s.producer(0, 0)
			send(t, p, 10, whole)
			send(t, p, 10, whole)
			c := s.consumer(t, 0)
			c.Next()
			c.Release()
		}, want: Depth{Bytes: 24, Messages: 1}},
		{name: "unfinished and finished fragments", fill: func(t *testing.T, s *testSeg) {
			a, b := s.producer(0, 0), s.producer(0, 1)
			send(t, a, 100, layout.FragBegin)
			send(t, b, 100, layout.FragBegin)
			send(t, a, 100, 0)
			send(t, a, 8, layout.FragEnd)
		}, want: Depth{Bytes: 3*112 + 16, Messages: 1, Unfinished: 1}},
		{name: "claimed, not published", fill: func(t *testing.T, s *testSeg) {
			p, q := s.producer(0, 0), s.producer(0, 1)
			send(t, p, 10, whole)
			if _, err := q.Reserve(40, whole); err != nil {
				t.Fatal(err)
			}
			send(t, p, 10, whole) // behind the claim: not counted
		}, want: Depth{Bytes: 24 + 48 + 24, Messages: 1, Unpublished: 48 + 24}},
		{name: "damaged record", fill: func(t *testing.T, s *testSeg) {
			p := s.producer(0, 0)
			send(t, p, 10, whole)
			send(t, p, 10, whole)
			s.lanes[0].lengthWord(24).Store(4000)
		}, want: Depth{Bytes: 48, Messages: 1, Unreadable: true}},
		{name: "positions out of range", fill: func(t *testing.T, s *testSeg) {
			s.lanes[0].tail.Store(5000)
		}, want: Depth{Bytes: 5000, Unreadable: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSeg(t, cfg, tt.start)
			tt.fill(t, s)
			if got := s.lanes[0].Depth(); got != tt.want {
				t.Fatalf("Depth = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Depth never panics, loops or counts more than the lane can hold, whatever
// the shared bytes and positions say.
func FuzzLaneDepth(f *testing.F) {
	f.Add(uint64(0), uint64(48), []byte{24, 0, 0, 0, 1, 3, 0, 0})
	f.Add(uint64(1<<64-16), uint64(32), []byte{16, 0, 0, 0, 2, 0})
	f.Add(uint64(8), uint64(1032), []byte{255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, head, tail uint64, data []byte) {
		s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, Flags: layout.FlagMultiProducer}, 0)
		l := s.lanes[0]
		for i := 0; i < len(l.data); i += max(len(data), 1) {
			copy(l.data[i:], data)
		}
		l.head.Store(head)
		l.tail.Store(tail)
		d := l.Depth()
		if d.Bytes != tail-head {
			t.Fatalf("Bytes %d, positions say %d", d.Bytes, tail-head)
		}
		if d.Messages > 1024/layout.RecordAlign || d.Unpublished > 1024 {
			t.Fatalf("counted more than a lane holds: %+v", d)
		}
	})
}
