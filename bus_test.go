package shmbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus/layout"
)

func forEachWake(t *testing.T, f func(t *testing.T, wake WakeMode)) {
	for _, w := range wakeModes {
		t.Run(w.String(), func(t *testing.T) { f(t, w) })
	}
}

func TestLifecycle(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b, err := Create("life-"+wake.String(), &Options{Wake: wake, Priorities: 3, Mode: 0o640})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(b.Path())
		if err != nil || fi.Mode().Perm() != 0o640 || filepath.Base(b.Path()) != "shmbus.life-"+wake.String() {
			t.Fatalf("segment file %v: %v", fi, err)
		}
		if _, err := Create(b.Name(), &Options{Wake: wake}); !errors.Is(err, ErrExist) {
			t.Fatalf("second create: %v", err)
		}
		o, err := Open(b.Name(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if o.Priorities() != 3 || o.WakeMode() != wake {
			t.Fatalf("opened bus: %d priorities, wake %v", o.Priorities(), o.WakeMode())
		}
		names, err := List("")
		if err != nil || len(names) != 1 || names[0] != b.Name() {
			t.Fatalf("List = %v, %v", names, err)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		if _, err := o.NewProducer(); !errors.Is(err, ErrClosed) {
			t.Fatalf("producer on closed bus: %v", err)
		}
		if err := b.Remove(); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(b.Name(), nil); !errors.Is(err, ErrNotExist) {
			t.Fatalf("open removed bus: %v", err)
		}
		if err := Remove("", b.Name()); !errors.Is(err, ErrNotExist) {
			t.Fatalf("remove removed bus: %v", err)
		}
	})
}

func TestRemoveByName(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b, err := Create("byname", &Options{Wake: wake})
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		if err := Remove("", "byname"); err != nil {
			t.Fatal(err)
		}
		if names, _ := List(""); len(names) != 0 {
			t.Fatalf("left: %v", names)
		}
	})
}

func TestBadNamesAndOptions(t *testing.T) {
	for _, name := range []string{"", "../x", "a/b", "..", strings.Repeat("x", 201), "sp ace", "a..b"} {
		if _, err := Create(name, nil); !errors.Is(err, ErrBadName) {
			t.Errorf("Create(%q): %v", name, err)
		}
		if _, err := Open(name, nil); !errors.Is(err, ErrBadName) {
			t.Errorf("Open(%q): %v", name, err)
		}
	}
	for _, o := range []Options{{Priorities: 65}, {LaneCapacity: 1000}, {PeerSlots: 5000}, {MaxMessage: -1}, {Wake: 9}} {
		if _, err := Create("opts", &o); err == nil {
			t.Errorf("Create with %+v succeeded", o)
			Remove("", "opts")
		}
	}
}

func TestOpenCorrupt(t *testing.T) {
	dir := os.Getenv("SHMBUS_DIR")
	path := filepath.Join(dir, "shmbus.garbage")
	os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 1024), 0o600)
	defer os.Remove(path)
	if _, err := Open("garbage", &OpenOptions{Wait: 10 * time.Millisecond}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open garbage: %v", err)
	}
	b := newBus(t, nil)
	f, _ := os.OpenFile(b.Path(), os.O_RDWR, 0)
	f.WriteAt([]byte{9, 0, 0, 0}, layout.OffVersion)
	f.Close()
	if _, err := Open(b.Name(), nil); !errors.Is(err, ErrVersion) {
		t.Fatalf("open version 9: %v", err)
	}
}

// TestPriorityOrder checks the POSIX order, the oldest message of the
// highest priority first, against a model, with interleaved receives.
func TestPriorityOrder(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b := newBus(t, &Options{Wake: wake, Priorities: 8, LaneCapacity: 64 << 10})
		p, err := b.NewProducer()
		if err != nil {
			t.Fatal(err)
		}
		c, err := b.NewConsumer()
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(3, 4))
		var model [8][]uint32
		buf := make([]byte, 64)
		recv := func() {
			n, prio, err := c.TryReceive(buf)
			top := -1
			for i := 7; i >= 0; i-- {
				if len(model[i]) > 0 {
					top = i
					break
				}
			}
			if top < 0 {
				if !errors.Is(err, ErrEmpty) {
					t.Fatalf("receive from empty bus: %v", err)
				}
				return
			}
			if err != nil || n != 4 || prio != top || binary.LittleEndian.Uint32(buf) != model[top][0] {
				t.Fatalf("got %d bytes prio %d id %d err %v; want prio %d id %d", n, prio, binary.LittleEndian.Uint32(buf), err, top, model[top][0])
			}
			model[top] = model[top][1:]
		}
		for id := uint32(0); id < 5000; id++ {
			prio := rng.IntN(8)
			var m [4]byte
			binary.LittleEndian.PutUint32(m[:], id)
			if err := p.TrySend(m[:], prio); err != nil {
				t.Fatal(err)
			}
			model[prio] = append(model[prio], id)
			for rng.IntN(3) == 0 {
				recv()
			}
		}
		for i := 0; i < 5000; i++ {
			recv()
		}
		if err := p.TrySend([]byte{1}, 8); !errors.Is(err, ErrPriority) {
			t.Fatalf("priority 8: %v", err)
		}
	})
}

