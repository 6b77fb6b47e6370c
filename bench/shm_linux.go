package bench

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/shmbus/shmbus"
	"golang.org/x/sys/unix"
)

// The shared-memory methods: shmbus in its modes, the minimal ring that
// bounds what a ring in Go can do, and a Go channel inside one process.

var shmbusProps = Properties{Reliable: true, FlowControl: true, Records: true, Priorities: true}

var shmbusSpinMethod = &method{
	name:    "shmbus-spin",
	desc:    "shmbus SPSC bus, receiver polls (Poll) with back-off",
	api:     "Producer.TrySend / Consumer.Poll(1) polled, copying out; throughput Producer.SendBatch / Consumer.Poll",
	payload: "bytes",
	props:   shmbusProps,
	fixed:   -1,
	batched: true,
	setup:   busSetup(shmbus.SingleProducer, shmbus.WakeFutex),
	open:    busOpen(true),
}

var shmbusFutexMethod = &method{
	name:    "shmbus-futex",
	desc:    "shmbus SPSC bus, blocking calls, futex wake-ups",
	api:     "Producer.Send / Consumer.Receive (spin briefly, then futex); throughput Producer.SendBatch / Consumer.Poll + Wait",
	payload: "bytes",
	props:   shmbusProps,
	fixed:   -1,
	batched: true,
	setup:   busSetup(shmbus.SingleProducer, shmbus.WakeFutex),
	open:    busOpen(false),
}

var shmbusSemMethod = &method{
	name:    "shmbus-sem",
	desc:    "shmbus SPSC bus, blocking calls, System V semaphore wake-ups",
	api:     "Producer.Send / Consumer.Receive (spin briefly, then semtimedop); throughput Producer.SendBatch / Consumer.Poll + Wait",
	payload: "bytes",
	props:   shmbusProps,
	fixed:   -1,
	batched: true,
	setup:   busSetup(shmbus.SingleProducer, shmbus.WakeSem),
	open:    busOpen(false),
}

var shmbusMPSCMethod = &method{
	name:    "shmbus-mpsc",
	desc:    "shmbus MPSC bus, blocking calls, futex; throughput from 2 producer processes",
	api:     "Producer.Send / Consumer.Receive; throughput Producer.SendBatch (2 processes) / Consumer.Poll + Wait",
	payload: "bytes",
	props:   shmbusProps,
	fixed:   -1,
	batched: true,
	senders: 2,
	setup:   busSetup(shmbus.MultiProducer, shmbus.WakeFutex),
	open:    busOpen(false),
}

// busLane is the lane capacity for messages of size bytes: 1 MiB, or room
// for four messages; a record may take half a lane, so that every message
// up to MaxSize is one record.
func busLane(size int) int {
	return max(1<<20, 1<<bits.Len(uint(4*size-1)))
}

// batchSize is the messages per SendBatch: about 128 KiB, at most 256.
func batchSize(size int) int { return min(max((128<<10)/(size+16), 1), 256) }

// busSetup creates the ping bus (measuring side to peer) and the pong bus
// (peer to measuring side).
func busSetup(pm shmbus.ProducerMode, wake shmbus.WakeMode) func(c *cell) error {
	return func(c *cell) error {
		lane := busLane(c.size)
		var buses []*shmbus.Bus
		for _, n := range []string{"ping", "pong"} {
			b, err := shmbus.Create(c.name+"-"+n, &shmbus.Options{Producers: pm, Wake: wake, LaneCapacity: lane,
				RecordLimit: lane / 2, MaxMessage: max(shmbus.DefaultMaxMessage, c.size), Dir: c.dir})
			if err != nil {
				return err
			}
			c.cleanups = append(c.cleanups, b.Remove)
			c.names[n] = b.Name()
			buses = append(buses, b)
		}
		c.names["dir"] = c.dir
		c.shared = buses
		return nil
	}
}

func busOpen(spin bool) func(s *side) (endpoint, error) {
	return func(s *side) (ep endpoint, err error) {
		e := &busEP{s: s, spin: spin, b: backoff{abort: s.abort}}
		defer func() {
			if err != nil {
				e.close()
			}
		}()
		var ping, pong *shmbus.Bus
		if s.parent {
			buses := sliceOf[*shmbus.Bus](s.shared)
			ping, pong = buses[0], buses[1]
		} else {
			opts := &shmbus.OpenOptions{Dir: s.names["dir"]}
			if ping, err = shmbus.Open(s.names["ping"], opts); err != nil {
				return nil, err
			}
			e.buses = append(e.buses, ping)
			if pong, err = shmbus.Open(s.names["pong"], opts); err != nil {
				return nil, err
			}
			e.buses = append(e.buses, pong)
		}
		// Latency: ping one way, pong back. One-way traffic goes from
		// the peers to the measuring side on pong; the idle peer waits
		// on ping.
		sendOn, recvOn := ping, pong
		if !s.parent {
			sendOn, recvOn = pong, ping
		}
		switch s.mode {
		case modeThroughput, modeUnbatched:
			if s.parent {
				sendOn = nil
			} else {
				recvOn = nil
			}
		case modeIdle:
			if s.parent {
				recvOn = nil
			} else {
				sendOn = nil
			}
		}
		if sendOn != nil {
			if e.p, err = sendOn.NewProducer(); err != nil {
				return nil, err
			}
		}
		if recvOn != nil {
			if e.c, err = recvOn.AwaitConsumer(s.ctx); err != nil {
				return nil, err
			}
		}
		return e, nil
	}
}

