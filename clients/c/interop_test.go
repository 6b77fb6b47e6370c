package cclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
)

func asShort(err error, target **shmbus.ShortBufferError) bool { return errors.As(err, target) }

// testCtx bounds a test's blocking Go calls, so that a bus that stops
// flowing fails the test instead of hanging it.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Go and C peers on one bus, in every wake mode and producer mode, with
// checksummed messages of every size: small ones, and large ones of
// several MiB that travel as about a hundred fragments each. Producers
// pause now and then so the consumer sleeps on the data doorbell, and the
// lanes are small enough that producers sleep on the space doorbells.

var interopGen = gen{Min: tmHeader, Max: 3000, BigEvery: 400, BigSize: 3<<20 + 17, Prio: "cycle"}

const interopN = 1600

func interopOptions(sem, spsc bool) shmbus.Options {
	return shmbus.Options{Priorities: 4, LaneCapacity: 256 << 10, MaxMessage: 8 << 20,
		Wake: wakeOf(sem), Producers: producersOf(spsc)}
}

// TestGoProducerCConsumer: a Go producer, the C consumer.
func TestGoProducerCConsumer(t *testing.T) {
	needC(t)
	for _, sem := range []bool{false, true} {
		for _, spsc := range []bool{false, true} {
			t.Run(busMode(sem, spsc), func(t *testing.T) {
				bus, name := newBus(t, interopOptions(sem, spsc))
				cons := startC(t, cSan, "consume", name, "--count", strconv.Itoa(interopN), "--exact")
				if err := goProduce(testCtx(t), bus, 7, interopN, interopGen, false); err != nil {
					t.Fatalf("%v\nC consumer: %s", err, cons.errb.String())
				}
				out := cons.wait(t, 60*time.Second)
				if !strings.Contains(out, "producer 7 count 1600 complete") || !strings.Contains(out, "ok msgs=1600") {
					t.Fatalf("C consumer output:\n%s", out)
				}
				checkStats(t, bus, interopN)
			})
		}
	}
}

// TestCProducerGoConsumer: the C producer, a Go consumer.
func TestCProducerGoConsumer(t *testing.T) {
	needC(t)
	for _, sem := range []bool{false, true} {
		for _, spsc := range []bool{false, true} {
			t.Run(busMode(sem, spsc), func(t *testing.T) {
				bus, name := newBus(t, interopOptions(sem, spsc))
				prod := startC(t, cSan, append([]string{"produce", name, "--id", "3", "--count", strconv.Itoa(interopN),
					"--pause-every", "300", "--pause-us", "2000"}, interopGen.args()...)...)
				ck := newChecker()
				if err := goConsume(bus, interopN, ck, 20*time.Second); err != nil {
					t.Fatal(err)
				}
				prod.wait(t, 10*time.Second)
				if err := ck.complete(3, interopN); err != nil {
					t.Fatal(err)
				}
				checkStats(t, bus, interopN)
			})
		}
	}
}

// checkStats checks that the bus's counters say n messages went in and
// out (both sides flush them when they go idle or close) and that the bus
// is empty.
func checkStats(t *testing.T, bus *shmbus.Bus, n uint64) {
	t.Helper()
	st, err := bus.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var in, out uint64
	for _, l := range st.Lanes {
		in += l.MsgsIn
		out += l.MsgsOut
		if l.Used() != 0 {
			t.Errorf("lane still holds %d bytes", l.Used())
		}
	}
	if in != n || out != n {
		t.Errorf("statistics: %d messages in, %d out, want %d", in, out, n)
	}
}

