package ring

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shmbus/shmbus/layout"
)

// The benchmarks run a producer goroutine (or several) and the consumer in
// the benchmark goroutine over one shared mapping, as two processes would.
// ns/op is per message; msgs/s is reported too. Batched producers send 64
// messages per claim; the consumer always drains everything published per
// release (its natural batch).

func BenchmarkSPSC(b *testing.B) {
	for _, size := range []int{8, 64, 1024} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				benchRing(b, 0, 1, size, batch)
			})
		}
	}
}

func BenchmarkMPSC(b *testing.B) {
	for _, producers := range []int{1, 2} {
		for _, size := range []int{8, 64, 1024} {
			for _, batch := range []int{1, 64} {
				b.Run(fmt.Sprintf("producers=%d/size=%d/batch=%d", producers, size, batch), func(b *testing.B) {
					benchRing(b, layout.FlagMultiProducer, producers, size, batch)
				})
			}
		}
	}
}

func benchRing(b *testing.B, flags uint32, producers, size, batch int) {
	s := newTestSeg(b, layout.Config{Lanes: 1, LaneCapacity: 1 << 20, Flags: flags}, 0)
	c := s.consumer(b, 0)
	per := b.N / producers
	total := per * producers
	var wg sync.WaitGroup
	ps := make([]*Producer, producers)
	for i := range ps {
		ps[i] = s.producer(0, i)
	}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for i := range ps {
		wg.Add(1)
		go func(p *Producer) {
			defer wg.Done()
			msg := make([]byte, size)
			msgs := make([][]byte, batch)
			for j := range msgs {
				msgs[j] = msg
			}
			spin := &Spinner{}
			for sent := 0; sent < per; {
				var k int
				var err error
				if batch == 1 {
					if err = p.Send(msg); err == nil {
						k = 1
					}
				} else {
					k, err = p.SendBatch(msgs[:min(batch, per-sent)])
				}
				if err == ErrFull {
					p.WaitRoom(RecordSize(size), time.Time{}, nil, spin)
					continue
				}
				if err != nil {
					panic(err)
				}
				sent += k
			}
		}(ps[i])
	}
	spin := &Spinner{}
	var got int
	count := func(layout.Record, []byte) { got++ }
	for got < total {
		if k, _ := c.Poll(0, count); k == 0 {
			c.Wait(s.data, nil, time.Time{}, nil, spin)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "msgs/s")
}
