package cclient

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

// Cross-process throughput with the C client on one side or both: b.N
// messages of 64 bytes on a one-lane MPSC futex bus with 1 MiB lanes.
// The C consumer verifies every message (CRC and the generator's bytes);
// the Go consumer only receives. Run with -benchtime=500000x, say.

var benchGen = gen{Min: 64, Max: 64, Prio: "0"}

func benchBus(b *testing.B) (*shmbus.Bus, string) {
	needC(b)
	return newBus(b, shmbus.Options{})
}

func report(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func BenchmarkCProducerGoConsumer(b *testing.B) {
	bus, name := benchBus(b)
	c, err := bus.NewConsumer()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<10)
	b.ResetTimer()
	start := time.Now()
	prod := startC(b, cBin, append([]string{"produce", name, "--id", "1", "--count", strconv.Itoa(b.N)}, benchGen.args()...)...)
	for i := 0; i < b.N; i++ {
		if _, _, err := c.Receive(context.Background(), buf); err != nil {
			b.Fatal(err)
		}
	}
	report(b, start)
	prod.wait(b, time.Minute)
}

func BenchmarkGoProducerCConsumer(b *testing.B) {
	bus, name := benchBus(b)
	b.ResetTimer()
	start := time.Now()
	cons := startC(b, cBin, "consume", name, "--count", strconv.Itoa(b.N))
	if err := goProduce(context.Background(), bus, 1, b.N, benchGen, false); err != nil {
		b.Fatal(err)
	}
	cons.wait(b, time.Minute)
	report(b, start)
}

func BenchmarkCProducerCConsumer(b *testing.B) {
	_, name := benchBus(b)
	b.ResetTimer()
	start := time.Now()
	cons := startC(b, cBin, "consume", name, "--count", strconv.Itoa(b.N))
	startC(b, cBin, append([]string{"produce", name, "--id", "1", "--count", strconv.Itoa(b.N)}, benchGen.args()...)...).wait(b, time.Minute)
	cons.wait(b, time.Minute)
	report(b, start)
}
