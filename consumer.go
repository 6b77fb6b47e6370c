package shmbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// Consumer receives the messages of a bus: the oldest message of the
// highest priority first, as POSIX mq_receive orders them. A bus has one
// consumer at a time. It is not safe for concurrent use.
type Consumer struct {
	b      *Bus
	slot   int
	lanes  []*ring.Consumer
	spin   ring.Spinner
	closed atomic.Bool // also set by Bus.Close from another goroutine
	gate   *gate       // the call gate of the consumer's calls (gate.go)
	asm    *assembler

	views [][]byte // Deliver's batch, kept to save allocations

	lastRecover time.Time
	emptyLooks  uint32 // lanes found empty by receives, for checkStuck

	holds []laneHolds // messages Take left on the bus, per lane
	held  int         // how many, over all lanes
}

// NewConsumer takes the bus's consumer role. It fails with ErrBusy while a
// live process holds it; if the holder died, the new consumer takes over
// and resumes after the last message the old one released.
func (b *Bus) NewConsumer() (*Consumer, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	if b.subs != nil {
		return nil, fmt.Errorf("bus %q: new consumer: %w", b.name, ErrFanOut)
	}
	var c *Consumer
	err := segment.Guard(func() error {
		slot, err := b.peers.acquire(layout.RoleConsumer, b.lanes)
		if err != nil {
			return err
		}
		role := layout.Word32(b.seg, layout.OffConsumer)
		if err := b.peers.takeRole(role, slot, layout.RoleConsumer, "the consumer role"); err != nil {
			b.peers.release(slot)
			return err
		}
		c = &Consumer{b: b, slot: slot, asm: newAssembler(b), holds: make([]laneHolds, len(b.lanes))}
		c.gate = newGate(&c.closed)
		c.asm.load()
		b.mu.Lock()
		b.consumer = c
		b.addGate(c.gate)
		b.mu.Unlock()
		for _, l := range b.lanes {
			lc, err := ring.NewConsumer(l)
			if err != nil {
				b.peers.dropRole(role, slot)
				b.peers.release(slot)
				return err
			}
			c.lanes = append(c.lanes, lc)
		}
		return nil
	})
	if err != nil {
		return nil, busError(b.name, fmt.Errorf("new consumer: %w", err))
	}
	return c, nil
}

// AwaitConsumer is NewConsumer that, while a live process holds the
// consumer role, waits for it to be given back (or its holder to die)
// until ctx is done.
func (b *Bus) AwaitConsumer(ctx context.Context) (*Consumer, error) {
	for {
		c, err := b.NewConsumer()
		if !errors.Is(err, ErrBusy) {
			return c, err
		}
		t := time.NewTimer(roleRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, busError(b.name, fmt.Errorf("await consumer role: %w (%w)", ctx.Err(), err))
		case <-t.C:
		}
	}
}

// roleRetry is how often AwaitConsumer looks at the consumer role again.
const roleRetry = 10 * time.Millisecond

func (c *Consumer) check() error {
	if c.closed.Load() {
		return busError(c.b.name, fmt.Errorf("consumer: %w", ErrClosed))
	}
	return c.gate.enter(c.b)
}

// TryReceive copies the next message into buf and returns its size and
// priority, or ErrEmpty if there is none now. A buffer too small gets a
// *ShortBufferError (wrapping ErrShortBuffer) saying the size needed, and
// the message stays.
func (c *Consumer) TryReceive(buf []byte) (n, prio int, err error) {
	if err := c.checkNoHolds(); err != nil {
		return 0, 0, err
	}
	defer c.gate.exit(c.b)
	err = segment.Guard(func() error {
		n, prio, _, err = c.receive(buf)
		return err
	})
	return n, prio, c.wrap(err)
}

