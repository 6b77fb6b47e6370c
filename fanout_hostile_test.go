package shmbus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestHostileFanOut: while this process sends and two subscriptions (one
// blocking, one lossy) receive, another process writes garbage into the
// lanes' control blocks (clean words included), the lane data or the
// subscription table. Every call returns a message or an allowed error;
// none crashes the process, reads outside the mapping or hangs.
func TestHostileFanOut(t *testing.T) {
	regions := []struct {
		name     string
		from, to func(b *Bus) uint64
	}{
		{"control blocks", func(b *Bus) uint64 { return b.g.Lanes[0].CtrlOff }, func(b *Bus) uint64 { return b.g.Lanes[0].DataOff }},
		{"lane data", func(b *Bus) uint64 { return b.g.Lanes[0].DataOff }, func(b *Bus) uint64 { return b.g.PeerTableOff }},
		{"subscription table", func(b *Bus) uint64 { return b.g.SubTableOff }, func(b *Bus) uint64 { return b.g.TotalSize }},
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			b := newBus(t, &Options{Priorities: 2, LaneCapacity: 16 << 10, MaxMessage: 256 << 10, Subscriptions: 3})
			ctx := context.Background()
			p, err := b.NewProducer()
			if err != nil {
				t.Fatal(err)
			}
			blocking, err := b.Subscribe(ctx, "blocking", &SubscribeOptions{From: FromOldest})
			if err != nil {
				t.Fatal(err)
			}
			lossy, err := b.Subscribe(ctx, "lossy", &SubscribeOptions{Lossy: true})
			if err != nil {
				t.Fatal(err)
			}
			vandal := child(t, "vandal", "SHMBUS_PATH="+b.Path(), fmt.Sprint("SHMBUS_FROM=", r.from(b)),
				fmt.Sprint("SHMBUS_TO=", r.to(b)), "SHMBUS_MS=300")
			if err := vandal.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- vandal.Wait() }()
			buf := make([]byte, 256<<10)
			msg := make([]byte, 100<<10) // fragmented: reassembly is attacked too
			ok := func(err error) bool {
				return err == nil || allowed(err) || errors.Is(err, ErrLagged) || errors.Is(err, ErrNoSubSlot)
			}
			var calls, msgs, errs int
			for running := true; running; {
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("vandal: %v", err)
					}
					running = false
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
				if err := p.Send(ctx, msg[:1+calls%len(msg)], calls%2); !ok(err) {
					t.Fatalf("send: %v", err)
				}
				for _, s := range []*Subscription{blocking, lossy} {
					_, err := s.Receive(ctx, buf)
					switch {
					case err == nil:
						msgs++
					case ok(err):
						errs++
					default:
						t.Fatalf("receive: unexpected error %v", err)
					}
				}
				if _, err := lossy.Poll(10, func([]byte, int) {}); !ok(err) {
					t.Fatalf("poll: %v", err)
				}
				cancel()
				if _, err := b.Subscriptions(); err != nil && !ok(err) {
					t.Fatalf("subscriptions: %v", err)
				}
				calls++
			}
			// A new subscription and an unsubscription on the damaged bus.
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if s, err := b.Subscribe(sctx, "late", nil); err == nil {
				s.Close()
			} else if !ok(err) && !errors.Is(err, ErrBadName) && !errors.Is(err, ErrConfig) {
				t.Fatalf("subscribe after vandalism: %v", err)
			}
			if err := b.Unsubscribe("blocking"); err != nil && !ok(err) && !errors.Is(err, ErrNotExist) {
				t.Fatalf("unsubscribe after vandalism: %v", err)
			}
			if err := Check("", b.Name()); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotReady) && !errors.Is(err, ErrVersion) {
				t.Fatalf("check after vandalism: %v", err)
			}
			t.Logf("%d calls: %d messages, %d errors", calls, msgs, errs)
		})
	}
}