// busEP is a producer on one bus and a consumer on the other.
type busEP struct {
	s     *side
	spin  bool
	buses []*shmbus.Bus // opened here (peers), closed with the endpoint
	p     *shmbus.Producer
	c     *shmbus.Consumer
	b     backoff
}

func (e *busEP) send(msg []byte) error {
	if !e.spin {
		return e.s.gone(e.p.Send(e.s.ctx, msg, 0))
	}
	for {
		err := e.p.TrySend(msg, 0)
		if !errors.Is(err, shmbus.ErrFull) {
			e.b.reset()
			return err
		}
		if err := e.b.wait(); err != nil {
			return err
		}
	}
}

// recv, spinning, polls with Poll(1, ...) and copies the message out:
// the copying TryReceive formats an error for every empty poll (about
// 200ns an empty poll against Poll's 55ns here), which would make the
// spinning receiver slow to notice a message.
func (e *busEP) recv(buf []byte) (int, error) {
	if !e.spin {
		n, _, err := e.c.Receive(e.s.ctx, buf)
		return n, e.s.gone(err)
	}
	for {
		var n int
		var short bool
		k, err := e.c.Poll(1, func(msg []byte, _ int) {
			n = copy(buf, msg)
			short = n < len(msg)
		})
		switch {
		case err != nil:
			return 0, err
		case short:
			return 0, fmt.Errorf("message larger than %d bytes", len(buf))
		case k > 0:
			e.b.reset()
			return n, nil
		}
		if err := e.b.wait(); err != nil {
			return 0, err
		}
	}
}

func (e *busEP) sendBatch(msgs [][]byte) error {
	for len(msgs) > 0 {
		n, err := e.p.SendBatch(e.s.ctx, msgs, 0)
		if err != nil {
			return e.s.gone(err)
		}
		msgs = msgs[n:]
	}
	return nil
}

func (e *busEP) poll(f func(msg []byte)) (int, error) {
	for {
		n, err := e.c.Poll(0, func(msg []byte, _ int) { f(msg) })
		if n > 0 || err != nil {
			e.b.reset()
			return n, e.s.gone(err)
		}
		if e.spin {
			err = e.b.wait()
		} else {
			err = e.s.gone(e.c.Wait(e.s.ctx))
		}
		if err != nil {
			return 0, err
		}
	}
}