// receive takes the next message into buf; it returns its size, priority
// and the peer slot of its producer.
func (c *Consumer) receive(buf []byte) (int, int, int, error) {
	for i := len(c.lanes) - 1; i >= 0; i-- {
		m, err := c.next(i)
		if err == ring.ErrEmpty {
			// Give back padding skipped on the way: left unreleased at the
			// end of a lane it would count as used space, and a producer
			// waiting for that room would wait for ever.
			c.releaseFree(i)
			c.checkStuck(i)
			continue
		}
		if err != nil {
			return 0, i, 0, err
		}
		if len(m.data) > len(buf) {
			return 0, i, 0, &ShortBufferError{Need: len(m.data), Have: len(buf)}
		}
		n := copy(buf, m.data)
		c.take(m)
		c.lanes[i].Release()
		c.finish(m)
		return n, i, m.producer, nil
	}
	c.flush() // idle: make the shared counters exact
	return 0, 0, 0, ErrEmpty
}

func (c *Consumer) flush() {
	for _, l := range c.lanes {
		l.Flush()
	}
}

// message is the next complete message of a lane: a whole record (a view
// of the ring) or a reassembled one (a view of its reassembly file).
type message struct {
	data []byte
	lane int
	asm  *asm
	pos  uint64        // ring position of its last (or only) record
	rec  layout.Record // that record

	producer int // the peer slot of its producer (as the record says)
}

// next returns the next complete message of lane i without taking it,
// absorbing (and releasing) the fragments of larger messages on the way.
func (c *Consumer) next(i int) (message, error) {
	l := c.lanes[i]
	for {
		r, p, err := l.Peek()
		if err != nil {
			return message{}, err
		}
		pos, slot := l.Position(), int(r.Producer)
		if r.Flags&(layout.FragBegin|layout.FragEnd) != layout.FragBegin|layout.FragEnd && slot >= c.b.g.PeerSlots {
			return message{}, fmt.Errorf("lane %d at %d: %w: fragment from producer slot %d of %d", i, pos, ErrCorrupt, slot, c.b.g.PeerSlots)
		}
		var x *asm
		if len(c.asm.parts) != 0 { // a map look-up per message costs
			x = c.asm.parts[[2]int{i, slot}]
		}
		// older: at or before the last fragment x absorbed, so seen by a
		// consumer that died before releasing it.
		older := x != nil && x.holds(pos)
		whole := r.Flags&(layout.FragBegin|layout.FragEnd) == layout.FragBegin|layout.FragEnd
		if whole {
			if x != nil && !older {
				c.asm.discard(i, slot) // its producer gave up on an earlier message
			}
			// Taken and not released before a crash: delivered again.
			return message{data: p, lane: i, pos: pos, rec: r, producer: slot}, nil
		}
		if older {
			// A fragment already absorbed (or a message already delivered).
			if x.delivered() {
				c.asm.discard(i, slot)
			}
			c.skip(i)
			continue
		}
		switch r.Flags & (layout.FragBegin | layout.FragEnd) {
		case layout.FragBegin:
			if len(p) < 8 {
				return message{}, fmt.Errorf("lane %d at %d: %w: first fragment of %d bytes", i, pos, ErrCorrupt, len(p))
			}
			total := binary.LittleEndian.Uint64(p)
			if total > uint64(c.b.hdr.MaxMessage) || total < uint64(len(p)-8) {
				return message{}, fmt.Errorf("lane %d at %d: %w: message of %d bytes (limit %d)", i, pos, ErrCorrupt, total, c.b.hdr.MaxMessage)
			}
			owner := c.b.peers.owner(slot).Load()
			x, err := c.asm.begin(i, slot, owner, total)
			if err != nil {
				// Nowhere to keep it: skip the first fragment, so the
				// rest are orphans, dropped as they come, and the lane
				// moves on.
				c.skip(i)
				layout.Word64(c.b.seg, layout.OffDropped).Add(1)
				return message{}, fmt.Errorf("%w: priority %d, %d bytes from producer slot %d (pid %d): %w",
					ErrDropped, i, total, slot, owner>>32, err)
			}
			if err := x.absorb(p[8:], pos); err != nil {
				return message{}, err
			}
		case 0:
			if x != nil { // else an orphan: its first fragment was lost with its producer
				if err := x.absorb(p, pos); err != nil {
					c.asm.discard(i, slot)
				}
			}
		case layout.FragEnd:
			if x == nil {
				break // orphan
			}
			if f := x.filled(); f > x.total || x.total-f != uint64(len(p)) {
				c.asm.discard(i, slot)
				break
			}
			// Copied, not absorbed: the record stays until delivery, and
			// copying it again after a crash writes the same bytes.
			copy(x.data()[x.filled():], p)
			return message{data: x.data(), lane: i, asm: x, pos: pos, rec: r, producer: slot}, nil
		}
		c.skip(i)
	}
}

