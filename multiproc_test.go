package shmbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/internal/failpoint"
)

// Cross-process tests: the parent creates the bus and consumes; producers
// are re-executed copies of the test binary.

func init() {
	roles["producer"] = roleProducer
	roles["idle-consumer"] = roleIdleConsumer
}

// roleProducer sends SHMBUS_N test messages as producer SHMBUS_K. Every
// SHMBUS_PAUSE messages it sleeps 2ms, so the consumer runs dry and sleeps.
// With SHMBUS_DIE_AT it kills itself with SIGKILL right after claiming the
// space of message DIE_AT, before writing or publishing anything in it.
func roleProducer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	k, n, pause := uint32(envInt("SHMBUS_K")), envInt("SHMBUS_N"), envInt("SHMBUS_PAUSE")
	if s := os.Getenv("SHMBUS_DIE_AT"); s != "" {
		dieAt, _ := strconv.Atoi(s)
		claims := 0
		failpoint.AfterClaim.Set(func() {
			if claims == dieAt {
				unix.Kill(os.Getpid(), unix.SIGKILL)
				time.Sleep(time.Hour) // SIGKILL arrives first
			}
			claims++
		})
	}
	max := bus.MaxRecordPayload()
	buf := make([]byte, max)
	ctx := context.Background()
	for seq := 0; seq < n; seq++ {
		if pause > 0 && seq%pause == pause-1 {
			time.Sleep(2 * time.Millisecond)
		}
		if err := p.Send(ctx, testMsg(buf, k, uint32(seq), max), 0); err != nil {
			return fmt.Errorf("send %d: %w", seq, err)
		}
	}
	return p.Close()
}

// roleIdleConsumer blocks in Receive on an empty bus for one second and
// prints the CPU time it used meanwhile, in microseconds.
func roleIdleConsumer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	c, err := bus.NewConsumer()
	if err != nil {
		return err
	}
	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _, err = c.Receive(ctx, make([]byte, 64))
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("receive on empty bus: %v", err)
	}
	cpu := func(r unix.Rusage) int64 { return r.Utime.Nano()/1000 + r.Stime.Nano()/1000 }
	fmt.Println(cpu(after) - cpu(before))
	return nil
}

var wakeModes = []WakeMode{WakeFutex, WakeSem}

func newBus(t *testing.T, opts *Options) *Bus {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", os.Getpid(), time.Now().UnixNano())
	b, err := Create(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Remove(); err != nil && !errors.Is(err, ErrNotExist) {
			t.Errorf("remove: %v", err)
		}
	})
	return b
}

// consumeAll receives until every producer sent want[k] messages (or
// the children exited and nothing more comes) and checks each message.
func consumeAll(t *testing.T, b *Bus, c *Consumer, want map[uint32]uint32, done <-chan struct{}) {
	t.Helper()
	chk := newChecker(t, b.MaxRecordPayload())
	total, expect := 0, 0
	for _, n := range want {
		expect += int(n)
	}
	buf := make([]byte, b.MaxRecordPayload())
	idleSince := time.Time{}
	for total < expect {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		n, _, err := c.Receive(ctx, buf)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			select {
			case <-done:
				if idleSince.IsZero() {
					idleSince = time.Now()
				} else if time.Since(idleSince) > 5*time.Second {
					t.Fatalf("producers exited; received %d of %d messages (per producer: %v)", total, expect, chk.next)
				}
			default:
			}
			continue
		}
		if err != nil {
			t.Fatalf("receive after %d messages: %v", total, err)
		}
		idleSince = time.Time{}
		if err := chk.check(buf[:n]); err != nil {
			t.Fatalf("after %d messages: %v", total, err)
		}
		total++
	}
	for k, n := range want {
		if chk.next[k] != n {
			t.Fatalf("producer %d: received %d, want %d", k, chk.next[k], n)
		}
	}
	if n, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("extra message after all expected (%d bytes, err %v)", n, err)
	}
}

// TestCrossProcess sends a million messages of random sizes, from 1 byte
// to the record maximum, from 1 producer process (SPSC) or 3 (MPSC) to the
// consumer, in both wake modes. The producers pause now and then, so the
// consumer sleeps and is woken many times.
func TestCrossProcess(t *testing.T) {
	total := 1_000_000
	if testing.Short() {
		total = 100_000
	}
	for _, wake := range wakeModes {
		for _, producers := range []int{1, 3} {
			mode := map[int]ProducerMode{1: SingleProducer, 3: MultiProducer}[producers]
			t.Run(fmt.Sprintf("%v/producers=%d", wake, producers), func(t *testing.T) {
				b := newBus(t, &Options{Wake: wake, LaneCapacity: 64 << 10, Producers: mode, startPosition: 1<<32 - 8<<10})
				c, err := b.NewConsumer()
				if err != nil {
					t.Fatal(err)
				}
				per := total / producers
				want := map[uint32]uint32{}
				done := make(chan struct{})
				errs := make(chan error, producers)
				for k := 0; k < producers; k++ {
					want[uint32(k)] = uint32(per)
					cmd := child(t, "producer", "SHMBUS_NAME="+b.Name(), fmt.Sprint("SHMBUS_K=", k), fmt.Sprint("SHMBUS_N=", per), fmt.Sprint("SHMBUS_PAUSE=", per/300))
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					go func() { errs <- waitTimeout(cmd, 5*time.Minute) }()
				}
				go func() {
					for i := 0; i < producers; i++ {
						if err := <-errs; err != nil {
							t.Errorf("producer: %v", err)
						}
					}
					close(done)
				}()
				consumeAll(t, b, c, want, done)
				<-done
				c.Close()
				st, _ := b.Stats()
				if st.ConsumerSleeps < 20 || st.ConsumerWakes < 20 {
					t.Errorf("consumer slept %d times and was woken %d times; want many", st.ConsumerSleeps, st.ConsumerWakes)
				}
				if l := st.Lanes[0]; l.MsgsIn != uint64(total/producers*producers) || l.MsgsOut != l.MsgsIn || l.BytesIn != l.BytesOut {
					t.Errorf("lane statistics %+v", l)
				}
				t.Logf("consumer sleeps %d, wakes %d, full events %d, producer sleeps %d", st.ConsumerSleeps, st.ConsumerWakes, st.Lanes[0].FullEvents, st.Lanes[0].SpaceSleeps)
			})
		}
	}
}

