package shmbus

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// BenchmarkOpen opens and closes a bus of 1 MiB and one of 1 GiB and reads
// its statistics, as `shmbus stat` and `ls` do. Opening maps the segment
// without touching its lanes, so both should cost the same; faults/op counts
// the pages an open touched (minor page faults), which must not grow with
// the bus.
func BenchmarkOpen(b *testing.B) {
	for _, size := range []struct {
		name string
		lane int
	}{{"1MiB", 1 << 20}, {"1GiB", 1 << 30}} {
		b.Run(size.name, func(b *testing.B) {
			dir := b.TempDir()
			if _, err := os.Stat("/dev/shm"); err == nil {
				dir = "/dev/shm"
			}
			name := fmt.Sprintf("bench-open-%d", time.Now().UnixNano())
			bus, err := Create(name, &Options{Dir: dir, LaneCapacity: size.lane, Producers: SingleProducer})
			if err != nil {
				b.Skipf("create a %s bus: %v", size.name, err)
			}
			defer func() { _ = Remove(dir, name) }()
			if err := bus.Close(); err != nil {
				b.Fatal(err)
			}
			before := minorFaults(b)
			b.ResetTimer()
			for range b.N {
				o, err := Open(name, &OpenOptions{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := o.Stats(); err != nil {
					b.Fatal(err)
				}
				if err := o.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(minorFaults(b)-before)/float64(b.N), "faults/op")
		})
	}
}

// minorFaults is the process's count of minor page faults so far.
func minorFaults(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Skipf("getrusage: %v", err)
	}
	return ru.Minflt
}
