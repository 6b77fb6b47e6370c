package shmbus

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkFanOutProducer is the producer's cost per 64-byte message on a
// fan-out bus with 1 and with 4 blocking subscriptions (compare the two:
// the target is at most 1.1× for 4), and on a queue bus (subs=0). The
// subscriptions (or the consumer) drain every 4096 messages, outside the
// timed part, so only the producer is measured: its sends and the cleaning
// it does when the lane fills.
func BenchmarkFanOutProducer(b *testing.B) {
	for _, n := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			bus, err := Create(fmt.Sprintf("bench-fan-prod-%d", n), &Options{Subscriptions: n, LaneCapacity: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Remove()
			ctx := context.Background()
			var c *Consumer
			if n == 0 {
				if c, err = bus.NewConsumer(); err != nil {
					b.Fatal(err)
				}
			}
			var subs []*Subscription
			for i := range n {
				s, err := bus.Subscribe(ctx, fmt.Sprintf("s%d", i), nil)
				if err != nil {
					b.Fatal(err)
				}
				subs = append(subs, s)
			}
			p, err := bus.NewProducer()
			if err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, 64)
			f := func([]byte, int) {}
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%4096 == 4095 {
					b.StopTimer()
					for _, s := range subs {
						s.Poll(0, f)
					}
					if c != nil {
						c.Poll(0, f)
					}
					b.StartTimer()
				}
				if err := p.Send(ctx, msg, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFanOutSubscriber is one subscriber's cost per 64-byte message
// read in place (Poll, blocking) and copied (Receive, blocking and lossy),
// in batches of 4096 that the producer sends outside the timed part.
func BenchmarkFanOutSubscriber(b *testing.B) {
	for _, mode := range []string{"poll", "receive", "lossy-receive"} {
		b.Run(mode, func(b *testing.B) {
			bus, err := Create("bench-fan-sub-"+mode, &Options{Subscriptions: 1, LaneCapacity: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Remove()
			ctx := context.Background()
			s, err := bus.Subscribe(ctx, "s", &SubscribeOptions{Lossy: mode == "lossy-receive"})
			if err != nil {
				b.Fatal(err)
			}
			p, err := bus.NewProducer()
			if err != nil {
				b.Fatal(err)
			}
			msg, buf := make([]byte, 64), make([]byte, 64)
			f := func([]byte, int) {}
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; {
				b.StopTimer()
				k := min(4096, b.N-i)
				for range k {
					p.Send(ctx, msg, 0)
				}
				b.StartTimer()
				if mode == "poll" {
					for got := 0; got < k; {
						n, _ := s.Poll(k-got, f)
						got += n
					}
				} else {
					for range k {
						if _, err := s.TryReceive(buf); err != nil {
							b.Fatal(err)
						}
					}
				}
				i += k
			}
		})
	}
}

// BenchmarkFanOutFlow is messages flowing from one producer goroutine to
// subs subscriber goroutines at once (64 bytes, Poll): ns/op is per message
// sent, msgs/s per subscriber. subs=0 is a queue bus with its consumer.
func BenchmarkFanOutFlow(b *testing.B) {
	for _, n := range []int{0, 1, 3} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			bus, err := Create(fmt.Sprintf("bench-fan-flow-%d", n), &Options{Subscriptions: n, Producers: SingleProducer})
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Remove()
			ctx := context.Background()
			type poller interface {
				Poll(int, func([]byte, int)) (int, error)
				Wait(context.Context) error
			}
			var readers []poller
			if n == 0 {
				c, err := bus.NewConsumer()
				if err != nil {
					b.Fatal(err)
				}
				readers = append(readers, c)
			}
			for i := range n {
				s, err := bus.Subscribe(ctx, fmt.Sprintf("s%d", i), nil)
				if err != nil {
					b.Fatal(err)
				}
				readers = append(readers, s)
			}
			p, err := bus.NewProducer()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			go func() {
				msg := make([]byte, 64)
				for range b.N {
					p.Send(ctx, msg, 0)
				}
			}()
			done := make(chan struct{}, len(readers))
			f := func([]byte, int) {}
			for _, r := range readers {
				go func() {
					for got := 0; got < b.N; {
						k, _ := r.Poll(0, f)
						got += k
						if k == 0 {
							r.Wait(ctx)
						}
					}
					done <- struct{}{}
				}()
			}
			for range readers {
				<-done
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkFanOutRoundTrip is a 64-byte ping-pong between two goroutines
// over two buses: queue buses with a consumer each (subs=0), or fan-out
// buses read through one subscription each (subs=1). ns/op is one round
// trip.
func BenchmarkFanOutRoundTrip(b *testing.B) {
	for _, n := range []int{0, 1} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			ctx := context.Background()
			type receiver func([]byte) error
			var recv [2]receiver
			var send [2]*Producer
			for i := range 2 {
				bus, err := Create(fmt.Sprintf("bench-fan-rt-%d-%d", n, i), &Options{Subscriptions: n, Producers: SingleProducer})
				if err != nil {
					b.Fatal(err)
				}
				defer bus.Remove()
				if send[i], err = bus.NewProducer(); err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					c, err := bus.NewConsumer()
					if err != nil {
						b.Fatal(err)
					}
					recv[i] = func(buf []byte) error { _, _, err := c.Receive(ctx, buf); return err }
				} else {
					s, err := bus.Subscribe(ctx, "s", nil)
					if err != nil {
						b.Fatal(err)
					}
					recv[i] = func(buf []byte) error { _, err := s.Receive(ctx, buf); return err }
				}
			}
			msg := make([]byte, 64)
			go func() {
				buf := make([]byte, 64)
				for range b.N {
					if recv[0](buf) != nil {
						return
					}
					send[1].Send(ctx, buf, 0)
				}
			}()
			buf := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				send[0].Send(ctx, msg, 0)
				if err := recv[1](buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
