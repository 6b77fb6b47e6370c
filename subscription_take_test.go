package shmbus

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// TestSubscriptionTakeAck: taken messages stay on the bus (producers wait
// for them) until acknowledged; a holder that closes with messages taken
// leaves them to the next one, from the last acknowledgement on.
func TestSubscriptionTakeAck(t *testing.T) {
	b := fanBus(t, "fan-take", &Options{LaneCapacity: 4096, Priorities: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := b.Subscribe(ctx, "fwd", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var m [64]byte
	sent := 0
	for ; ; sent++ {
		binary.LittleEndian.PutUint64(m[:], uint64(sent))
		if err := p.TrySend(m[:], 1); errors.Is(err, ErrFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if sent < 10 {
		t.Fatalf("only %d messages fit", sent)
	}
	buf := make([]byte, 64)
	var taken []SubTaken
	for i := range 5 {
		tk, err := s.TryTake(buf)
		if err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint64(buf); v != uint64(i) || tk.Prio != 1 || tk.N != 64 {
			t.Fatalf("take %d: message %d, %+v", i, v, tk)
		}
		taken = append(taken, tk)
	}
	if s.Taken() != 5 {
		t.Fatalf("Taken %d", s.Taken())
	}
	if _, err := s.TryReceive(buf); !errors.Is(err, ErrHeld) {
		t.Fatalf("receive while messages are taken: %v", err)
	}
	if err := p.TrySend(m[:], 1); !errors.Is(err, ErrFull) {
		t.Fatalf("taken messages freed room: %v", err)
	}
	if err := s.AckThrough(1, taken[4].Position+1); err == nil {
		t.Fatal("ack of a position nothing was taken at")
	}
	if err := s.AckThrough(1, taken[1].Position); err != nil {
		t.Fatal(err)
	}
	if s.Taken() != 3 {
		t.Fatalf("Taken %d after acking 2", s.Taken())
	}
	if err := p.TrySend(m[:], 1); err != nil { // room from the two acknowledged
		t.Fatalf("send after ack: %v", err)
	}
	sent++
	s.Close() // 2, 3, 4 taken and not acknowledged

	s, err = b.Subscribe(ctx, "fwd", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for want := 2; want < sent; want++ {
		tk, err := s.TryTake(buf)
		if err != nil {
			t.Fatalf("message %d: %v", want, err)
		}
		if v := binary.LittleEndian.Uint64(buf); v != uint64(want) {
			t.Fatalf("message %d, want %d", v, want)
		}
		if err := s.AckThrough(tk.Prio, tk.Position); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.TryTake(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after the last: %v", err)
	}
	if _, err := s.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("receive with nothing taken: %v", err)
	}
}

func TestSubscriptionTakeNoAlloc(t *testing.T) {
	b := fanBus(t, "fan-take-alloc", nil)
	s, err := b.Subscribe(context.Background(), "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	msg, buf := make([]byte, 64), make([]byte, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		p.TrySend(msg, 0)
		p.TrySend(msg, 0)
		s.TryTake(buf)
		tk, _ := s.TryTake(buf)
		s.AckThrough(tk.Prio, tk.Position)
		s.TryTake(buf) // empty
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
}
