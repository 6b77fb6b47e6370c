package cclient

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

// TestCFanOut: on a fan-out bus the C consumer is refused, and the C
// producer works: two Go subscriptions get every message (large ones
// included) through lanes small enough that the producer waits for room,
// which the Go subscribers clean for it.
func TestCFanOut(t *testing.T) {
	needC(t)
	o := interopOptions(false, false)
	o.LaneCapacity = 64 << 10
	o.Subscriptions = 2
	bus, name := newBus(t, o)
	c := startC(t, cBin, "consume", name, "--count", "1")
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("C consumer on a fan-out bus still running")
	}
	if c.err == nil || !strings.Contains(c.errb.String(), "fan-out bus") {
		t.Fatalf("C consumer on a fan-out bus: %v\n%s", c.err, c.errb.String())
	}
	ctx := testCtx(t)
	const n = 600
	errs := make(chan error, 2)
	for _, sub := range []string{"s1", "s2"} {
		s, err := bus.Subscribe(ctx, sub, &shmbus.SubscribeOptions{From: shmbus.FromOldest})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer s.Close()
			ck := newChecker()
			buf := make([]byte, 8<<20)
			for i := 0; i < n; i++ {
				rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				m, err := s.Receive(rctx, buf)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if err := ck.check(buf[:m.N], m.Prio); err != nil {
					errs <- err
					return
				}
			}
			errs <- ck.complete(4, n)
		}()
	}
	prod := startC(t, cSan, append([]string{"produce", name, "--id", "4", "--count", strconv.Itoa(n)}, interopGen.args()...)...)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("%v\nC producer: %s", err, prod.errb.String())
		}
	}
	prod.wait(t, 30*time.Second)
	if _, err := bus.NewConsumer(); !errors.Is(err, shmbus.ErrFanOut) {
		t.Fatalf("Go consumer on a fan-out bus: %v", err)
	}
}
