package shmbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/internal/failpoint"
)

func init() { roles["big-producer"] = roleBigProducer }

var bigSizes = []int{1, 4 << 10, 1 << 20, 8 << 20, 64 << 20}

// bigMsg fills buf[:size] with message seq of producer k: its header
// (producer, sequence, CRC-32 of the body, size), or as much of it as
// fits, then a pseudo-random body.
func bigMsg(buf []byte, k, seq uint32, size int) []byte {
	m := buf[:size]
	x := mix(k, seq) | 1
	for i := testHeader; i+8 <= size; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(m[i:], x)
	}
	for i := max(testHeader, size&^7); i < size; i++ {
		m[i] = byte(i)
	}
	var hdr [testHeader]byte
	hdr[0] = byte(k)
	binary.LittleEndian.PutUint32(hdr[1:], seq)
	if size > testHeader {
		binary.LittleEndian.PutUint32(hdr[5:], crc32.ChecksumIEEE(m[testHeader:]))
	}
	binary.LittleEndian.PutUint32(hdr[9:], uint32(size))
	copy(m, hdr[:])
	return m
}

// checkBig verifies a message made by bigMsg whose expected size is size.
func checkBig(m []byte, k, seq uint32, size int) error {
	if len(m) != size {
		return fmt.Errorf("producer %d message %d: %d bytes, want %d", k, seq, len(m), size)
	}
	if m[0] != byte(k) {
		return fmt.Errorf("message %d: producer byte %d, want %d", seq, m[0], k)
	}
	if size >= testHeader {
		if s := binary.LittleEndian.Uint32(m[1:]); s != seq {
			return fmt.Errorf("producer %d: sequence %d, want %d", k, s, seq)
		}
		if size > testHeader && crc32.ChecksumIEEE(m[testHeader:]) != binary.LittleEndian.Uint32(m[5:]) {
			return fmt.Errorf("producer %d message %d (%d bytes): checksum mismatch", k, seq, size)
		}
	}
	return nil
}

// roleBigProducer sends, as producer SHMBUS_K, SHMBUS_ROUNDS rounds of the
// sizes in bigSizes, rotated by K so that producers send different sizes
// at the same time.
func roleBigProducer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	k, rounds := uint32(envInt("SHMBUS_K")), envInt("SHMBUS_ROUNDS")
	buf := make([]byte, bigSizes[len(bigSizes)-1])
	for seq := uint32(0); seq < uint32(rounds*len(bigSizes)); seq++ {
		size := bigSizes[(int(seq)+int(k))%len(bigSizes)]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		err := p.Send(ctx, bigMsg(buf, k, seq, size), 0)
		cancel()
		if err != nil {
			return fmt.Errorf("send %d (%d bytes): %w", seq, size, err)
		}
	}
	return p.Close()
}

// TestLargeMessages sends messages of 1 B, 4 KiB, 1 MiB, 8 MiB and 64 MiB
// through a 1 MiB lane, from one producer process and from three at once
// (whose fragments interleave); every payload must arrive whole.
func TestLargeMessages(t *testing.T) {
	for _, producers := range []int{1, 3} {
		mode := map[int]ProducerMode{1: SingleProducer, 3: MultiProducer}[producers]
		t.Run(fmt.Sprintf("producers=%d", producers), func(t *testing.T) {
			b := newBus(t, &Options{LaneCapacity: 1 << 20, MaxMessage: 64 << 20, Producers: mode})
			c, err := b.NewConsumer()
			if err != nil {
				t.Fatal(err)
			}
			const rounds = 2
			errs := make(chan error, producers)
			for k := 0; k < producers; k++ {
				cmd := child(t, "big-producer", "SHMBUS_NAME="+b.Name(), fmt.Sprint("SHMBUS_K=", k), fmt.Sprint("SHMBUS_ROUNDS=", rounds))
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				go func() { errs <- waitTimeout(cmd, 5*time.Minute) }()
			}
			buf := make([]byte, 64<<20)
			next := make([]uint32, producers)
			for got := 0; got < producers*rounds*len(bigSizes); got++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				n, _, err := c.Receive(ctx, buf)
				cancel()
				if err != nil {
					t.Fatalf("receive %d: %v", got, err)
				}
				k := uint32(buf[0])
				if int(k) >= producers {
					t.Fatalf("message from producer %d", k)
				}
				seq := next[k]
				size := bigSizes[(int(seq)+int(k))%len(bigSizes)]
				if err := checkBig(buf[:n], k, seq, size); err != nil {
					t.Fatal(err)
				}
				next[k]++
			}
			for i := 0; i < producers; i++ {
				if err := <-errs; err != nil {
					t.Fatalf("producer: %v", err)
				}
			}
			if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
				t.Fatalf("more messages than sent: %v", err)
			}
			st, _ := b.Stats()
			if l := st.Lanes[0]; l.MsgsIn != l.MsgsOut || l.MsgsOut != uint64(producers*rounds*len(bigSizes)) {
				t.Fatalf("lane counted %d messages in, %d out", l.MsgsIn, l.MsgsOut)
			}
			if len(c.asm.parts) != 0 {
				t.Fatalf("messages still in reassembly: %d", len(c.asm.parts))
			}
			c.Close()
			if left := asmFiles(b.Path()); len(left) != 0 {
				t.Fatalf("reassembly files left after the consumer closed: %v", left)
			}
		})
	}
}