func TestRoles(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b := newBus(t, &Options{Wake: wake, Producers: SingleProducer})
		c, err := b.NewConsumer()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.NewConsumer(); !errors.Is(err, ErrBusy) {
			t.Fatalf("second consumer: %v", err)
		}
		p, err := b.NewProducer()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.NewProducer(); !errors.Is(err, ErrBusy) {
			t.Fatalf("second producer on a single-producer bus: %v", err)
		}
		p.Close()
		c.Close()
		if _, err := b.NewProducer(); err != nil {
			t.Fatalf("producer after the first closed: %v", err)
		}
		if _, err := b.NewConsumer(); err != nil {
			t.Fatalf("consumer after the first closed: %v", err)
		}
		st, _ := b.Stats()
		if len(st.Peers) != 2 {
			t.Fatalf("peers %+v", st.Peers)
		}
	})
}

func TestDeadlinesAndCancel(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b := newBus(t, &Options{Wake: wake, LaneCapacity: 1024, RecordLimit: 512})
		p, _ := b.NewProducer()
		c, _ := b.NewConsumer()
		buf := make([]byte, 512)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, _, err := c.Receive(ctx, buf); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("receive on empty bus: %v", err)
		}
		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(30 * time.Millisecond); cancel() }()
		start := time.Now()
		if _, _, err := c.Receive(ctx, buf); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled receive: %v", err)
		}
		if d := time.Since(start); d > 150*time.Millisecond {
			t.Logf("cancellation took %v (backstop is %v)", d, 200*time.Millisecond)
		}
		msg := make([]byte, 500)
		for p.TrySend(msg, 0) == nil {
		}
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if err := p.Send(ctx, msg, 0); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("send on full bus: %v", err)
		}
		// Nothing lost or half-written: exactly the messages sent arrive.
		n := 0
		for {
			k, _, err := c.TryReceive(buf)
			if errors.Is(err, ErrEmpty) {
				break
			}
			if err != nil || k != 500 {
				t.Fatalf("receive: %d %v", k, err)
			}
			n++
		}
		if n != 2 {
			t.Fatalf("received %d messages, want 2", n)
		}
	})
}

func TestCloseWakesBlockedSend(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b, err := Create("closewake", &Options{Wake: wake, LaneCapacity: 1024, RecordLimit: 512})
		if err != nil {
			t.Fatal(err)
		}
		defer Remove("", "closewake")
		p, _ := b.NewProducer()
		c, _ := b.NewConsumer()
		p2, _ := b.NewProducer()
		msg := make([]byte, 500)
		for p2.TrySend(msg, 0) == nil {
		}
		_ = c
		errs := make(chan error, 1)
		go func() { errs <- p.Send(context.Background(), msg, 0) }()
		time.Sleep(50 * time.Millisecond)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("blocked send returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocked send not woken by Close")
		}
	})
}

func TestCloseWakesBlockedReceive(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b, err := Create("closewake2", &Options{Wake: wake})
		if err != nil {
			t.Fatal(err)
		}
		defer Remove("", "closewake2")
		c, _ := b.NewConsumer()
		errs := make(chan error, 1)
		go func() {
			_, _, err := c.Receive(context.Background(), make([]byte, 10))
			errs <- err
		}()
		time.Sleep(50 * time.Millisecond)
		b.Close()
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("blocked receive returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocked receive not woken by Close")
		}
	})
}

func TestShortBufferKeepsMessage(t *testing.T) {
	b := newBus(t, nil)
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	p.TrySend([]byte("hello, world"), 0)
	_, _, err := c.TryReceive(make([]byte, 4))
	var sb *ShortBufferError
	if !errors.As(err, &sb) || sb.Need != 12 {
		t.Fatalf("short buffer: %v", err)
	}
	buf := make([]byte, 12)
	if n, _, err := c.TryReceive(buf); err != nil || string(buf[:n]) != "hello, world" {
		t.Fatalf("after short buffer: %q %v", buf[:n], err)
	}
}

func TestTruncatedSegment(t *testing.T) {
	b, err := Create("truncated", &Options{LaneCapacity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	p.TrySend([]byte("x"), 0)
	if err := os.Truncate(b.Path(), 4096); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryReceive(make([]byte, 8)); !errors.Is(err, ErrTruncated) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("receive from truncated segment: %v", err)
	}
	if err := p.TrySend([]byte("y"), 0); !errors.Is(err, ErrTruncated) {
		t.Fatalf("send to truncated segment: %v", err)
	}
	// Removing still deletes the file, and reports the fault met on the way.
	if err := b.Remove(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("remove truncated bus: %v", err)
	}
	if _, err := os.Stat(b.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("segment file still there: %v", err)
	}
}

// TestCloseWithReservation: a bus closed while one of its producers holds
// an unpublished reservation gives it back as padding, so the consumer
// (here in another attachment) is not stuck behind it.
func TestCloseWithReservation(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b := newBus(t, &Options{Wake: wake})
		c, _ := b.NewConsumer()
		o, err := Open(b.Name(), nil)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := o.NewProducer()
		if _, err := p.Reserve(0, 100); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
		if err := p.Commit(); !errors.Is(err, ErrClosed) {
			t.Fatalf("commit after bus close: %v", err)
		}
		p2, _ := b.NewProducer()
		p2.TrySend([]byte("after"), 0)
		buf := make([]byte, 16)
		n, _, err := c.TryReceive(buf)
		if err != nil || string(buf[:n]) != "after" {
			t.Fatalf("receive: %q %v", buf[:n], err)
		}
	})
}
