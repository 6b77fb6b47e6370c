package shmbus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

func init() { roles["vandal"] = roleVandal }

// roleVandal writes random bytes at random offsets of [SHMBUS_FROM,
// SHMBUS_TO) of the segment file, through its own mapping-free file
// writes, for SHMBUS_MS milliseconds.
func roleVandal() error {
	f, err := os.OpenFile(os.Getenv("SHMBUS_PATH"), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	from, _ := strconv.ParseInt(os.Getenv("SHMBUS_FROM"), 10, 64)
	to, _ := strconv.ParseInt(os.Getenv("SHMBUS_TO"), 10, 64)
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 7))
	end := time.Now().Add(time.Duration(envInt("SHMBUS_MS")) * time.Millisecond)
	buf := make([]byte, 16)
	for time.Now().Before(end) {
		n := 1 + rng.IntN(len(buf))
		for i := range buf[:n] {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf[:n], from+rng.Int64N(to-from)); err != nil {
			return err
		}
		time.Sleep(20 * time.Microsecond)
	}
	return nil
}

// allowed reports whether err is one a bus may return when a hostile peer
// scribbles over it.
func allowed(err error) bool {
	for _, e := range []error{ErrCorrupt, ErrEmpty, ErrFull, ErrShortBuffer, ErrBusy, ErrNoSlot, ErrClosed, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// TestHostileSegment: while this process sends and receives, another
// process writes garbage into the header, the control blocks, the lane
// data or the peer table. Every call returns a message or an error (most
// wrap ErrCorrupt); none crashes the process or reads outside the mapping.
// shmbus check names a fault afterwards or finds none.
func TestHostileSegment(t *testing.T) {
	regions := []struct {
		name     string
		from, to func(b *Bus) uint64
	}{
		{"header", func(*Bus) uint64 { return 0 }, func(*Bus) uint64 { return 4096 }},
		{"control blocks", func(b *Bus) uint64 { return b.g.Lanes[0].CtrlOff }, func(b *Bus) uint64 { return b.g.Lanes[0].DataOff }},
		{"lane data", func(b *Bus) uint64 { return b.g.Lanes[0].DataOff }, func(b *Bus) uint64 { return b.g.PeerTableOff }},
		{"peer table", func(b *Bus) uint64 { return b.g.PeerTableOff }, func(b *Bus) uint64 { return b.g.TotalSize }},
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			b := newBus(t, &Options{Priorities: 2, LaneCapacity: 16 << 10, MaxMessage: 256 << 10})
			p, err := b.NewProducer()
			if err != nil {
				t.Fatal(err)
			}
			c, err := b.NewConsumer()
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
				if err := p.Send(ctx, msg[:1+calls%len(msg)], calls%2); err != nil && !allowed(err) {
					t.Fatalf("send: %v", err)
				}
				_, _, err := c.Receive(ctx, buf)
				cancel()
				calls++
				switch {
				case err == nil:
					msgs++
				case allowed(err):
					errs++
				default:
					t.Fatalf("receive: unexpected error %v", err)
				}
			}
			if err := Check("", b.Name()); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotReady) && !errors.Is(err, ErrVersion) {
				t.Fatalf("check after vandalism: %v", err)
			}
			t.Logf("%d calls: %d messages, %d errors; check: %v", calls, msgs, errs, Check("", b.Name()))
		})
	}
}