// TestProducerKilledMidClaim kills a producer process with SIGKILL after it
// claimed space and before it wrote or published anything there. The
// consumer must prove it dead, skip its claim, and deliver everything the
// victim published before and every message of the survivors.
func TestProducerKilledMidClaim(t *testing.T) {
	for _, wake := range wakeModes {
		for _, mode := range []ProducerMode{MultiProducer, SingleProducer} {
			t.Run(fmt.Sprintf("%v/%v", wake, map[ProducerMode]string{0: "mpsc", 1: "spsc"}[mode]), func(t *testing.T) {
				b := newBus(t, &Options{Wake: wake, LaneCapacity: 64 << 10, Producers: mode})
				c, err := b.NewConsumer()
				if err != nil {
					t.Fatal(err)
				}
				const dieAt, n = 3000, 20000
				victim := child(t, "producer", "SHMBUS_NAME="+b.Name(), "SHMBUS_K=0", fmt.Sprint("SHMBUS_N=", n), fmt.Sprint("SHMBUS_DIE_AT=", dieAt))
				if err := victim.Start(); err != nil {
					t.Fatal(err)
				}
				want := map[uint32]uint32{0: dieAt}
				// Survivors: with MPSC they run alongside the victim; with
				// SPSC one takes the producer role over once the victim is
				// dead (the parent consumes meanwhile, so the victim gets to
				// its failpoint).
				survivors := 2
				if mode == SingleProducer {
					survivors = 1
				}
				victimErr := make(chan error, 1)
				go func() { victimErr <- waitTimeout(victim, 2*time.Minute) }()
				done := make(chan struct{})
				errs := make(chan error, survivors)
				for k := 1; k <= survivors; k++ {
					want[uint32(k)] = n
				}
				go func() {
					if mode == SingleProducer {
						if err := <-victimErr; err == nil {
							t.Error("victim exited cleanly; the failpoint did not fire")
						}
					}
					for k := 1; k <= survivors; k++ {
						cmd := child(t, "producer", "SHMBUS_NAME="+b.Name(), fmt.Sprint("SHMBUS_K=", k), fmt.Sprint("SHMBUS_N=", n))
						if err := cmd.Start(); err != nil {
							errs <- err
							continue
						}
						go func() { errs <- waitTimeout(cmd, 2*time.Minute) }()
					}
					for i := 0; i < survivors; i++ {
						if err := <-errs; err != nil {
							t.Errorf("survivor: %v", err)
						}
					}
					close(done)
				}()
				consumeAll(t, b, c, want, done)
				<-done
				if mode == MultiProducer {
					if err := <-victimErr; err == nil {
						t.Fatal("victim exited cleanly; the failpoint did not fire")
					}
				}
				// Nothing after is blocked: a new producer's messages flow
				// (past the victim's claim, wherever it ended up).
				late := child(t, "producer", "SHMBUS_NAME="+b.Name(), "SHMBUS_K=9", "SHMBUS_N=1000")
				if err := late.Start(); err != nil {
					t.Fatal(err)
				}
				lateDone := make(chan struct{})
				go func() {
					if err := waitTimeout(late, time.Minute); err != nil {
						t.Errorf("late producer: %v", err)
					}
					close(lateDone)
				}()
				consumeAll(t, b, c, map[uint32]uint32{9: 1000}, lateDone)
				<-lateDone
				st, _ := b.Stats()
				if st.Lanes[0].Recovered != 1 {
					t.Fatalf("recovered %d claims, want 1", st.Lanes[0].Recovered)
				}
			})
		}
	}
}

// TestIdleConsumerCPU: a consumer blocked for a second on an empty bus
// uses less than 20 ms of CPU, in both wake modes.
func TestIdleConsumerCPU(t *testing.T) {
	for _, wake := range wakeModes {
		t.Run(wake.String(), func(t *testing.T) {
			b := newBus(t, &Options{Wake: wake})
			cmd := child(t, "idle-consumer", "SHMBUS_NAME="+b.Name())
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			us, err := strconv.Atoi(string(out[:len(out)-1]))
			if err != nil {
				t.Fatalf("child printed %q", out)
			}
			t.Logf("CPU used while blocked 1s: %d µs", us)
			if us >= 20000 {
				t.Fatalf("blocked consumer used %d µs of CPU in 1 s; want < 20000", us)
			}
		})
	}
}
