package shmbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus/layout"
)

func fanBus(t *testing.T, name string, opts *Options) *Bus {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	if opts.Subscriptions == 0 {
		opts.Subscriptions = 4
	}
	b, err := Create(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Remove() })
	return b
}

func TestFanOutKinds(t *testing.T) {
	q, err := Create("fan-kinds-q", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Remove()
	if _, err := q.Subscribe(context.Background(), "x", nil); !errors.Is(err, ErrNotFanOut) {
		t.Fatalf("subscribe on a queue: %v", err)
	}
	b := fanBus(t, "fan-kinds", nil)
	if _, err := b.NewConsumer(); !errors.Is(err, ErrFanOut) {
		t.Fatalf("consumer on a fan-out bus: %v", err)
	}
	if _, err := b.Subscribe(context.Background(), "bad/name", nil); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	s, err := b.Subscribe(context.Background(), "billing", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(context.Background(), "billing", nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("second holder: %v", err)
	}
	if err := b.Unsubscribe("billing"); !errors.Is(err, ErrBusy) {
		t.Fatalf("unsubscribe a held subscription: %v", err)
	}
	if _, err := b.Subscribe(context.Background(), "billing", &SubscribeOptions{Lossy: true}); !errors.Is(err, ErrConfig) && !errors.Is(err, ErrBusy) {
		t.Fatalf("lossy attach to a blocking subscription: %v", err)
	}
	s.Close()
	if _, err := b.Subscribe(context.Background(), "billing", &SubscribeOptions{Lossy: true}); !errors.Is(err, ErrConfig) {
		t.Fatalf("lossy attach to a blocking subscription: %v", err)
	}
	infos, err := b.Subscriptions()
	if err != nil || len(infos) != 1 || infos[0].Name != "billing" || !infos[0].Durable || infos[0].Held {
		t.Fatalf("subscriptions %+v, %v", infos, err)
	}
	if err := b.Unsubscribe("billing"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unsubscribe("billing"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("second unsubscribe: %v", err)
	}
	var subs []*Subscription
	for range 4 {
		s, err := b.Subscribe(context.Background(), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	if _, err := b.Subscribe(context.Background(), "", nil); !errors.Is(err, ErrNoSubSlot) {
		t.Fatalf("fifth subscription of four: %v", err)
	}
	for _, s := range subs {
		s.Close()
	}
	if infos, _ := b.Subscriptions(); len(infos) != 0 {
		t.Fatalf("ephemeral subscriptions left after close: %+v", infos)
	}
}

// TestFanOutEveryMessage: two blocking subscriptions (one reading with
// Receive, one with Poll) get every message, in order, through lanes that
// wrap many times, with priorities and a large message among them.
func TestFanOutEveryMessage(t *testing.T) {
	b := fanBus(t, "fan-every", &Options{Priorities: 2, LaneCapacity: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := b.Subscribe(ctx, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Subscribe(ctx, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	big := make([]byte, 10000) // fragments through a 4 KiB lane
	for i := range big {
		big[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	go func() {
		p, err := b.NewProducer()
		if err != nil {
			done <- err
			return
		}
		defer p.Close()
		var m [16]byte
		for i := range n {
			binary.LittleEndian.PutUint64(m[:], uint64(i))
			if err := p.Send(ctx, m[:8+i%8], i%2); err != nil {
				done <- err
				return
			}
			if i == n/2 {
				binary.LittleEndian.PutUint64(big, 1<<40)
				if err := p.Send(ctx, big, 0); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	next := [2]uint64{0, 1}
	errs := make(chan error, 2)
	var bigA, bigC int
	go func() { // a: Receive, one at a time
		got := next
		buf := make([]byte, 1<<14)
		for got[0] < n || got[1] < n+1 {
			m, err := a.Receive(ctx, buf)
			if err != nil {
				errs <- err
				return
			}
			if m.N == len(big) {
				if binary.LittleEndian.Uint64(buf) != 1<<40 || buf[9999] != big[9999] {
					errs <- errors.New("a: large message damaged")
					return
				}
				bigA++
				continue
			}
			if v := binary.LittleEndian.Uint64(buf); v != got[m.Prio] || len(buf[:m.N]) != 8+int(v%8) {
				errs <- fmt.Errorf("a: message %d (%d bytes) at priority %d, want %d", v, m.N, m.Prio, got[m.Prio])
				return
			}
			got[m.Prio] += 2
		}
		errs <- nil
	}()
	go func() { // c: Poll, zero-copy batches
		got := next
		var bad error
		for bad == nil && (got[0] < n || got[1] < n+1) {
			if err := c.Wait(ctx); err != nil {
				errs <- err
				return
			}
			_, err := c.Poll(64, func(p []byte, prio int) {
				if len(p) == len(big) {
					if binary.LittleEndian.Uint64(p) != 1<<40 || p[9999] != big[9999] {
						bad = errors.New("c: large message damaged")
					}
					bigC++
					return
				}
				if v := binary.LittleEndian.Uint64(p); v != got[prio] || len(p) != 8+int(v%8) {
					bad = fmt.Errorf("c: message %d (%d bytes) at priority %d, want %d", v, len(p), prio, got[prio])
				}
				got[prio] += 2
			})
			if err != nil {
				bad = err
			}
		}
		errs <- bad
	}()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if bigA != 1 || bigC != 1 {
		t.Fatalf("large message delivered %d and %d times", bigA, bigC)
	}
	a.Close()
	c.Close()
}

// TestFanOutLossy: a lossy subscription that does not read is overrun and
// never holds the producer back; it then reports exactly what it missed and
// goes on with intact messages.
func TestFanOutLossy(t *testing.T) {
	b := fanBus(t, "fan-lossy", &Options{LaneCapacity: 4096})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := b.Subscribe(ctx, "l", &SubscribeOptions{Lossy: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	var m [24]byte
	for i := range n {
		binary.LittleEndian.PutUint64(m[:], uint64(i))
		if err := p.TrySend(m[:], 0); err != nil { // never full: nobody blocks it
			t.Fatalf("message %d: %v", i, err)
		}
	}
	buf := make([]byte, 64)
	_, err = s.TryReceive(buf)
	var lag *LaggedError
	if !errors.As(err, &lag) || !errors.Is(err, ErrLagged) {
		t.Fatalf("first receive: %v", err)
	}
	first := uint64(0)
	msg, err := s.TryReceive(buf)
	if err != nil {
		t.Fatal(err)
	}
	first = binary.LittleEndian.Uint64(buf)
	if lag.Missed[0] != first {
		t.Fatalf("missed %d, first message now %d", lag.Missed[0], first)
	}
	for want := first + 1; want < n; want++ {
		msg, err = s.TryReceive(buf)
		if err != nil {
			t.Fatalf("after %d: %v", want-1, err)
		}
		if v := binary.LittleEndian.Uint64(buf[:msg.N]); v != want {
			t.Fatalf("message %d, want %d", v, want)
		}
	}
	if _, err := s.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after the last: %v", err)
	}
	p.Close()
	s.Close()
}

func TestSubscribeNoAlloc(t *testing.T) {
	b := fanBus(t, "fan-alloc", nil)
	ctx := context.Background()
	s, err := b.Subscribe(ctx, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := b.Subscribe(ctx, "l", &SubscribeOptions{Lossy: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	msg, buf := make([]byte, 64), make([]byte, 64)
	f := func([]byte, int) {}
	allocs := testing.AllocsPerRun(1000, func() {
		p.TrySend(msg, 0)
		p.TrySend(msg, 0)
		s.TryReceive(buf)
		s.Poll(0, f)
		l.TryReceive(buf)
		l.Poll(0, f)
		s.TryReceive(buf) // empty
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
}

// TestCheckFanOut: Check passes a fan-out bus in use and names a cursor
// that a damaged segment puts past the tail, and a bad subscription state.
func TestCheckFanOut(t *testing.T) {
	b := fanBus(t, "fan-check", nil)
	s, err := b.Subscribe(context.Background(), "audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 100 {
		p.TrySend(make([]byte, 40), 0)
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
	e := &b.subs.Entries[s.idx]
	e.Cursor[0].Store(1 << 40)
	err = b.Check()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `subscription "audit": lane 0 cursor 1099511627776 past the tail`) {
		t.Fatalf("check of a cursor past the tail: %v", err)
	}
	e.Cursor[0].Store(0)
	b.subs.Entries[3].State.Store(9)
	if err := b.Check(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "subscription entry 3: state 9") {
		t.Fatalf("check of a bad state: %v", err)
	}
	b.subs.Entries[3].State.Store(0)
}

// TestSubscribeStaleEntry: an entry left half made by a process that died
// making it does not block its name for ever.
func TestSubscribeStaleEntry(t *testing.T) {
	b := fanBus(t, "fan-stale", nil)
	e := &b.subs.Entries[1]
	copy(e.Name, "ghost")
	e.NameLen.Store(5)
	e.State.Store(layout.SubCreating) // no holder: its maker is gone
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.Subscribe(ctx, "ghost", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if infos, _ := b.Subscriptions(); len(infos) != 1 || infos[0].Name != "ghost" || !infos[0].Held {
		t.Fatalf("subscriptions %+v", infos)
	}
}
