package shmbus

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkBus measures the Bus API in one process: a producer goroutine
// sends size-byte messages (one Send per message, or SendBatch of 64) and
// the benchmark goroutine receives them (TryReceive per message, or Poll).
// ns/op is per message.
// With several priority levels the producer cycles through them.
func BenchmarkBus(b *testing.B) {
	for _, prios := range []int{1, 4} {
		for _, size := range []int{64, 64 << 10} {
			for _, batch := range []bool{false, true} {
				b.Run(fmt.Sprintf("priorities=%d/size=%d/batch=%v", prios, size, batch), func(b *testing.B) {
					benchBus(b, prios, size, batch)
				})
			}
		}
	}
}

func benchBus(b *testing.B, prios, size int, batch bool) {
	bus, err := Create(fmt.Sprintf("bench-%d", time.Now().UnixNano()), &Options{Producers: SingleProducer, Priorities: prios})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Remove()
	p, _ := bus.NewProducer()
	c, _ := bus.NewConsumer()
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	go func() {
		msg := make([]byte, size)
		msgs := make([][]byte, 64)
		for i := range msgs {
			msgs[i] = msg
		}
		for sent := 0; sent < b.N; {
			prio := sent % prios
			if batch {
				k, _ := p.SendBatch(ctx, msgs[:min(64, b.N-sent)], prio)
				sent += k
			} else {
				p.Send(ctx, msg, prio)
				sent++
			}
		}
	}()
	buf := make([]byte, size)
	count := func([]byte, int) {}
	for got := 0; got < b.N; {
		if batch {
			k, _ := c.Poll(0, count)
			got += k
			if k == 0 {
				c.Wait(ctx)
			}
			continue
		}
		if _, _, err := c.TryReceive(buf); err == nil {
			got++
		} else {
			c.Wait(ctx)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