// TestMixedProducers: two C producers and a Go producer at once on an MPSC
// bus, with a Go consumer and with the C consumer.
func TestMixedProducers(t *testing.T) {
	needC(t)
	g := gen{Min: tmHeader, Max: 2000, BigEvery: 500, BigSize: 2<<20 + 5, Prio: "rand"}
	const n = 1500
	for _, sem := range []bool{false, true} {
		for _, consumer := range []string{"go", "c"} {
			t.Run(busMode(sem, false)+"/"+consumer+"-consumer", func(t *testing.T) {
				bus, name := newBus(t, interopOptions(sem, false))
				var cons *cmdC
				if consumer == "c" {
					cons = startC(t, cSan, "consume", name, "--count", strconv.Itoa(3*n), "--exact")
				}
				for _, k := range []string{"1", "2"} {
					startC(t, cBin, append([]string{"produce", name, "--id", k, "--count", strconv.Itoa(n),
						"--pause-every", "200", "--pause-us", "1000"}, g.args()...)...)
				}
				goErr := make(chan error, 1)
				go func() { goErr <- goProduce(testCtx(t), bus, 3, n, g, false) }()
				if consumer == "go" {
					ck := newChecker()
					if err := goConsume(bus, 3*n, ck, 20*time.Second); err != nil {
						t.Fatal(err)
					}
					for k := uint32(1); k <= 3; k++ {
						if err := ck.complete(k, n); err != nil {
							t.Error(err)
						}
					}
				} else {
					out := cons.wait(t, 60*time.Second)
					for k := 1; k <= 3; k++ {
						if want := fmt.Sprintf("producer %d count %d complete", k, n); !strings.Contains(out, want) {
							t.Errorf("C consumer output lacks %q:\n%s", want, out)
						}
					}
				}
				if err := <-goErr; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestPriorityOrder fills a bus while no consumer runs, then drains it: the
// consumer must see the highest priority first, and each producer's
// messages of one priority in the order sent. Large (fragmented) messages
// are among them.
func TestPriorityOrder(t *testing.T) {
	needC(t)
	g := gen{Min: tmHeader, Max: 2000, BigEvery: 100, BigSize: 200 << 10, Prio: "rand"}
	const n = 400
	opts := shmbus.Options{Priorities: 4, LaneCapacity: 2 << 20, MaxMessage: 1 << 20}
	check := func(t *testing.T, prios []int) {
		if len(prios) != n {
			t.Fatalf("%d messages drained, want %d", len(prios), n)
		}
		counts := map[int]int{}
		for i, p := range prios {
			counts[p]++
			if i > 0 && p > prios[i-1] {
				t.Fatalf("message %d has priority %d after one of priority %d", i, p, prios[i-1])
			}
		}
		if len(counts) != 4 {
			t.Fatalf("priorities used: %v; the test needs all four", counts)
		}
	}
	t.Run("c-producer/go-consumer", func(t *testing.T) {
		bus, name := newBus(t, opts)
		startC(t, cSan, append([]string{"produce", name, "--id", "4", "--count", strconv.Itoa(n), "--try"}, g.args()...)...).wait(t, 30*time.Second)
		ck := newChecker()
		if err := goConsume(bus, n, ck, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := ck.complete(4, n); err != nil {
			t.Fatal(err)
		}
		check(t, ck.prios)
	})
	t.Run("go-producer/c-consumer", func(t *testing.T) {
		bus, name := newBus(t, opts)
		if err := goProduce(testCtx(t), bus, 5, n, g, true); err != nil {
			t.Fatal(err)
		}
		out := startC(t, cSan, "consume", name, "--count", strconv.Itoa(n), "--exact", "--log").wait(t, 30*time.Second)
		var prios []int
		for _, line := range strings.Split(out, "\n") {
			var k, seq, prio, size int
			if _, err := fmt.Sscanf(line, "msg %d %d %d %d", &k, &seq, &prio, &size); err == nil {
				prios = append(prios, prio)
			}
		}
		check(t, prios)
	})
}

// procState returns the state letter of pid from /proc/PID/stat.
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// stopAndKill waits until the C producer c says it is stopping (its claim
// hook raised SIGSTOP while it holds a claim), checks that it is stopped,
// then SIGKILLs it.
func stopAndKill(t *testing.T, c *cmdC) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(c.out.String(), "stopping") {
		if time.Now().After(deadline) {
			t.Fatalf("producer never reached its stop point; stderr:\n%s", c.errb.String())
		}
		select {
		case <-c.done:
			t.Fatalf("producer exited before its stop point: %v\n%s", c.err, c.errb.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	for procState(c.Process.Pid) != 'T' {
		if time.Now().After(deadline) {
			t.Fatal("producer did not stop")
		}
		time.Sleep(time.Millisecond)
	}
	c.Process.Signal(unix.SIGKILL)
	<-c.done
}

// TestCProducerKilledMidClaim: a C producer is stopped while it holds a
// claim (after moving the tail; before or after confirming it) and
// SIGKILLed. The Go consumer must prove it dead, pad over its claim (rule
// a or b of layout.md 5.8), and go on: the other producers' messages keep
// flowing, and everything published arrives.
func TestCProducerKilledMidClaim(t *testing.T) {
	needC(t)
	g := gen{Min: tmHeader, Max: 500, Prio: "cycle"}
	const n, stopAt = 3000, 1000
	for _, sem := range []bool{false, true} {
		for _, stage := range []string{"claim", "tail"} {
			t.Run(busMode(sem, false)+"/"+stage, func(t *testing.T) {
				bus, name := newBus(t, shmbus.Options{Priorities: 2, LaneCapacity: 64 << 10, Wake: wakeOf(sem)})
				victim := startC(t, cBin, append([]string{"produce", name, "--id", "1", "--count", strconv.Itoa(n),
					"--stop-at", strconv.Itoa(stopAt), "--stop-stage", stage}, g.args()...)...)
				other := startC(t, cBin, append([]string{"produce", name, "--id", "2", "--count", strconv.Itoa(n),
					"--pause-every", "100", "--pause-us", "1000"}, g.args()...)...)
				goErr := make(chan error, 1)
				go func() { goErr <- goProduce(testCtx(t), bus, 3, n, g, false) }()
				ck := newChecker()
				consErr := make(chan error, 1)
				go func() { consErr <- goConsume(bus, stopAt+2*n, ck, 20*time.Second) }()
				stopAndKill(t, victim)
				if err := <-consErr; err != nil {
					t.Fatal(err)
				}
				other.wait(t, 10*time.Second)
				if err := <-goErr; err != nil {
					t.Fatal(err)
				}
				for k, want := range map[uint32]int{1: stopAt, 2: n, 3: n} {
					if err := ck.complete(k, want); err != nil {
						t.Error(err)
					}
				}
				st, err := bus.Stats()
				if err != nil {
					t.Fatal(err)
				}
				var rec uint64
				for _, l := range st.Lanes {
					rec += l.Recovered
				}
				if rec != 1 {
					t.Errorf("%d claims recovered, want 1", rec)
				}
			})
		}
	}
}

// TestSPSCTakeover: the one producer of a single-producer bus, a C process,
// is killed holding a claim; a new C producer takes the role over from the
// dead one and the Go consumer recovers the claim and gets everything.
func TestSPSCTakeover(t *testing.T) {
	needC(t)
	g := gen{Min: tmHeader, Max: 500, Prio: "cycle"}
	bus, name := newBus(t, shmbus.Options{Priorities: 2, LaneCapacity: 64 << 10, Producers: shmbus.SingleProducer})
	ck := newChecker()
	consErr := make(chan error, 1)
	go func() { consErr <- goConsume(bus, 700+1000, ck, 20*time.Second) }()
	victim := startC(t, cBin, append([]string{"produce", name, "--id", "1", "--count", "2000", "--stop-at", "700"}, g.args()...)...)
	stopAndKill(t, victim)
	startC(t, cBin, append([]string{"produce", name, "--id", "2", "--count", "1000"}, g.args()...)...).wait(t, 20*time.Second)
	if err := <-consErr; err != nil {
		t.Fatal(err)
	}
	if err := ck.complete(1, 700); err != nil {
		t.Error(err)
	}
	if err := ck.complete(2, 1000); err != nil {
		t.Error(err)
	}
}

// TestCConsumerRecovers: the C consumer recovers the claims of dead
// producers, C ones stopped and killed mid-claim and a Go one that kills
// itself right after claiming, while a Go producer keeps sending.
func TestCConsumerRecovers(t *testing.T) {
	needC(t)
	g := gen{Min: tmHeader, Max: 300, Prio: "0"}
	const n, stopAt = 2000, 600
	for _, sem := range []bool{false, true} {
		for _, victimKind := range []string{"c-claim", "c-tail", "go"} {
			t.Run(busMode(sem, false)+"/"+victimKind, func(t *testing.T) {
				bus, name := newBus(t, shmbus.Options{Priorities: 1, LaneCapacity: 32 << 10, Wake: wakeOf(sem)})
				cons := startC(t, cSan, "consume", name, "--count", strconv.Itoa(stopAt+n), "--exact", "--timeout-ms", "20000")
				if victimKind == "go" {
					cmd := exec.Command(os.Args[0], "-test.run=^$")
					cmd.Env = append(os.Environ(), roleEnv+"=go-producer-die", "SHMBUS_NAME="+name, "SHMBUS_K=1",
						"SHMBUS_N="+strconv.Itoa(n), "SHMBUS_DIE_AT="+strconv.Itoa(stopAt))
					err := cmd.Run()
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
						t.Fatalf("go producer: %v, want death by SIGKILL", err)
					}
				} else {
					victim := startC(t, cBin, append([]string{"produce", name, "--id", "1", "--count", strconv.Itoa(n),
						"--stop-at", strconv.Itoa(stopAt), "--stop-stage", strings.TrimPrefix(victimKind, "c-")}, g.args()...)...)
					stopAndKill(t, victim)
				}
				if err := goProduce(testCtx(t), bus, 2, n, g, false); err != nil {
					t.Fatal(err)
				}
				out := cons.wait(t, 30*time.Second)
				for _, want := range []string{fmt.Sprintf("producer 1 count %d complete", stopAt), fmt.Sprintf("producer 2 count %d complete", n)} {
					if !strings.Contains(out, want) {
						t.Errorf("C consumer output lacks %q:\n%s", want, out)
					}
				}
				st, err := bus.Stats()
				if err != nil {
					t.Fatal(err)
				}
				if st.Lanes[0].Recovered != 1 {
					t.Errorf("%d claims recovered, want 1", st.Lanes[0].Recovered)
				}
			})
		}
	}
}
