package shmbus

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() { roles["taker"] = roleTaker }

// takeMsg is message i of the take tests: a few bytes, except that every
// tenth is larger than a record and travels in fragments.
func takeMsg(i, record int) []byte {
	n := 16 + i%50
	if i%10 == 7 {
		n = 3*record + i
	}
	m := make([]byte, n)
	for j := range m {
		m[j] = byte(i*31 + j)
	}
	copy(m, fmt.Sprintf("%06d", i))
	return m
}

func takeID(t testing.TB, m []byte) int {
	t.Helper()
	id, err := strconv.Atoi(string(m[:6]))
	if err != nil {
		t.Fatalf("message without id: %q", m[:6])
	}
	return id
}

// takeAll takes every message the bus has now, waiting for releases of
// lanes held by a large message, and releases nothing; it returns the ids
// and Taken records in take order.
func takeAll(t *testing.T, c *Consumer, buf []byte) ([]int, []Taken) {
	t.Helper()
	var ids []int
	var ts []Taken
	for {
		tk, err := c.TryTake(buf)
		if errors.Is(err, ErrEmpty) || errors.Is(err, ErrHeld) {
			return ids, ts
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, takeID(t, buf[:tk.N]))
		ts = append(ts, tk)
	}
}

// TestTakeRelease: taken messages stay on the bus until ReleaseThrough;
// a consumer closed with messages taken leaves them to the next one, which
// takes them again at the same positions; released ones are gone. A large
// message holds its lane until released. Receive refuses while messages
// are held.
func TestTakeRelease(t *testing.T) {
	b := newBus(t, &Options{Priorities: 2, LaneCapacity: 16 << 10})
	rec := b.MaxRecordPayload()
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// lane 1: 0..5 (7 would be large: not in this range); lane 0: 6, 7 (large), 8
	for i := 0; i < 9; i++ {
		prio := 1
		if i >= 6 {
			prio = 0
		}
		if err := p.Send(ctx, takeMsg(i, rec), prio); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, b.MaxMessage())
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	ids, ts := takeAll(t, c, buf)
	// Lane 1 first, then lane 0 up to the large message, which holds it.
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("took %v, want %v", ids, want)
	}
	if !ts[7].Large || ts[6].Large || ts[7].Priority != 0 || ts[0].Priority != 1 {
		t.Fatalf("taken records: %+v", ts)
	}
	if ts[0].ProducerPID != os.Getpid() || ts[0].Producer != p.Slot() {
		t.Fatalf("producer identity %d/%d, want slot %d pid %d", ts[0].Producer, ts[0].ProducerPID, p.Slot(), os.Getpid())
	}
	if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrHeld) {
		t.Fatalf("TryReceive with messages held: %v, want ErrHeld", err)
	}
	if err := c.ReleaseThrough(1, ts[2].Position+8); err == nil {
		t.Fatal("release at a position no message was taken at succeeded")
	}
	// Release lane 1 through message 2, and lane 0 through 6 (not the large one).
	if err := c.ReleaseThrough(1, ts[2].Position); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseThrough(0, ts[6].Position); err != nil {
		t.Fatal(err)
	}
	if got := c.Held(); got != 4 {
		t.Fatalf("held %d, want 4", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	ids2, ts2 := takeAll(t, c, buf)
	if want := []int{3, 4, 5, 7}; fmt.Sprint(ids2) != fmt.Sprint(want) {
		t.Fatalf("after reopening took %v, want %v", ids2, want)
	}
	for j, tk := range ts2 {
		if old := ts[ids2[j]]; old.Position != tk.Position || old.Priority != tk.Priority {
			t.Fatalf("message %d came back at %d/%d, was %d/%d", ids2[j], tk.Priority, tk.Position, old.Priority, old.Position)
		}
	}
	if !bytes.Equal(buf[:ts2[3].N], takeMsg(7, rec)) {
		t.Fatal("large message changed")
	}
	if err := c.ReleaseThrough(0, ts2[3].Position); err != nil {
		t.Fatal(err)
	}
	// Lane 0 is free again: message 8 comes.
	ids3, ts3 := takeAll(t, c, buf)
	if fmt.Sprint(ids3) != "[8]" {
		t.Fatalf("after releasing the large message took %v, want [8]", ids3)
	}
	if err := c.ReleaseThrough(1, ts2[2].Position); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseThrough(0, ts3[0].Position); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after releasing everything: %v, want ErrEmpty", err)
	}
	c.Close()
	c, err = b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("next consumer: %v, want ErrEmpty", err)
	}
	c.Close()
}

