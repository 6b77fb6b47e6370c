package shmbus

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestIdleConsumerWokenPastDeadClaim: a consumer asleep on an empty bus
// (the idle backstop, made an hour here so that it cannot be what wakes
// it) while a producer claims space and dies before publishing it, then
// another producer sends a message behind the dead claim. Its ring must
// wake the consumer, which recovers the dead claim and receives the
// message: an idle consumer relies on no timer for that.
func TestIdleConsumerWokenPastDeadClaim(t *testing.T) {
	defer func(d time.Duration) { idleBackstop = d }(idleBackstop)
	idleBackstop = time.Hour
	for _, wake := range wakeModes {
		for _, mode := range []ProducerMode{MultiProducer, SingleProducer} {
			t.Run(fmt.Sprintf("%v/%v", wake, map[ProducerMode]string{0: "mpsc", 1: "spsc"}[mode]), func(t *testing.T) {
				b := newBus(t, &Options{Wake: wake, Producers: mode})
				c, err := b.NewConsumer()
				if err != nil {
					t.Fatal(err)
				}
				type result struct {
					n   int
					err error
				}
				got := make(chan result, 1)
				buf := make([]byte, b.MaxRecordPayload())
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				go func() {
					n, _, err := c.Receive(ctx, buf)
					got <- result{n, err}
				}()
				// The consumer is asleep once it has announced itself.
				for b.data.Sleepers() == 0 {
					time.Sleep(time.Millisecond)
				}
				victim := child(t, "producer", "SHMBUS_NAME="+b.Name(), "SHMBUS_K=0", "SHMBUS_N=1", "SHMBUS_DIE_AT=0")
				if err := victim.Run(); err == nil {
					t.Fatal("victim exited cleanly; the failpoint did not fire")
				}
				survivor := child(t, "producer", "SHMBUS_NAME="+b.Name(), "SHMBUS_K=1", "SHMBUS_N=1")
				if err := waitTimeoutRun(survivor, time.Minute); err != nil {
					t.Fatalf("survivor: %v", err)
				}
				r := <-got
				if r.err != nil {
					t.Fatalf("receive: %v", r.err)
				}
				if r.n == 0 || buf[0] != 1 {
					t.Fatalf("received %d bytes, not producer 1's message", r.n)
				}
				if err := newChecker(t, b.MaxRecordPayload()).check(buf[:r.n]); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
