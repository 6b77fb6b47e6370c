package shmbus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() { roles["noted-dier"] = roleNotedDier }

// roleNotedDier sends one noted message and is killed (by itself) in the
// note, after printing the position and counter: between claim and
// publish, the worst moment for a producer that records what it sent.
func roleNotedDier() error {
	b, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	p, err := b.NewProducer()
	if err != nil {
		return err
	}
	return p.SendNoted(context.Background(), []byte("never published"), 0, func(pos, rec uint64) error {
		fmt.Printf("%d %d\n", pos, rec)
		os.Stdout.Sync()
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	})
}

// TestSendNoted: the position SendNoted notes names the message while it
// is on the bus, is released once consumed with the recovered counter
// unchanged; a failing note publishes nothing.
func TestSendNoted(t *testing.T) {
	b := newBus(t, &Options{Priorities: 2, LaneCapacity: 16 << 10})
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	var pos, rec uint64
	if err := p.SendNoted(ctx, []byte("one"), 1, func(ps, r uint64) error { pos, rec = ps, r; return nil }); err != nil {
		t.Fatal(err)
	}
	at, err := b.PositionAt(1, pos)
	if err != nil || at.State != PositionPublished || int(at.Producer) != p.Slot() {
		t.Fatalf("after the send: %+v, %v; want published by slot %d", at, err, p.Slot())
	}
	boom := errors.New("boom")
	var pos2 uint64
	if err := p.SendNoted(ctx, []byte("two"), 1, func(ps, _ uint64) error { pos2 = ps; return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing note: %v, want boom", err)
	}
	if at, err := b.PositionAt(1, pos2); err != nil || at.State != PositionPadding {
		t.Fatalf("after a failing note: %+v, %v; want padding", at, err)
	}
	if err := p.SendNoted(ctx, make([]byte, b.MaxRecordPayload()+1), 1, func(uint64, uint64) error { return nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("message larger than a record: %v, want ErrTooLarge", err)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	n, prio, err := c.TryReceive(buf)
	if err != nil || string(buf[:n]) != "one" || prio != 1 {
		t.Fatalf("received %q at %d, %v", buf[:n], prio, err)
	}
	if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("the aborted message was delivered: %v", err)
	}
	at, err = b.PositionAt(1, pos)
	if err != nil || at.State != PositionReleased || at.Recovered != rec {
		t.Fatalf("after the receive: %+v, %v; want released, recovered %d", at, err, rec)
	}
	for _, bad := range []uint64{pos + 3, pos2 + 1<<20} {
		if _, err := b.PositionAt(1, bad); err == nil {
			t.Errorf("position %d: no error", bad)
		}
	}
	if _, err := b.PositionAt(2, pos); !errors.Is(err, ErrPriority) {
		t.Errorf("priority 2: %v, want ErrPriority", err)
	}
}

// TestSendNotedKilled: a producer killed between note and publish leaves
// its position unpublished; a consumer recovers it as padding, adding 1
// to the recovered counter, so that once released the position tells
// (by the counter) that it may not have been published.
func TestSendNotedKilled(t *testing.T) {
	b := newBus(t, &Options{Priorities: 1, LaneCapacity: 16 << 10})
	cmd := child(t, "noted-dier", "SHMBUS_NAME="+b.Name())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("child said nothing")
	}
	f := strings.Fields(sc.Text())
	cmd.Wait()
	pos, _ := strconv.ParseUint(f[0], 10, 64)
	rec, _ := strconv.ParseUint(f[1], 10, 64)
	if at, err := b.PositionAt(0, pos); err != nil || at.State != PositionUnpublished {
		t.Fatalf("after the kill: %+v, %v; want unpublished", at, err)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Send(context.Background(), []byte("after"), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	buf := make([]byte, 64)
	n, _, err := c.Receive(ctx, buf) // recovers the dead claim, then gets "after"
	if err != nil || string(buf[:n]) != "after" {
		t.Fatalf("received %q, %v", buf[:n], err)
	}
	at, err := b.PositionAt(0, pos)
	if err != nil || at.State != PositionReleased || at.Recovered != rec+1 {
		t.Fatalf("after recovery: %+v, %v; want released, recovered %d", at, err, rec+1)
	}
}
