package shmbus

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// TestPeekRelease: a peeked message stays on the bus until Release, is
// found again by the next peek or receive, and is left to the next consumer
// when its consumer closes without releasing it; whole and reassembled
// messages alike.
func TestPeekRelease(t *testing.T) {
	b, err := Create("peek", &Options{Priorities: 2, LaneCapacity: 64 << 10, MaxMessage: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16) // larger than a record
	msgs := [][]byte{[]byte("first"), big, []byte("third")}
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sent := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := p.Send(context.Background(), m, 0); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	buf := make([]byte, 1<<20)
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, want := range msgs {
		for try := 0; try < 2; try++ {
			n, _, err := c.Peek(ctx, buf)
			if err != nil || !bytes.Equal(buf[:n], want) {
				t.Fatalf("message %d, peek %d: %d bytes, %v", i, try, n, err)
			}
		}
		if i == 1 {
			// Closed without a release: the next consumer gets it again.
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if c, err = b.NewConsumer(); err != nil {
				t.Fatal(err)
			}
			n, _, err := c.Peek(ctx, buf)
			if err != nil || !bytes.Equal(buf[:n], want) {
				t.Fatalf("message %d after a new consumer: %d bytes, %v", i, n, err)
			}
		}
		if err := c.Release(); err != nil {
			t.Fatal(err)
		}
		if err := c.Release(); err != nil { // nothing peeked: nothing done
			t.Fatal(err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryPeek(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after releasing everything: %v, want ErrEmpty", err)
	}
	// A receive after a peek takes the peeked message; Release then has
	// nothing to do.
	if err := p.Send(context.Background(), []byte("last"), 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryPeek(buf); err != nil {
		t.Fatal(err)
	}
	if n, prio, err := c.TryReceive(buf); err != nil || string(buf[:n]) != "last" || prio != 1 {
		t.Fatalf("receive after a peek: %q at %d, %v", buf[:n], prio, err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("the bus should be empty: %v", err)
	}
	c.Close()
}
