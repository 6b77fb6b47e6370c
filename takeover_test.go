package shmbus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/layout"
)

func init() { roles["consumer"] = roleConsumer }

// roleConsumer takes the consumer role (waiting for it) and prints the id
// of every message from inside the zero-copy handler, before the message
// is released, until it has seen id SHMBUS_LAST.
func roleConsumer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	ctx := context.Background()
	c, err := bus.AwaitConsumer(ctx)
	if err != nil {
		return err
	}
	last := uint32(envInt("SHMBUS_LAST"))
	done := false
	for !done {
		_, err := c.Poll(1, func(p []byte, _ int) {
			id := binary.LittleEndian.Uint32(p)
			fmt.Fprintln(os.Stdout, id) // one write(2): reported before release
			done = id == last
		})
		if err != nil {
			return err
		}
		if !done {
			if err := c.Wait(ctx); err != nil {
				return err
			}
		}
	}
	return c.Close()
}

// TestConsumerTakeover kills the consumer process with SIGKILL at a random
// moment; a new consumer takes the role over and resumes after the last
// message the dead one released. Nothing is lost; the only message that
// may come twice is the one being handled when the consumer died.
func TestConsumerTakeover(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		for round := 0; round < 3; round++ {
			consumerTakeover(t, wake, 20000+round*7919)
		}
	})
}

