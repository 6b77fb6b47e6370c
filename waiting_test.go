package shmbus

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// TestWaiting: the messages waiting per priority come from the lanes, large
// messages counted once, and go down as the consumer releases them.
func TestWaiting(t *testing.T) {
	b, err := Create("waiting", &Options{Priorities: 3, LaneCapacity: 256 << 10, MaxMessage: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	big := bytes.Repeat([]byte{7}, 200<<10) // several fragments
	for _, m := range []struct {
		data []byte
		prio int
	}{{[]byte("a"), 0}, {[]byte("b"), 0}, {big, 2}, {[]byte("c"), 2}, {[]byte("d"), 0}} {
		if err := p.Send(context.Background(), m.data, m.prio); err != nil {
			t.Fatal(err)
		}
	}
	if w, err := b.Waiting(); err != nil || !slices.Equal(w, []uint64{3, 0, 2}) {
		t.Fatalf("Waiting = %v, %v; want [3 0 2]", w, err)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	for _, want := range [][]uint64{{3, 0, 1}, {3, 0, 0}, {2, 0, 0}} {
		if _, _, err := c.TryReceive(buf); err != nil {
			t.Fatal(err)
		}
		if w, err := b.Waiting(); err != nil || !slices.Equal(w, want) {
			t.Fatalf("Waiting = %v, %v; want %v", w, err, want)
		}
	}
}
