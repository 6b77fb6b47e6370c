package shmbus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// Finding 1.2 on a bus: a producer that dies between its tail CAS and its
// OK store on the first claim of a lane is never recovered, because the
// consumer's own slot (alive) has Pos 0 for every lane. With the lanes
// starting elsewhere it is recovered.
func TestModelBusRuleBAtZero(t *testing.T) {
	for _, start := range []uint64{0, 4096} {
		b := newBus(t, &Options{LaneCapacity: 4096, startPosition: start})
		c, err := b.NewConsumer()
		if err != nil {
			t.Fatal(err)
		}
		victim, err := b.NewProducer()
		if err != nil {
			t.Fatal(err)
		}
		// What claimSpan leaves when the process dies right after its CAS.
		cl := ring.ClaimAt(b.seg, &b.g, victim.slot, 0)
		cl.Pos.Store(start)
		cl.End.Store(start + 64)
		layout.Word64(b.seg, b.g.Lanes[0].CtrlOff+layout.CtrlTail).Store(start + 64)
		b.peers.owner(victim.slot).Store(uint64(0x3ffffff0) << 32) // a pid that does not exist
		other, err := b.NewProducer()
		if err != nil {
			t.Fatal(err)
		}
		if err := other.TrySend([]byte("after"), 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		buf := make([]byte, 100)
		n, _, err := c.Receive(ctx, buf)
		cancel()
		if err != nil || string(buf[:n]) != "after" {
			t.Errorf("lanes starting at %d: the message behind a dead claimant was not delivered: %q, %v", start, buf[:n], err)
		}
	}
}

// Finding 1.3 on a bus: padding skipped by TryReceive/Receive is never
// released, so a producer waits for room while the consumer waits for data.
func TestModelBusTrailingPadding(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 4096})
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	for i := 0; i < 10; i++ { // ten aborted reservations, each "received"
		if _, err := p.Reserve(0, 400); err != nil {
			t.Fatalf("reserve %d: %v", i, err)
		}
		if err := p.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
			t.Fatalf("TryReceive: %v", err)
		}
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		_, _, err := c.Receive(ctx, buf)
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.Send(ctx, make([]byte, 400), 0); err != nil {
		t.Errorf("Send: %v (Receive: %v): the lane is full of released-looking padding", err, <-done)
	} else if err := <-done; err != nil {
		t.Errorf("Receive: %v", err)
	}
}
