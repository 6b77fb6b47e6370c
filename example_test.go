package shmbus_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/shmbus/shmbus"
)

// A producer and a consumer on one bus. In real use they are in different
// processes: one calls Create, the others Open the bus by name.
func Example() {
	bus, err := shmbus.Create("example", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Remove()

	p, err := bus.NewProducer()
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := p.Send(ctx, []byte("hello, shared memory"), 0); err != nil {
		log.Fatal(err)
	}

	c, err := bus.NewConsumer()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	n, _, err := c.Receive(ctx, buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf[:n]))
	// Output: hello, shared memory
}

// Messages come out as POSIX mq_receive orders them: the oldest message
// of the highest priority first.
func Example_priorities() {
	bus, err := shmbus.Create("example-priorities", &shmbus.Options{Priorities: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Remove()
	p, _ := bus.NewProducer()
	c, _ := bus.NewConsumer()

	for _, m := range []struct {
		text string
		prio int
	}{{"routine 1", 0}, {"urgent 1", 2}, {"routine 2", 0}, {"normal", 1}, {"urgent 2", 2}} {
		if err := p.TrySend([]byte(m.text), m.prio); err != nil {
			log.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	for {
		n, prio, err := c.TryReceive(buf)
		if errors.Is(err, shmbus.ErrEmpty) {
			break
		}
		fmt.Println(prio, string(buf[:n]))
	}
	// Output:
	// 2 urgent 1
	// 2 urgent 2
	// 1 normal
	// 0 routine 1
	// 0 routine 2
}

// Zero-copy: reserve room in the ring, fill it in place, publish several
// messages with one Commit; receive them in place with Poll.
func ExampleProducer_Reserve() {
	bus, err := shmbus.Create("example-zero-copy", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Remove()
	p, _ := bus.NewProducer()
	c, _ := bus.NewConsumer()

	for i := 0; i < 3; i++ {
		buf, err := p.Reserve(0, 5)
		if err != nil {
			log.Fatal(err)
		}
		copy(buf, fmt.Sprintf("msg %d", i))
	}
	if err := p.Commit(); err != nil { // all three become visible at once
		log.Fatal(err)
	}
	n, err := c.Poll(0, func(payload []byte, prio int) {
		fmt.Printf("%s (priority %d)\n", payload, prio) // payload is shared memory: copy to keep it
	})
	fmt.Println(n, err)
	// Output:
	// msg 0 (priority 0)
	// msg 1 (priority 0)
	// msg 2 (priority 0)
	// 3 <nil>
}

// Receive waits until a message comes, the context ends, or the bus is
// closed.
func ExampleConsumer_Receive() {
	bus, err := shmbus.Create("example-deadline", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Remove()
	c, _ := bus.NewConsumer()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, _, err = c.Receive(ctx, make([]byte, 64))
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output: true
}

// A message larger than the receive buffer stays on the bus; the error
// says how large a buffer it needs.
func ExampleShortBufferError() {
	bus, err := shmbus.Create("example-short", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bus.Remove()
	p, _ := bus.NewProducer()
	c, _ := bus.NewConsumer()
	p.TrySend(make([]byte, 100), 0)

	_, _, err = c.TryReceive(make([]byte, 10))
	var short *shmbus.ShortBufferError
	if errors.As(err, &short) {
		n, _, err := c.TryReceive(make([]byte, short.Need))
		fmt.Println(short.Need, n, err)
	}
	// Output: 100 100 <nil>
}
