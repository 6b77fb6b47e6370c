package shmbus

import (
	"errors"
	"sync"
	"testing"
)

// TestCloseDuringTraffic closes a bus while its producers and its consumer
// are in the middle of calls, many times over. Close must wait for every
// call inside a handle's gate (a call that touched the unmapped segment
// would fault, which Guard reports as ErrTruncated) and every call after it
// must fail with ErrClosed.
func TestCloseDuringTraffic(t *testing.T) {
	rounds := 50
	if testing.Short() {
		rounds = 10
	}
	for round := range rounds {
		b := newBus(t, &Options{LaneCapacity: 4096, Priorities: 2})
		var handles []func() error
		for range 2 {
			p, err := b.NewProducer()
			if err != nil {
				t.Fatal(err)
			}
			msg := make([]byte, 100)
			handles = append(handles, func() error { return p.TrySend(msg, 1) })
		}
		c, err := b.NewConsumer()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		handles = append(handles, func() error { _, _, err := c.TryReceive(buf); return err })
		var wg sync.WaitGroup
		started := make(chan struct{}, len(handles))
		errs := make(chan error, len(handles))
		for _, call := range handles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					err := call()
					if i == 100 {
						started <- struct{}{}
					}
					switch {
					case err == nil, errors.Is(err, ErrFull), errors.Is(err, ErrEmpty):
					case errors.Is(err, ErrClosed):
						return
					default:
						errs <- err
						return
					}
				}
			}()
		}
		for range handles {
			<-started
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: a call running while the bus closed: %v", round, err)
		}
	}
}