func TestMessageLimits(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 64 << 10, MaxMessage: 1 << 20})
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	if err := p.TrySend(make([]byte, 1<<20+1), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("message over the maximum: %v", err)
	}
	if st, _ := b.Stats(); st.Lanes[0].Tail != st.Lanes[0].Head {
		t.Fatal("a refused message wrote to the lane")
	}
	msg := bigMsg(make([]byte, 300<<10), 0, 0, 300<<10) // 300 KiB through a 64 KiB lane
	done := make(chan error, 1)
	go func() { done <- p.Send(context.Background(), msg, 0) }()
	small := make([]byte, 1000)
	var sb *ShortBufferError
	for {
		_, _, err := c.Receive(context.Background(), small)
		if errors.As(err, &sb) {
			break
		}
		if err != nil {
			t.Fatalf("receive with a small buffer: %v", err)
		}
	}
	if sb.Need != len(msg) {
		t.Fatalf("short buffer error says %d bytes are needed, want %d", sb.Need, len(msg))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sb.Need)
	n, _, err := c.TryReceive(buf)
	if err != nil || checkBig(buf[:n], 0, 0, len(msg)) != nil {
		t.Fatalf("message after the short buffer: %d bytes, %v", n, err)
	}
	if !strings.Contains(fmt.Sprint(sb), strconv.Itoa(len(msg))) {
		t.Fatalf("short buffer error %q does not say the size", sb)
	}
}

// TestAbandonedMessages: a Send whose deadline passes in the middle of a
// large message, and a producer killed in the middle of one, leave partial
// messages that are never delivered; what follows arrives intact and the
// reassembly files go away.
func TestAbandonedMessages(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b := newBus(t, &Options{Wake: wake, LaneCapacity: 64 << 10, MaxMessage: 8 << 20})
		c, _ := b.NewConsumer()
		p, _ := b.NewProducer()
		big := bigMsg(make([]byte, 4<<20), 0, 0, 4<<20)
		// Nobody reads yet: the lane fills up and the deadline passes.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := p.Send(ctx, big, 0)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("send of a message larger than the lane with nobody reading: %v", err)
		}
		recv := make(chan error, 1)
		buf := make([]byte, 8<<20)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, _, err := c.Receive(ctx, buf)
			if err == nil && string(buf[:n]) != "after the abandoned one" {
				err = fmt.Errorf("received %d bytes %.20q", n, buf[:n])
			}
			recv <- err
		}()
		time.Sleep(20 * time.Millisecond) // the consumer absorbs the partial message
		if err := p.Send(context.Background(), []byte("after the abandoned one"), 0); err != nil {
			t.Fatal(err)
		}
		if err := <-recv; err != nil {
			t.Fatal(err)
		}
		if len(c.asm.parts) != 0 {
			t.Fatalf("the abandoned message is still in reassembly")
		}

		// A producer process killed in the middle of a large message.
		victim := child(t, "producer-die-mid-message", "SHMBUS_NAME="+b.Name())
		if err := victim.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, _, err := c.Receive(ctx, buf)
			if err == nil && string(buf[:n]) != "after the dead one" {
				err = fmt.Errorf("received %d bytes %.20q", n, buf[:n])
			}
			recv <- err
		}()
		if err := waitTimeout(victim, time.Minute); err == nil {
			t.Fatal("victim exited cleanly; the failpoint did not fire")
		}
		p.Send(context.Background(), []byte("after the dead one"), 0)
		if err := <-recv; err != nil {
			t.Fatal(err)
		}
		if _, ok := c.asm.spare[[2]int{0, p.slot}]; !ok || len(asmFiles(b.Path())) < 1 {
			t.Fatal("the live producer's reassembly file was not kept for reuse")
		}
		// The dead producer's partial message is dropped once the lane is
		// idle and the consumer looks (after a sleep).
		// Only the live producer's (idle) file may remain.
		for give := time.Now().Add(5 * time.Second); len(asmFiles(b.Path())) > 1 || len(c.asm.parts) != 0; {
			if time.Now().After(give) {
				t.Fatalf("the dead producer's partial message was never dropped: %v", asmFiles(b.Path()))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			_, _, err := c.Receive(ctx, buf)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("unexpected message or error: %v", err)
			}
		}
	})
}

