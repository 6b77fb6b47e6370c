package shmbus

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkHotPath is the CPU cost of one message through the API with no
// second core involved: one goroutine calls Send then TryReceive (or Poll)
// for each 64-byte message. Unlike BenchmarkBus, whose figure depends on
// how the two goroutines meet (cache lines moving between cores, sleeps and
// wake-ups), this one counts the instructions of the path, and stays
// comparable on a loaded machine.
func BenchmarkHotPath(b *testing.B) {
	for _, mode := range []string{"receive", "poll"} {
		b.Run(fmt.Sprintf("size=64/%s", mode), func(b *testing.B) {
			bus, err := Create(fmt.Sprintf("bench-hot-%d", time.Now().UnixNano()), &Options{Producers: SingleProducer})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Remove()
			p, err := bus.NewProducer()
			if err != nil {
				b.Fatal(err)
			}
			c, err := bus.NewConsumer()
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			msg, buf := make([]byte, 64), make([]byte, 64)
			count := func([]byte, int) {}
			b.ReportAllocs()
			b.SetBytes(64)
			for b.Loop() {
				if err := p.Send(ctx, msg, 0); err != nil {
					b.Fatal(err)
				}
				var err error
				if mode == "poll" {
					_, err = c.Poll(1, count)
				} else {
					_, _, err = c.TryReceive(buf)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
