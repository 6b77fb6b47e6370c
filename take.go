package shmbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/shmbus/shmbus/internal/segment"
)

// Taking without releasing.
//
// Receive and Poll release a message as they hand it over. A consumer that
// forwards messages elsewhere (the NATS bridge) must keep each one on the
// bus until the far side has acknowledged it, with many in flight at once:
// Take copies the next message out and leaves it on the bus, and
// ReleaseThrough gives back a lane's taken messages up to one of them, in
// lane order. A consumer that dies with messages taken and not released
// leaves them to the next consumer, which takes them again at the same
// Positions: a message's (lane, Position) names it for as long as it is on
// the bus, which is what makes a stable id for it across crashes.
//
// Records behind a taken message in its lane (padding, fragments absorbed
// into a reassembly file) are released only with it. A reassembled
// message holds its lane: nothing more is taken from that lane until it is
// released, because the next large message of the same producer would
// reuse its reassembly file, which is how a successor finds it again.
// Receive, TryReceive and Poll fail with ErrHeld while messages are taken.

// ErrHeld is returned by Take when every lane with a message waiting is
// held by a taken reassembled message, and by Receive, TryReceive and Poll
// while messages taken by Take are not released.
var ErrHeld = errors.New("taken messages not released")

// Taken describes a message Take copied out and left on the bus.
type Taken struct {
	N           int    // bytes copied into the buffer
	Priority    int    // its lane
	Position    uint64 // its place in the lane: unique in the lane while it is on the bus, the same for every consumer that takes it
	Producer    int    // the peer slot of the producer that sent it
	ProducerPID int    // that producer's process id (0 if the slot is free now)
	Large       bool   // it was reassembled from fragments; its lane is held until it is released
}

// laneHolds are the messages taken from one lane and not released, oldest
// first.
type laneHolds struct {
	starts []uint64 // ring position of each one's last record
	large  *asm     // the reassembled one, if any (always the newest)
	pos    uint64   // its position
}

// releaseFree releases lane i's taken records up to its oldest held
// message (all of them if none is held).
func (c *Consumer) releaseFree(i int) {
	l := c.lanes[i]
	if h := &c.holds[i]; len(h.starts) > 0 {
		l.ReleaseTo(h.starts[0]) // between head and cursor by construction
		return
	}
	l.Release()
}

func (c *Consumer) checkNoHolds() error {
	if err := c.check(); err != nil {
		return err
	}
	if c.held > 0 {
		c.gate.exit(c.b)
		return busError(c.b.name, fmt.Errorf("receive: %w (%d)", ErrHeld, c.held))
	}
	return nil
}

// Held is the number of messages taken by Take and not yet released.
func (c *Consumer) Held() int { return c.held }

// TryTake copies the next message into buf, highest priority first, and
// leaves it on the bus until ReleaseThrough gives it back. It returns
// ErrEmpty if there is none now, ErrHeld if the only lanes with messages
// are held by a taken reassembled message, and a *ShortBufferError if buf is
// too small (nothing is taken).
func (c *Consumer) TryTake(buf []byte) (Taken, error) {
	if err := c.check(); err != nil {
		return Taken{}, err
	}
	defer c.gate.exit(c.b)
	var t Taken
	err := segment.Guard(func() (err error) {
		t, err = c.takeHeld(buf)
		return err
	})
	return t, c.wrap(err)
}

// Take is TryTake that waits for a message until ctx is done or the bus
// closes. ErrHeld is returned at once: only a release can end it.
func (c *Consumer) Take(ctx context.Context, buf []byte) (Taken, error) {
	if err := c.check(); err != nil {
		return Taken{}, err
	}
	defer c.gate.exit(c.b)
	var t Taken
	err := segment.Guard(func() (err error) {
		for {
			t, err = c.takeHeld(buf)
			if err != ErrEmpty {
				return err
			}
			if err := c.wait(ctx); err != nil {
				return err
			}
		}
	})
	return t, c.wrap(err)
}

func (c *Consumer) takeHeld(buf []byte) (Taken, error) {
	blocked := false
	for i := len(c.lanes) - 1; i >= 0; i-- {
		h := &c.holds[i]
		if h.large != nil {
			blocked = blocked || c.lanes[i].Ready()
			continue
		}
		m, err := c.next(i)
		if err == ErrEmpty {
			c.releaseFree(i)
			c.checkStuck(i)
			continue
		}
		if err != nil {
			return Taken{}, err
		}
		if len(m.data) > len(buf) {
			return Taken{}, &ShortBufferError{Need: len(m.data), Have: len(buf)}
		}
		n := copy(buf, m.data)
		c.lanes[i].Next()
		h.starts = append(h.starts, m.pos)
		if m.asm != nil {
			m.asm.held = true
			h.large, h.pos = m.asm, m.pos
		}
		c.held++
		pid := 0
		if m.producer < c.b.g.PeerSlots {
			pid = int(c.b.peers.owner(m.producer).Load() >> 32)
		}
		return Taken{N: n, Priority: i, Position: m.pos, Producer: m.producer, ProducerPID: pid, Large: m.asm != nil}, nil
	}
	c.flush()
	if blocked {
		return Taken{}, ErrHeld
	}
	return Taken{}, ErrEmpty
}

// ReleaseThrough gives back the messages of lane prio taken by Take, from
// the oldest up to and including the one at pos. Messages taken after it
// stay taken.
func (c *Consumer) ReleaseThrough(prio int, pos uint64) error {
	if err := c.check(); err != nil {
		return err
	}
	defer c.gate.exit(c.b)
	if prio < 0 || prio >= len(c.lanes) {
		return busError(c.b.name, fmt.Errorf("release: %w: %d", ErrPriority, prio))
	}
	h := &c.holds[prio]
	k := -1
	for j, p := range h.starts {
		if p == pos {
			k = j
			break
		}
	}
	if k < 0 {
		return busError(c.b.name, fmt.Errorf("release: no message taken at lane %d position %d", prio, pos))
	}
	return c.wrap(segment.Guard(func() error {
		// Move the rest down rather than reslicing: the backing array is
		// kept, so a steady take-release cycle allocates nothing.
		h.starts = h.starts[:copy(h.starts, h.starts[k+1:])]
		c.held -= k + 1
		x := h.large
		if x != nil && len(h.starts) == 0 {
			// As Receive does for a reassembled message: mark the file
			// delivered, release its last record, then idle the file.
			x.markDelivered(h.pos)
			x.held = false
			h.large = nil
		}
		c.releaseFree(prio)
		if x != nil && h.large == nil {
			c.asm.discard(prio, x.slot)
		}
		return nil
	}))
}