// roleTaker takes every message, releases those whose id is below
// SHMBUS_RELEASE (in lane order, as they come), prints "taken" and waits
// to be killed.
func roleTaker() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	c, err := bus.NewConsumer()
	if err != nil {
		return err
	}
	buf := make([]byte, bus.MaxMessage())
	rel := envInt("SHMBUS_RELEASE")
	for {
		tk, err := c.TryTake(buf)
		if errors.Is(err, ErrEmpty) || errors.Is(err, ErrHeld) {
			break
		}
		if err != nil {
			return err
		}
		id, _ := strconv.Atoi(string(buf[:6]))
		if id < rel {
			if err := c.ReleaseThrough(tk.Priority, tk.Position); err != nil {
				return err
			}
		}
		fmt.Printf("%d %d %d\n", id, tk.Priority, tk.Position)
	}
	fmt.Println("taken")
	time.Sleep(time.Minute)
	return nil
}

// TestTakeSurvivesKill: a consumer SIGKILLed with messages taken and not
// released (a large one among them) leaves them to the next consumer at
// the same positions; the ones it released are not delivered again.
func TestTakeSurvivesKill(t *testing.T) {
	b := newBus(t, &Options{Priorities: 1, LaneCapacity: 16 << 10})
	rec := b.MaxRecordPayload()
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	const n, release = 9, 4 // message 7 is large
	for i := 0; i < n; i++ {
		if err := p.Send(context.Background(), takeMsg(i, rec), 0); err != nil {
			t.Fatal(err)
		}
	}
	cmd := child(t, "taker", "SHMBUS_NAME="+b.Name(), "SHMBUS_RELEASE="+strconv.Itoa(release))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pos := map[int]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "taken" {
		f := strings.Fields(sc.Text())
		id, _ := strconv.Atoi(f[0])
		pos[id] = f[1] + " " + f[2]
	}
	cmd.Process.Signal(unix.SIGKILL)
	cmd.Wait()
	if len(pos) != 8 { // the large message 7 holds the lane: 8 is not taken
		t.Fatalf("child took %d messages, want 8: %v", len(pos), pos)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := b.AwaitConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, b.MaxMessage())
	var got []int
	for len(got) < n-release {
		tk, err := c.Take(ctx, buf)
		if errors.Is(err, ErrHeld) {
			t.Fatalf("lane held with nothing to release; got %v", got)
		}
		if err != nil {
			t.Fatal(err)
		}
		id := takeID(t, buf[:tk.N])
		if !bytes.Equal(buf[:tk.N], takeMsg(id, rec)) {
			t.Fatalf("message %d damaged", id)
		}
		if was, ok := pos[id]; ok && was != fmt.Sprintf("%d %d", tk.Priority, tk.Position) {
			t.Fatalf("message %d at %d %d, the dead consumer took it at %s", id, tk.Priority, tk.Position, was)
		}
		got = append(got, id)
		if err := c.ReleaseThrough(tk.Priority, tk.Position); err != nil {
			t.Fatal(err)
		}
	}
	if want := "[4 5 6 7 8]"; fmt.Sprint(got) != want {
		t.Fatalf("next consumer got %v, want %v", got, want)
	}
	if _, err := c.TryTake(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after all: %v, want ErrEmpty", err)
	}
}

// TestTakeReleaseNoAlloc: taking and releasing one message at a time, as
// the daemon's RECV does, allocates nothing once warm.
func TestTakeReleaseNoAlloc(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 4096})
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	buf := make([]byte, 64)
	msg := []byte("hello")
	cycle := func() {
		if err := p.TrySend(msg, 0); err != nil {
			t.Fatal(err)
		}
		tk, err := c.TryTake(buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ReleaseThrough(tk.Priority, tk.Position); err != nil {
			t.Fatal(err)
		}
	}
	cycle()
	if n := testing.AllocsPerRun(100, cycle); n != 0 {
		t.Fatalf("%v allocations per take and release", n)
	}
}

// TestReceiveNoAlloc: TryReceive and Deliver of one-record messages
// allocate nothing once warm.
func TestReceiveNoAlloc(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 4096})
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	buf := make([]byte, 64)
	msg := []byte("hello")
	write := func(msgs [][]byte, prio int) (int, error) { return len(msgs), nil }
	cycle := func() {
		if err := p.TrySend(msg, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.TryReceive(buf); err != nil {
			t.Fatal(err)
		}
		if err := p.TrySend(msg, 0); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Deliver(0, write); n != 1 || err != nil {
			t.Fatalf("Deliver = %d, %v", n, err)
		}
	}
	cycle()
	if n := testing.AllocsPerRun(100, cycle); n != 0 {
		t.Fatalf("%v allocations per send and receive", n)
	}
}
