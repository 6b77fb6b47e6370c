package shmbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// collector is a Deliver write that keeps copies of what it was handed
// and finishes with at most take of each batch (all if take < 0), failing
// with fail if it is set.
type collector struct {
	got   []string
	prios []int
	take  int
	fail  error
	calls int
}

func (c *collector) write(msgs [][]byte, prio int) (int, error) {
	c.calls++
	n := len(msgs)
	if c.take >= 0 {
		n = min(n, c.take)
	}
	for _, m := range msgs[:n] {
		c.got = append(c.got, string(m))
		c.prios = append(c.prios, prio)
	}
	return n, c.fail
}

func TestDeliver(t *testing.T) {
	b := newBus(t, &Options{Priorities: 2, LaneCapacity: 128 << 10, MaxMessage: 64 << 10})
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(prio int, msgs ...string) {
		t.Helper()
		for _, m := range msgs {
			if err := p.Send(context.Background(), []byte(m), prio); err != nil {
				t.Fatal(err)
			}
		}
	}
	waiting := func() uint64 {
		t.Helper()
		d, err := b.Waiting()
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, l := range d {
			n += l.Messages
		}
		return n
	}

	t.Run("all, highest priority first", func(t *testing.T) {
		send(0, "a", "b")
		send(1, "X")
		w := &collector{take: -1}
		n, err := c.Deliver(0, w.write)
		if err != nil || n != 3 || strings.Join(w.got, ",") != "X,a,b" || w.prios[0] != 1 || w.prios[1] != 0 {
			t.Fatalf("Deliver = %d, %v; got %q at %v", n, err, w.got, w.prios)
		}
		if k := waiting(); k != 0 {
			t.Fatalf("%d messages still waiting", k)
		}
		if n, err := c.Deliver(0, w.write); n != 0 || err != nil {
			t.Fatalf("empty bus: Deliver = %d, %v", n, err)
		}
	})
	t.Run("what write did not finish stays, in order", func(t *testing.T) {
		send(0, "1", "2", "3", "4", "5")
		w := &collector{take: 2}
		// Two of every batch; a short count ends the Deliver, and the
		// rest comes with the next.
		for _, want := range []int{2, 2, 1, 0} {
			if n, err := c.Deliver(0, w.write); err != nil || n != want {
				t.Fatalf("Deliver = %d, %v; want %d", n, err, want)
			}
		}
		if strings.Join(w.got, ",") != "1,2,3,4,5" {
			t.Fatalf("got %q", w.got)
		}
	})
	t.Run("an error of write ends it; the unfinished stay", func(t *testing.T) {
		send(0, "p", "q", "r")
		broken := errors.New("broken")
		w := &collector{take: 1, fail: broken}
		n, err := c.Deliver(0, w.write)
		if err != broken || n != 1 || strings.Join(w.got, ",") != "p" {
			t.Fatalf("Deliver = %d, %v; got %q", n, err, w.got)
		}
		if k := waiting(); k != 2 {
			t.Fatalf("%d messages waiting, want 2", k)
		}
		w = &collector{take: 0, fail: broken}
		if n, err := c.Deliver(0, w.write); err != broken || n != 0 {
			t.Fatalf("Deliver = %d, %v", n, err)
		}
		buf := make([]byte, 16)
		for _, want := range []string{"q", "r"} {
			n, _, err := c.TryReceive(buf)
			if err != nil || string(buf[:n]) != want {
				t.Fatalf("TryReceive = %q, %v; want %q", buf[:n], err, want)
			}
		}
	})
	t.Run("max", func(t *testing.T) {
		send(0, "m1", "m2", "m3")
		w := &collector{take: -1}
		if n, err := c.Deliver(2, w.write); err != nil || n != 2 || strings.Join(w.got, ",") != "m1,m2" {
			t.Fatalf("Deliver(2) = %d, %v; got %q", n, err, w.got)
		}
		if n, err := c.Deliver(0, w.write); err != nil || n != 1 {
			t.Fatalf("Deliver = %d, %v", n, err)
		}
	})
	t.Run("a reassembled message leaves only once written", func(t *testing.T) {
		big := bytes.Repeat([]byte("0123456789abcdef"), 40<<10/16) // many records
		send(0, "before")
		if err := p.Send(context.Background(), big, 0); err != nil {
			t.Fatal(err)
		}
		send(0, "after")
		w := &collector{take: -1}
		fail := &collector{take: 0, fail: errors.New("no room")}
		if n, err := c.Deliver(1, w.write); err != nil || n != 1 {
			t.Fatalf("Deliver = %d, %v", n, err)
		}
		for range 2 { // refused twice: still there
			if n, err := c.Deliver(0, fail.write); n != 0 || err == nil {
				t.Fatalf("failing write: Deliver = %d, %v", n, err)
			}
		}
		if n, err := c.Deliver(0, w.write); err != nil || n != 2 {
			t.Fatalf("Deliver = %d, %v", n, err)
		}
		if len(w.got) != 3 || w.got[0] != "before" || w.got[1] != string(big) || w.got[2] != "after" {
			t.Fatalf("got %d messages: %q ...", len(w.got), fmt.Sprint(len(w.got[1])))
		}
	})
}