func consumerTakeover(t *testing.T, wake WakeMode, killAfter int) {
	const n = 60000
	b := newBus(t, &Options{Wake: wake, Priorities: 2, LaneCapacity: 16 << 10})
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		msg := make([]byte, 32)
		for id := uint32(0); id < n; id++ {
			binary.LittleEndian.PutUint32(msg, id)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := p.Send(ctx, msg, 1)
			cancel()
			if err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	seen := make([]int, n)
	// read scans ids until stop returns true or the stream ends.
	read := func(sc *bufio.Scanner, ids *[]uint32, stop func() bool) {
		for !stop() && sc.Scan() {
			id, err := strconv.Atoi(sc.Text())
			if err != nil || id < 0 || id >= n {
				t.Errorf("consumer printed %q", sc.Text())
				continue
			}
			*ids = append(*ids, uint32(id))
			seen[id]++
		}
	}
	start := func() (*exec.Cmd, *bufio.Scanner) {
		cmd := child(t, "consumer", "SHMBUS_NAME="+b.Name(), fmt.Sprint("SHMBUS_LAST=", n-1))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, bufio.NewScanner(out)
	}
	var ids1, ids2 []uint32
	first, sc1 := start()
	read(sc1, &ids1, func() bool { return len(ids1) >= killAfter })
	first.Process.Kill() // SIGKILL, somewhere in the middle of the stream
	// What it printed before it died counts: it was reported before release.
	read(sc1, &ids1, func() bool { return false })
	first.Wait()
	second, sc2 := start()
	read(sc2, &ids2, func() bool { return false })
	if err := waitTimeout(second, time.Minute); err != nil {
		t.Fatalf("second consumer: %v", err)
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if len(ids1) == 0 || len(ids2) == 0 || ids1[len(ids1)-1] == n-1 {
		t.Fatalf("the kill did not land mid-stream: first consumer %d messages, second %d", len(ids1), len(ids2))
	}
	dups := 0
	for id, k := range seen {
		if k == 0 {
			t.Fatalf("message %d lost (first consumer saw %d messages, second %d)", id, len(ids1), len(ids2))
		}
		dups += k - 1
	}
	if dups > 1 {
		t.Fatalf("%d messages delivered twice; at most the one being handled may be", dups)
	}
	if dups == 1 && ids2[0] != ids1[len(ids1)-1] {
		t.Fatalf("duplicate is not the message the dead consumer was handling")
	}
	t.Logf("first consumer handled %d messages, second %d, %d delivered twice", len(ids1), len(ids2), dups)
	if _, err := b.NewConsumer(); errors.Is(err, ErrBusy) {
		t.Fatalf("consumer role still held after both consumers ended: %v", err)
	}
}

func init() { roles["big-consumer"] = roleBigConsumer }

var takeoverSizes = []int{16, 200 << 10, 3 << 20, 8 << 20}

// roleBigConsumer checks every message (producer 0, sizes cycling through
// takeoverSizes) and prints its sequence number from inside the handler,
// until it has seen SHMBUS_LAST.
func roleBigConsumer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	ctx := context.Background()
	c, err := bus.AwaitConsumer(ctx)
	if err != nil {
		return err
	}
	last := uint32(envInt("SHMBUS_LAST"))
	var done bool
	var bad error
	for !done && bad == nil {
		_, err := c.Poll(1, func(p []byte, _ int) {
			seq := binary.LittleEndian.Uint32(p[1:])
			if err := checkBig(p, 0, seq, takeoverSizes[int(seq)%len(takeoverSizes)]); err != nil {
				bad = err
				return
			}
			fmt.Println(seq)
			done = seq == last
		})
		if err != nil {
			return err
		}
		if !done && bad == nil {
			if err := c.Wait(ctx); err != nil {
				return err
			}
		}
	}
	if bad != nil {
		return bad
	}
	return c.Close()
}

// TestConsumerTakeoverMidReassembly kills the consumer while it is
// reassembling large messages (fragments released from the ring, held in
// its reassembly file). The next consumer resumes from the file: nothing
// is lost or corrupted.
func TestConsumerTakeoverMidReassembly(t *testing.T) {
	for round := 0; round < 3; round++ {
		const n = 24
		b := newBus(t, &Options{LaneCapacity: 1 << 20, MaxMessage: 8 << 20})
		p, _ := b.NewProducer()
		sendErr := make(chan error, 1)
		go func() {
			buf := make([]byte, 8<<20)
			for seq := uint32(0); seq < n; seq++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := p.Send(ctx, bigMsg(buf, 0, seq, takeoverSizes[int(seq)%len(takeoverSizes)]), 0)
				cancel()
				if err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- nil
		}()
		seen := make([]int, n)
		var order []int
		start := func() (*exec.Cmd, *bufio.Scanner) {
			cmd := child(t, "big-consumer", "SHMBUS_NAME="+b.Name(), fmt.Sprint("SHMBUS_LAST=", n-1))
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, bufio.NewScanner(out)
		}
		read := func(sc *bufio.Scanner, stop int) int {
			k := 0
			for k != stop && sc.Scan() {
				id, err := strconv.Atoi(sc.Text())
				if err != nil || id < 0 || id >= n {
					t.Fatalf("consumer printed %q", sc.Text())
				}
				seen[id]++
				order = append(order, id)
				k++
			}
			return k
		}
		first, sc1 := start()
		read(sc1, 5+round*3)
		// Kill it while it holds a partly reassembled message: freeze it
		// when a reassembly file exists, and kill it if one still does.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if len(asmFiles(b.Path())) == 0 {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			first.Process.Signal(unix.SIGSTOP)
			if len(asmFiles(b.Path())) != 0 {
				break
			}
			first.Process.Signal(unix.SIGCONT)
		}
		first.Process.Kill()
		read(sc1, -1)
		first.Wait()
		partial := len(asmFiles(b.Path()))
		if partial == 0 {
			t.Fatal("the consumer was not killed in the middle of a reassembly")
		}
		second, sc2 := start()
		read(sc2, -1)
		if err := waitTimeout(second, time.Minute); err != nil {
			t.Fatalf("second consumer: %v", err)
		}
		if err := <-sendErr; err != nil {
			t.Fatal(err)
		}
		dups := 0
		for id, k := range seen {
			if k == 0 {
				t.Fatalf("message %d lost (order %v)", id, order)
			}
			dups += k - 1
		}
		if dups > 1 {
			t.Fatalf("%d messages delivered twice (order %v)", dups, order)
		}
		t.Logf("round %d: killed consumer left %d reassembly file(s); %d redelivered", round, partial, dups)
		if left := asmFiles(b.Path()); len(left) != 0 {
			t.Fatalf("reassembly files left: %v", left)
		}
	}
}

// The consumer role word names the slot of a dead consumer that a live
// producer has since taken over: the role is free, not busy.
func TestRoleOfReusedSlot(t *testing.T) {
	b := newBus(t, &Options{PeerSlots: 2})
	cmd := child(t, "idle-consumer", "SHMBUS_NAME="+b.Name())
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	role := layout.Word32(b.seg, layout.OffConsumer)
	for deadline := time.Now().Add(10 * time.Second); role.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("child never took the consumer role")
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	a, err := b.NewProducer() // the free slot
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.NewProducer(); err != nil { // the dead consumer's slot
		t.Fatal(err)
	}
	if int(role.Load())-1 != 1-a.slot {
		t.Fatalf("role word %d; producers in slots %d and %d", role.Load(), a.slot, 1-a.slot)
	}
	a.Close()
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatalf("consumer after its dead predecessor's slot was reused: %v", err)
	}
	c.Close()
}
