package shmbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"

	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() { roles["take-and-die"] = takeAndDie }

// takeAndDie receives $COUNT messages from $BUS, too few for the consumer
// to add them to the shared counters, and is killed (SIGKILL) before it
// could.
func takeAndDie() error {
	b, err := Open(os.Getenv("BUS"), nil)
	if err != nil {
		return err
	}
	c, err := b.NewConsumer()
	if err != nil {
		return err
	}
	buf := make([]byte, b.MaxMessage())
	for range envInt("COUNT") {
		if _, _, err := c.TryReceive(buf); err != nil {
			return err
		}
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}

// A consumer killed before adding its counts leaves the counters saying
// messages wait; Waiting counts the lanes and says none do.
func TestWaitingAfterKilledConsumer(t *testing.T) {
	name := fmt.Sprintf("waiting-%d-%d", os.Getpid(), time.Now().UnixNano())
	b, err := Create(name, &Options{Priorities: 2, LaneCapacity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	const sent = 100
	for i := range sent {
		if err := p.TrySend([]byte("message "+strconv.Itoa(i)), i%2); err != nil {
			t.Fatal(err)
		}
	}
	p.Close() // adds its counts

	cmd := child(t, "take-and-die", "BUS="+name, "COUNT="+strconv.Itoa(sent))
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL", err)
	}

	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var in, out uint64
	for _, l := range st.Lanes {
		in, out = in+l.MsgsIn, out+l.MsgsOut
	}
	if in-out != sent {
		// The premise: the counters drifted. If they did not, this test
		// proves nothing.
		t.Fatalf("counters say %d in, %d out; want the killed consumer's %d missing", in, out, sent)
	}
	d, err := b.Waiting()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range d {
		if l != (LaneDepth{}) {
			t.Errorf("priority %d: %+v waiting, want nothing", i, l)
		}
	}

	// And what is sent afterwards is counted.
	p, err = b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 3 {
		if err := p.TrySend([]byte("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if d, err = b.Waiting(); err != nil || d[1].Messages != 3 || d[0].Messages != 0 {
		t.Fatalf("after 3 more: %+v, %v", d, err)
	}
}

// Waiting, called while producers and the consumer work, never fails or
// counts more than a lane can hold, and is exact once traffic stops.
func TestWaitingWhileTrafficFlows(t *testing.T) {
	const capacity, total = 4 << 10, 20000
	b := newBus(t, &Options{LaneCapacity: capacity})
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
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		for range total {
			if _, _, err := c.Receive(context.Background(), buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		for i := range total {
			p.Send(context.Background(), []byte(strconv.Itoa(i)), 0)
		}
	}()
	for looking := true; looking; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			looking = false
		default:
		}
		d, err := b.Waiting()
		if err != nil {
			t.Fatal(err)
		}
		if d[0].Messages > capacity/8 || d[0].Bytes > capacity {
			t.Fatalf("counted %+v in a lane of %d bytes", d[0], capacity)
		}
	}
	if d, err := b.Waiting(); err != nil || d[0] != (LaneDepth{}) {
		t.Fatalf("after the traffic: %+v, %v", d, err)
	}
}

// TestWaiting: the messages waiting per priority come from the lanes, large
// messages counted once, and go down as the consumer releases them.
func TestWaitingLarge(t *testing.T) {
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
	if w, err := waitingMessages(b); err != nil || !slices.Equal(w, []uint64{3, 0, 2}) {
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
		if w, err := waitingMessages(b); err != nil || !slices.Equal(w, want) {
			t.Fatalf("Waiting = %v, %v; want %v", w, err, want)
		}
	}
}

// waitingMessages is the Messages of each lane's LaneDepth.
func waitingMessages(b *Bus) ([]uint64, error) {
	d, err := b.Waiting()
	out := make([]uint64, len(d))
	for i, l := range d {
		out[i] = l.Messages
	}
	return out, err
}
