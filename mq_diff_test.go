package shmbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/shmbus/shmbus/internal/mq"
)

// TestDifferentialPOSIXQueue runs the same random sequences of sends (with
// random priorities) and interleaved receives through a bus and through a
// real POSIX message queue of the kernel, and requires the same receive
// order: the oldest message of the highest priority first.
func TestDifferentialPOSIXQueue(t *testing.T) {
	for _, priorities := range []int{1, 4, 32} {
		for seed := uint64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("priorities=%d/seed=%d", priorities, seed), func(t *testing.T) {
				differential(t, priorities, seed)
			})
		}
	}
}

func differential(t *testing.T, priorities int, seed uint64) {
	const depth = 10 // the kernel's default queue limit for unprivileged users
	name := fmt.Sprintf("shmbus-diff-%d-%d", os.Getpid(), seed)
	q, err := mq.Create(name, mq.Attr{MaxMsg: depth, MsgSize: 64})
	if err != nil {
		t.Skipf("POSIX message queues unavailable: %v", err)
	}
	defer q.Unlink()
	defer q.Close()
	b := newBus(t, &Options{Priorities: priorities, LaneCapacity: 4096})
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()

	rng := rand.New(rand.NewPCG(seed, uint64(priorities)))
	deadline := func() time.Time { return time.Now().Add(time.Second) }
	kbuf, sbuf := make([]byte, 64), make([]byte, 64)
	outstanding, next, received := 0, uint32(0), 0
	receive := func() {
		kn, kprio, err := q.Receive(kbuf, deadline())
		if err != nil {
			t.Fatalf("kernel receive: %v", err)
		}
		sn, sprio, err := c.TryReceive(sbuf)
		if err != nil {
			t.Fatalf("shmbus receive (kernel gave id %d prio %d): %v", binary.LittleEndian.Uint32(kbuf), kprio, err)
		}
		kid, sid := binary.LittleEndian.Uint32(kbuf[:kn]), binary.LittleEndian.Uint32(sbuf[:sn])
		if kid != sid || int(kprio) != sprio || kn != sn {
			t.Fatalf("receive %d: kernel gave id %d prio %d (%d bytes), shmbus id %d prio %d (%d bytes)",
				received, kid, kprio, kn, sid, sprio, sn)
		}
		outstanding--
		received++
	}
	for op := 0; op < 20000; op++ {
		if outstanding == depth || outstanding > 0 && rng.IntN(2) == 0 {
			receive()
			continue
		}
		prio := rng.IntN(priorities)
		msg := make([]byte, 4+rng.IntN(60))
		binary.LittleEndian.PutUint32(msg, next)
		next++
		if err := q.Send(msg, uint(prio), deadline()); err != nil {
			t.Fatalf("kernel send: %v", err)
		}
		if err := p.TrySend(msg, prio); err != nil {
			t.Fatalf("shmbus send: %v", err)
		}
		outstanding++
	}
	for outstanding > 0 {
		receive()
	}
	if _, _, err := c.TryReceive(sbuf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("shmbus has more messages than the kernel: %v", err)
	}
	if received < 5000 {
		t.Fatalf("only %d receives compared", received)
	}
}