func init() {
	roles["producer-die-mid-message"] = func() error {
		bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
		if err != nil {
			return err
		}
		p, err := bus.NewProducer()
		if err != nil {
			return err
		}
		claims := 0
		failpoint.AfterClaim.Set(func() {
			if claims++; claims == 20 {
				unix.Kill(os.Getpid(), unix.SIGKILL)
				time.Sleep(time.Hour)
			}
		})
		return p.Send(context.Background(), bigMsg(make([]byte, 4<<20), 1, 0, 4<<20), 0)
	}
}

// TestTooLargeAndPriorityErrors checks that a refused message names the
// limit it exceeds with both numbers (not the ring's "record too large for
// lane"), still matching ErrTooLarge, and that a priority out of range is
// told in proper English.
func TestTooLargeAndPriorityErrors(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 64 << 10, MaxMessage: 1 << 20})
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	size := b.MaxMessage() + 1
	check := func(what string, err error, size, limit int, limitName string) {
		t.Helper()
		var tl *TooLargeError
		if !errors.Is(err, ErrTooLarge) || !errors.As(err, &tl) {
			t.Fatalf("%s: %v, want a *TooLargeError wrapping ErrTooLarge", what, err)
		}
		if tl.Size != size || tl.Limit != limit {
			t.Fatalf("%s: size %d limit %d, want %d and %d", what, tl.Size, tl.Limit, size, limit)
		}
		want := fmt.Sprintf("shmbus: bus %q: %s", b.Name(), fmt.Sprintf(limitName, size, limit))
		if err.Error() != want {
			t.Fatalf("%s: %q, want %q", what, err, want)
		}
	}
	check("TrySend", p.TrySend(make([]byte, size), 0), size, b.MaxMessage(), "send: message of %d bytes exceeds the bus's max message of %d bytes")
	check("Send", p.Send(context.Background(), make([]byte, size), 0), size, b.MaxMessage(), "send: message of %d bytes exceeds the bus's max message of %d bytes")
	_, err = p.SendBatch(context.Background(), [][]byte{make([]byte, size)}, 0)
	check("SendBatch", err, size, b.MaxMessage(), "send: message of %d bytes exceeds the bus's max message of %d bytes")
	_, err = p.Reserve(0, b.MaxRecordPayload()+1)
	check("Reserve", err, b.MaxRecordPayload()+1, b.MaxRecordPayload(), "reserve: record of %d bytes exceeds one record's payload limit of %d bytes (MaxRecordPayload)")

	for _, tc := range []struct {
		priorities int
		want       string
	}{
		{1, "priority out of range: 1, the bus has 1 priority (0)"},
		{3, "priority out of range: 3, the bus has 3 priorities (0..2)"},
	} {
		pb := newBus(t, &Options{Priorities: tc.priorities})
		pp, err := pb.NewProducer()
		if err != nil {
			t.Fatal(err)
		}
		err = pp.TrySend([]byte{1}, tc.priorities)
		if !errors.Is(err, ErrPriority) || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%d priorities: %v, want ErrPriority ending %q", tc.priorities, err, tc.want)
		}
		pp.Close()
	}
}