func (e *busEP) close() error {
	var errs []error
	if e.p != nil {
		errs = append(errs, e.p.Close())
	}
	if e.c != nil {
		errs = append(errs, e.c.Close())
	}
	for _, b := range e.buses {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// backoff is how a polling side waits for its peer: it polls back to
// back for tightPolls, then keeps polling but looks at the clock every 32
// polls; after spinFor it yields the CPU to other processes (sched_yield)
// every 32 polls, so that a peer the scheduler put on the same CPU gets
// to run; after yieldFor it sleeps 50µs every 32 polls (a peer that is
// descheduled or gone). While traffic flows between two CPUs a round trip
// ends long before spinFor. Both spinning methods use it.
type backoff struct {
	n     int
	start time.Time
	abort *atomic.Bool
}

const (
	tightPolls = 256
	spinFor    = 5 * time.Microsecond
	yieldFor   = 2 * time.Millisecond
)

func (b *backoff) reset() { b.n = 0 }

func (b *backoff) wait() error {
	b.n++
	if b.n <= tightPolls || b.n%32 != 0 {
		return nil
	}
	if b.n == tightPolls+32 {
		b.start = time.Now()
		return nil
	}
	if b.abort != nil && b.abort.Load() {
		return errAborted
	}
	switch waited := time.Since(b.start); {
	case waited < spinFor:
	case waited < yieldFor:
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	default:
		time.Sleep(50 * time.Microsecond)
	}
	return nil
}

var ringMinimalMethod = &method{
	name: "ring-minimal",
	desc: "reference: the smallest correct shared-memory ring in Go (fixed slots, sequence words, polling)",
	api: "memfd_create + mmap (x/sys/unix), one ring each way; sync/atomic sequence word per slot, " +
		"polled with the same back-off as shmbus-spin; throughput batched (the consumer frees the slots of all it took at once), " +
		"and one message per call (1/call)",
	payload: "bytes",
	props:   Properties{Reliable: true, FlowControl: true, Records: true},
	notes:   "A ring of fixed-size slots, each a sequence word (position+1, stored last) and the message; the consumer polls the next slot's word and publishes its position for the producer, which reloads it only when the ring looks full. No variable sizes, priorities, blocking, crash recovery or validation.",
	fixed:   -1,
	batched: true,
	setup: func(c *cell) error {
		size := ringBytes(c.size)
		var fds, dups []int
		defer func() {
			if len(dups) < 2 {
				for _, fd := range append(fds, dups...) {
					unix.Close(fd)
				}
			}
		}()
		for _, n := range []string{"ping", "pong"} {
			fd, err := unix.MemfdCreate("shmbus-bench-ring-"+n, unix.MFD_CLOEXEC)
			if err != nil {
				return fmt.Errorf("memfd_create: %w", err)
			}
			fds = append(fds, fd)
			if err := unix.Ftruncate(fd, int64(size)); err != nil {
				return fmt.Errorf("ftruncate: %w", err)
			}
			d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("dup: %w", err)
			}
			dups = append(dups, d)
		}
		c.addFiles(fds, dups, "ring")
		return nil
	},
	open: func(s *side) (endpoint, error) {
		e := &ringEP{s: s, b: backoff{abort: s.abort}}
		for i := range 2 {
			r, err := mapRing(s.fd(i), s.size)
			if err != nil {
				e.close()
				return nil, err
			}
			e.rings[i] = r
		}
		e.out, e.in = e.rings[0], e.rings[1] // ping, pong
		if !s.parent {
			e.out, e.in = e.in, e.out
		}
		return e, nil
	},
}

// A minimal ring: the consumer's position (the tail) on its own 128-byte
// block, then the slots: an 8-byte sequence word, then the message padded
// to 8 bytes. A slot holds the message of position p when its word is
// p+1: the producer writes the message, then stores the word (sync/atomic,
// sequentially consistent: the message is visible to whoever loads the
// word); the consumer loads the word, copies the message, then stores the
// tail, which the producer loads before it reuses a slot. Words of an
// earlier lap are p+1-slots, never p+1, so nothing needs clearing.
type ring struct {
	mem   []byte
	slots uint64
	slot  int // bytes per slot
	tail  *atomic.Uint64
}

const ringHeader = 128

func ringGeometry(size int) (slots, slot int) {
	slot = 8 + (size+7)&^7
	slots = 1 << (bits.Len(uint((4<<20)/slot)) - 1) // the largest power of two that fits 4 MiB
	return min(max(slots, 4), 4096), slot
}

func ringBytes(size int) int {
	slots, slot := ringGeometry(size)
	return ringHeader + slots*slot
}

func mapRing(fd, size int) (*ring, error) {
	slots, slot := ringGeometry(size)
	mem, err := unix.Mmap(fd, 0, ringBytes(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &ring{mem: mem, slots: uint64(slots), slot: slot, tail: (*atomic.Uint64)(unsafe.Pointer(&mem[0]))}, nil
}

func (r *ring) word(pos uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&r.mem[ringHeader+int(pos&(r.slots-1))*r.slot]))
}

func (r *ring) payload(pos uint64, n int) []byte {
	off := ringHeader + int(pos&(r.slots-1))*r.slot + 8
	return r.mem[off : off+n]
}

type ringEP struct {
	s       *side
	rings   [2]*ring
	out, in *ring
	wpos    uint64 // next position to write on out
	rpos    uint64 // next position to read on in
	tail    uint64 // out's tail as last loaded
	b       backoff
}

func (e *ringEP) send(msg []byte) error {
	r := e.out
	for e.wpos-e.tail >= r.slots {
		e.tail = r.tail.Load() // pairs with the consumer's Store after its copy
		if e.wpos-e.tail < r.slots {
			break
		}
		if err := e.b.wait(); err != nil {
			return err
		}
	}
	e.b.reset()
	copy(r.payload(e.wpos, len(msg)), msg)
	r.word(e.wpos).Store(e.wpos + 1) // publishes the message: pairs with the consumer's Load
	e.wpos++
	return nil
}

func (e *ringEP) recv(buf []byte) (int, error) {
	r := e.in
	w := r.word(e.rpos)
	for w.Load() != e.rpos+1 { // pairs with the producer's Store after its copy
		if err := e.b.wait(); err != nil {
			return 0, err
		}
	}
	e.b.reset()
	n := copy(buf, r.payload(e.rpos, len(buf)))
	e.rpos++
	r.tail.Store(e.rpos) // frees the slot: pairs with the producer's Load
	return n, nil
}

// sendBatch writes as many of msgs as there are free slots for, then
// waits for room for the rest: one look at the tail per run of slots
// instead of per message.
func (e *ringEP) sendBatch(msgs [][]byte) error {
	r := e.out
	for len(msgs) > 0 {
		free := r.slots - (e.wpos - e.tail)
		if free == 0 {
			e.tail = r.tail.Load() // pairs with the consumer's Store after its copies
			if free = r.slots - (e.wpos - e.tail); free == 0 {
				if err := e.b.wait(); err != nil {
					return err
				}
				continue
			}
		}
		e.b.reset()
		n := min(uint64(len(msgs)), free)
		for _, msg := range msgs[:n] {
			copy(r.payload(e.wpos, len(msg)), msg)
			r.word(e.wpos).Store(e.wpos + 1) // publishes the message: pairs with the consumer's Load
			e.wpos++
		}
		msgs = msgs[n:]
	}
	return nil
}

// poll hands f every published message, then frees their slots with one
// store of the tail.
func (e *ringEP) poll(f func(msg []byte)) (int, error) {
	r := e.in
	for {
		n := 0
		for uint64(n) < r.slots && r.word(e.rpos).Load() == e.rpos+1 { // pairs with the producer's Store after its copy
			f(r.payload(e.rpos, e.s.size))
			e.rpos++
			n++
		}
		if n > 0 {
			e.b.reset()
			r.tail.Store(e.rpos) // frees the slots: pairs with the producer's Load
			return n, nil
		}
		if err := e.b.wait(); err != nil {
			return 0, err
		}
	}
}

func (e *ringEP) close() error {
	var errs []error
	for _, r := range e.rings {
		if r != nil {
			errs = append(errs, unix.Munmap(r.mem))
		}
	}
	return errors.Join(errs...)
}

var goChanMethod = &method{
	name:      "go-chan",
	desc:      "reference: Go channels between two goroutines of one process",
	api:       "chan of message buffers (copy in, copy out), select with the run's context",
	payload:   "bytes",
	props:     Properties{Reliable: true, FlowControl: true, Records: true},
	notes:     "In one process, not two: the other rows cross a process boundary. With --cpu both goroutines run on the first CPU.",
	fixed:     -1,
	inProcess: true,
	setup: func(c *cell) error {
		depth := 1
		if c.mode == modeThroughput || c.mode == modeUnbatched {
			depth = 256
		}
		ch := &goChans{}
		for i := range 2 {
			ch.full[i] = make(chan []byte, depth)
			ch.free[i] = make(chan []byte, depth+1)
			for range depth + 1 {
				ch.free[i] <- make([]byte, c.size)
			}
		}
		c.shared = ch
		return nil
	},
	open: func(s *side) (endpoint, error) {
		ch := s.shared.(*goChans)
		e := &chanEP{s: s, ch: ch, out: 0, in: 1}
		if !s.parent {
			e.out, e.in = 1, 0
		}
		return e, nil
	},
}

// goChans are two directions of buffered channels of message buffers,
// each with a free list: a send copies into a free buffer, a receive
// copies out and gives the buffer back.
type goChans struct {
	full, free [2]chan []byte
}

type chanEP struct {
	s       *side
	ch      *goChans
	out, in int
}

func (e *chanEP) send(msg []byte) error {
	var b []byte
	select {
	case b = <-e.ch.free[e.out]:
	case <-e.s.ctx.Done():
		return errAborted
	}
	copy(b, msg)
	select {
	case e.ch.full[e.out] <- b[:len(msg)]:
		return nil
	case <-e.s.ctx.Done():
		return errAborted
	}
}

func (e *chanEP) recv(buf []byte) (int, error) {
	select {
	case b := <-e.ch.full[e.in]:
		n := copy(buf, b)
		e.ch.free[e.in] <- b
		return n, nil
	case <-e.s.ctx.Done():
		return 0, errAborted
	}
}

func (e *chanEP) close() error { return nil }

// startInProcess runs a peer role on a goroutine of this process, for the
// in-process methods.
func (r *runner) startInProcess(c *cell, role string, producer int) *peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{pid: unixGetpid(), done: make(chan struct{}), stopFlag: new(atomic.Bool), cancel: cancel}
	s := &side{size: c.size, mode: c.mode, producer: producer, names: c.names, shared: c.shared,
		ctx: ctx, abort: new(atomic.Bool), peer: p.pid}
	go func() {
		defer close(p.done)
		defer cancel()
		p.err = runRole(c.m, role, s, p.stopFlag, nil)
		runtime.Gosched()
	}()
	return p
}

func unixGetpid() int { return unix.Getpid() }
