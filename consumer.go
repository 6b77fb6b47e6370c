package shmbus

import (
	"context"
	"errors"
	"fmt"
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
	closed bool

	lastRecover time.Time
}

// NewConsumer takes the bus's consumer role. It fails with ErrBusy while a
// live process holds it; if the holder died, the new consumer takes over
// and resumes after the last message the old one released.
func (b *Bus) NewConsumer() (*Consumer, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var c *Consumer
	err := segment.Guard(func() error {
		slot, err := b.peers.acquire(layout.RoleConsumer, b.lanes)
		if err != nil {
			return err
		}
		role := layout.Word32(b.seg, layout.OffConsumer)
		if err := b.peers.takeRole(role, slot, "the consumer role"); err != nil {
			b.peers.release(slot)
			return err
		}
		c = &Consumer{b: b, slot: slot}
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
		return nil, fmt.Errorf("bus %q: new consumer: %w", b.name, err)
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
			return nil, fmt.Errorf("bus %q: await consumer role: %w (%w)", b.name, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// roleRetry is how often AwaitConsumer looks at the consumer role again.
const roleRetry = 10 * time.Millisecond

func (c *Consumer) check() error {
	if c.closed {
		return fmt.Errorf("bus %q: consumer: %w", c.b.name, ErrClosed)
	}
	return c.b.enter()
}

// TryReceive copies the next message into buf and returns its size and
// priority, or ErrEmpty if there is none now. A buffer too small gets a
// *ShortBufferError (wrapping ErrShortBuffer) saying the size needed, and
// the message stays.
func (c *Consumer) TryReceive(buf []byte) (n, prio int, err error) {
	if err := c.check(); err != nil {
		return 0, 0, err
	}
	defer c.b.exit()
	err = segment.Guard(func() error {
		n, prio, err = c.receive(buf)
		return err
	})
	return n, prio, c.wrap(err)
}

func (c *Consumer) receive(buf []byte) (int, int, error) {
	for i := len(c.lanes) - 1; i >= 0; i-- {
		n, _, err := c.lanes[i].Receive(buf)
		if err == ring.ErrEmpty {
			continue
		}
		return n, i, err
	}
	return 0, 0, ErrEmpty
}

// Receive is TryReceive that waits for a message until ctx is done (its
// error is returned) or the bus is closed (ErrClosed).
func (c *Consumer) Receive(ctx context.Context, buf []byte) (n, prio int, err error) {
	if err := c.check(); err != nil {
		return 0, 0, err
	}
	defer c.b.exit()
	err = segment.Guard(func() error {
		for {
			n, prio, err = c.receive(buf)
			if err != ErrEmpty {
				return err
			}
			if err := c.wait(ctx); err != nil {
				return err
			}
		}
	})
	return n, prio, c.wrap(err)
}

// Poll hands every message published now (at most max if max > 0) to f,
// highest priority first, and releases them together: the zero-copy batch
// receive. payload is valid only during the call and is shared memory.
func (c *Consumer) Poll(max int, f func(payload []byte, prio int)) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	defer c.b.exit()
	total := 0
	err := segment.Guard(func() error {
		for i := len(c.lanes) - 1; i >= 0; i-- {
			left := 0
			if max > 0 {
				left = max - total
				if left <= 0 {
					break
				}
			}
			k, err := c.lanes[i].Poll(left, func(_ layout.Record, p []byte) { f(p, i) })
			total += k
			if err != nil {
				return err
			}
		}
		return nil
	})
	return total, c.wrap(err)
}

// Wait blocks until a message is published, ctx is done or the bus closes.
func (c *Consumer) Wait(ctx context.Context) error {
	if err := c.check(); err != nil {
		return err
	}
	defer c.b.exit()
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

// recover runs after every sleep: a lane whose read position is claimed
// but unpublished may be held by a dead producer. It looks at most every
// inFlightBackstop, since proving death reads /proc for every peer.
func (c *Consumer) recover() {
	if time.Since(c.lastRecover) < inFlightBackstop {
		return
	}
	c.lastRecover = time.Now()
	for _, l := range c.lanes {
		if l.InFlight() {
			l.Recover(c.b.peers)
		}
	}
}

func (c *Consumer) wait(ctx context.Context) error {
	stop, cleanup := c.b.stopper(ctx, c.b.data)
	defer cleanup()
	backstop := time.Duration(0)
	for _, l := range c.lanes {
		if l.InFlight() {
			backstop = inFlightBackstop
		}
	}
	return ctxErr(ctx, c.b.data.Wait(c.ready, stop, deadlineOf(ctx), &c.spin, backstop, c.recover))
}

// inFlightBackstop bounds sleeps while a lane's read position is claimed but
// unpublished, so that a dead claimant is found soon.
const inFlightBackstop = 20 * time.Millisecond

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func (c *Consumer) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("bus %q: receive: %w", c.b.name, err)
}

// Close gives back the consumer role and slot. Messages taken by Poll are
// already released; nothing is lost.
func (c *Consumer) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	if err := c.b.enter(); err != nil {
		return nil
	}
	defer c.b.exit()
	return segment.Guard(func() error {
		for _, l := range c.lanes {
			l.Release()
			l.Flush()
		}
		c.b.peers.dropRole(layout.Word32(c.b.seg, layout.OffConsumer), c.slot)
		c.b.peers.release(c.slot)
		return nil
	})
}