// skip takes the record at the read position of lane i and releases it,
// unless messages taken earlier in the lane are held (see Take): then it
// is released with them.
func (c *Consumer) skip(i int) {
	c.lanes[i].Next()
	c.releaseFree(i)
}

// take moves past m's last record (still to be released); for a
// reassembled message it first marks the file delivered.
func (c *Consumer) take(m message) {
	if m.asm != nil {
		m.asm.markDelivered(m.pos)
	}
	l := c.lanes[m.lane]
	if l.Position() == m.pos {
		l.Advance(m.rec) // the record next found: no second look at the ring
		return
	}
	l.Next()
}

// finish removes m's reassembly file, once its record is released.
func (c *Consumer) finish(m message) {
	if m.asm != nil {
		c.asm.discard(m.lane, m.asm.slot)
	}
}

// Receive is TryReceive that waits for a message until ctx is done (its
// error is returned) or the bus is closed (ErrClosed).
func (c *Consumer) Receive(ctx context.Context, buf []byte) (n, prio int, err error) {
	n, prio, _, err = c.receiveFrom(ctx, buf)
	return n, prio, err
}

// receiveFrom is Receive that also says which peer slot the message's
// producer held.
func (c *Consumer) receiveFrom(ctx context.Context, buf []byte) (n, prio, slot int, err error) {
	if err := c.checkNoHolds(); err != nil {
		return 0, 0, 0, err
	}
	defer c.gate.exit(c.b)
	err = segment.Guard(func() error {
		for {
			n, prio, slot, err = c.receive(buf)
			if err != ErrEmpty {
				return err
			}
			if err := c.wait(ctx); err != nil {
				return err
			}
		}
	})
	return n, prio, slot, c.wrap(err)
}

// Poll hands every message published now (at most max if max > 0) to f,
// highest priority first, and releases them together: the zero-copy batch
// receive. payload is valid only during the call and is shared memory.
func (c *Consumer) Poll(max int, f func(payload []byte, prio int)) (int, error) {
	if err := c.checkNoHolds(); err != nil {
		return 0, err
	}
	defer c.gate.exit(c.b)
	total := 0
	err := segment.Guard(func() error {
		for i := len(c.lanes) - 1; i >= 0; i-- {
			l := c.lanes[i]
			for max <= 0 || total < max {
				m, err := c.next(i)
				if err == ring.ErrEmpty {
					c.checkStuck(i)
					break
				}
				if err != nil {
					l.Release()
					return err
				}
				f(m.data, i)
				total++
				c.take(m)
				if m.asm != nil {
					l.Release()
					c.finish(m)
				}
			}
			l.Release() // whole records: one release for the batch
		}
		if total == 0 {
			c.flush()
		}
		return nil
	})
	return total, c.wrap(err)
}

// Deliver hands the messages published now, highest priority first, to
// write, in batches of one priority: msgs are views of shared memory, valid
// only during the call (write must neither keep nor change them). write
// returns how many of them, from the first, it has finished with (written
// out, stored): those are released and gone from the bus; the rest stay on
// it, in order, for the next receive. An error from write ends Deliver and
// is returned as it is, after the messages write finished with are
// released. Deliver hands over at most max messages if max > 0, and does
// not wait: with nothing published it returns 0 and no error.
//
// This is the receive of a consumer that must lose nothing when it is
// killed: a message leaves the bus only after write has handled it, so a
// consumer that dies between the two (SIGKILL, a crash, the OOM killer)
// leaves it for the next one, which delivers it again: at least once, and
// at most the last batch twice. One batch is at most 256 messages and
// 64 KiB (or one larger message), and only messages of one record: a
// message reassembled from fragments comes alone.
func (c *Consumer) Deliver(max int, write func(msgs [][]byte, prio int) (int, error)) (int, error) {
	if err := c.checkNoHolds(); err != nil {
		return 0, err
	}
	defer c.gate.exit(c.b)
	total := 0
	var werr error
	err := segment.Guard(func() error {
		for i := len(c.lanes) - 1; i >= 0; i-- {
			for max <= 0 || total < max {
				limit := deliverBatch
				if max > 0 {
					limit = min(limit, max-total)
				}
				k, more, err := c.deliver(i, limit, write, &werr)
				total += k
				if err != nil || werr != nil {
					return err
				}
				if !more {
					break
				}
			}
		}
		if total == 0 {
			c.flush()
		}
		return nil
	})
	if werr != nil {
		return total, werr
	}
	return total, c.wrap(err)
}

// A batch of Deliver is at most deliverBatch messages, and ends with the
// message that takes it to deliverBytes: what a pipe holds, so that space
// returns to the producers while a slow reader drains the output, and a
// killed consumer leaves little to deliver twice.
const (
	deliverBatch = 256
	deliverBytes = 64 << 10
)

// deliver hands one batch of lane i to write (see Deliver): at most limit
// messages, taken but not released until write says it is done with them.
// It returns how many were delivered and whether the lane may hold more;
// an error of write is stored in *werr.
func (c *Consumer) deliver(i, limit int, write func([][]byte, int) (int, error), werr *error) (int, bool, error) {
	l := c.lanes[i]
	m, err := c.next(i)
	if err == ring.ErrEmpty {
		l.Release() // padding skipped on the way (see receive)
		c.checkStuck(i)
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	batch := append(c.views[:0], m.data)
	defer func() { clear(batch); c.views = batch[:0] }() // keep no view of the ring
	if m.asm != nil {
		// Reassembled: taken (marked delivered) only once written, since a
		// file marked delivered is not delivered again.
		k, err := write(batch, i)
		*werr = err
		if k < 1 {
			return 0, false, nil
		}
		c.take(m)
		l.Release()
		c.finish(m)
		return 1, err == nil, nil
	}
	c.take(m)
	size := len(m.data)
	for len(batch) < limit && size < deliverBytes {
		// Only whole records join a batch: taking a fragment (c.next
		// absorbs and releases them) would release the batch unwritten.
		r, _, err := l.Peek()
		if err != nil || r.Flags&(layout.FragBegin|layout.FragEnd) != layout.FragBegin|layout.FragEnd {
			break
		}
		m, err := c.next(i)
		if err != nil {
			break
		}
		c.take(m)
		batch = append(batch, m.data)
		size += len(m.data)
	}
	k, err := write(batch, i)
	*werr = err
	k = min(max(k, 0), len(batch))
	if k < len(batch) {
		// Give back what write did not finish: take again the k it did.
		l.Untake()
		for range k {
			m, err := c.next(i)
			if err != nil {
				return 0, false, err
			}
			c.take(m)
		}
	}
	l.Release()
	return k, k == len(batch) && *werr == nil, nil
}

// Wait blocks until a message is published, ctx is done or the bus closes.
func (c *Consumer) Wait(ctx context.Context) error {
	if err := c.check(); err != nil {
		return err
	}
	defer c.gate.exit(c.b)
	return c.wrap(segment.Guard(func() error { return c.wait(ctx) }))
}

func (c *Consumer) ready() bool {
	for _, l := range c.lanes {
		if l.Ready() {
			return true
		}
	}
	return false
}

// checkStuck runs when a receive finds lane i empty. Once in a while it
// looks whether the lane is stuck behind a claim (a producer mid-write, or
// dead) while other lanes keep the consumer too busy to sleep, where
// recovery would otherwise run. Not every time: InFlight reads the tail,
// the line producers write on every claim.
func (c *Consumer) checkStuck(i int) {
	if c.emptyLooks++; c.emptyLooks%1024 == 0 && c.lanes[i].InFlight() {
		c.recover()
	}
}

// recover runs after every sleep: a lane whose read position is claimed
// but unpublished may be held by a dead producer. It looks at most every
// inFlightBackstop, since proving death reads /proc for every peer.
func (c *Consumer) recover() {
	if time.Since(c.lastRecover) < inFlightBackstop {
		return
	}
	c.lastRecover = time.Now()
	for i, l := range c.lanes {
		if l.InFlight() {
			l.Recover(c.b.peers)
		}
		if len(c.asm.parts)+len(c.asm.spare) > 0 && l.Drained() {
			c.asm.collect(i, l.Drained)
		}
	}
}

func (c *Consumer) wait(ctx context.Context) error {
	stop, cleanup := c.b.stopper(ctx, c.b.data)
	defer cleanup()
	c.flush() // about to wait: make the shared counters exact
	for {
		// Which backstop: short steps while some lane's read position is
		// claimed and unpublished (its claimant may be dead, and nobody
		// rings for a death), the doorbell's own (200 ms growing to 1 s)
		// while messages are being reassembled (their files are collected
		// on wake-ups), and idleBackstop when nothing at all is claimed past
		// any read position: then no producer holds space that a death
		// could leave unpublished, and only a lost ring (a producer dying
		// between its publish and its ring, a failed wake call) needs the
		// timer. Each idle step ends at its deadline and is decided again.
		// A claim that appears during an idle sleep ends it (the ready
		// check sees it after any wake-up), so that it is waited for in
		// short steps.
		backstop, until, idle, ready := time.Duration(0), deadlineOf(ctx), false, c.ready
		switch {
		case c.inFlight():
			backstop = inFlightBackstop
		case len(c.asm.parts)+len(c.asm.spare) == 0:
			backstop, ready = idleBackstop, c.readyOrClaimed
			if step := time.Now().Add(idleBackstop); until.IsZero() || step.Before(until) {
				until, idle = step, true
			}
		}
		err := c.b.data.Wait(ready, stop, until, &c.spin, backstop, c.recover)
		switch {
		case err == nil && !c.ready():
			continue // space was claimed: decide the backstop again
		case idle && errors.Is(err, os.ErrDeadlineExceeded):
			continue // the idle step's end, not the caller's deadline
		}
		return ctxErr(ctx, err)
	}
}

// readyOrClaimed reports whether some lane has a record at its read
// position, published or only claimed.
func (c *Consumer) readyOrClaimed() bool { return c.ready() || c.inFlight() }

// inFlight reports whether some lane's read position is claimed but not
// published.
func (c *Consumer) inFlight() bool {
	for _, l := range c.lanes {
		if l.InFlight() {
			return true
		}
	}
	return false
}

// inFlightBackstop bounds sleeps while a lane's read position is claimed but
// unpublished, so that a dead claimant is found soon. idleBackstop bounds
// them while nothing is claimed: it bounds what a lost wake-up costs, and
// how late the consumer notices a producer that claimed space after the
// consumer went to sleep and died before publishing it. An idle consumer
// wakes this rarely, which is what makes it as cheap as a blocked pipe
// reader (docs/benchmarks.md).
const inFlightBackstop = 20 * time.Millisecond

var idleBackstop = 10 * time.Second // a variable for tests only

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func (c *Consumer) wrap(err error) error {
	if err == nil {
		return nil
	}
	if err == ErrEmpty {
		return c.b.errEmpty // made once: a polling loop meets it constantly
	}
	return busError(c.b.name, fmt.Errorf("receive: %w", err))
}

// abandon releases what was taken and closes the reassembly files (they
// stay for the next consumer); the bus calls it when it closes with the
// consumer still open.
func (c *Consumer) abandon() {
	for i, l := range c.lanes {
		c.releaseFree(i) // held messages stay for the next consumer
		l.Flush()
	}
	c.asm.close()
	c.closed.Store(true)
}

// Close gives back the consumer role and slot. Messages taken by Poll are
// already released; messages taken by Take and not released stay on the
// bus for the next consumer; nothing is lost.
func (c *Consumer) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if err := c.b.enter(); err != nil {
		return nil
	}
	defer c.b.exit()
	c.b.mu.Lock()
	c.b.consumer = nil
	c.b.mu.Unlock()
	return segment.Guard(func() error {
		c.abandon()
		c.b.peers.dropRole(layout.Word32(c.b.seg, layout.OffConsumer), c.slot)
		c.b.peers.release(c.slot)
		return nil
	})
}

// Slot is the consumer's peer slot, as Stats().Peers shows it.
func (c *Consumer) Slot() int { return c.slot }
