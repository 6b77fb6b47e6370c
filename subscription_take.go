package shmbus

// Taking without releasing, for subscriptions.
//
// Receive and Poll release a message as they hand it over. A holder that
// forwards messages elsewhere (the daemon, for peers that do not map the
// segment) must keep each one until the far side has acknowledged it, with
// several in flight: TryTake and Take copy the next message out and leave
// the subscription's cursor where it was, and AckThrough moves the cursor
// of one lane past the taken messages up to one of them, in lane order. A
// holder that closes (or dies) with messages taken and not acknowledged
// leaves them to the next holder, which receives them again: at least once
// across the holder's end, as for the queue consumer's Take.
//
// Receive, TryReceive and Poll fail with ErrHeld while messages are taken.
// Peer events (SubscribeOptions.Events) are handed over by TryTake and
// Take as they are by Receive; they are not held.

import (
	"context"
	"fmt"

	"github.com/shmbus/shmbus/internal/segment"
)

// SubTaken is what a subscription's TryTake or Take hands over: a message
// (or a peer event, Message.Event not nil) and, for a message, its place in
// its lane.
type SubTaken struct {
	Message
	// Position names the message in lane Message.Prio while it is taken:
	// AckThrough(Prio, Position) releases it. The same message has the
	// same Position for the next holder, if it is delivered again.
	Position uint64
}

// subHold is a message taken and not acknowledged.
type subHold struct {
	pos  uint64 // its last record's position (SubTaken.Position)
	end  uint64 // the cursor after it
	msgs uint64 // the messages begun before end
}

// Taken is the number of messages taken by TryTake or Take and not yet
// acknowledged.
func (s *Subscription) Taken() int { return s.held }

// TryTake copies the next message into buf, highest priority first, and
// keeps it taken until AckThrough; or hands over the next peer event; or
// returns ErrEmpty. A buffer too small gets a *ShortBufferError and nothing
// is taken. A lossy subscription that was overrun gets a *LaggedError once,
// as TryReceive does.
func (s *Subscription) TryTake(buf []byte) (SubTaken, error) {
	if err := s.check(); err != nil {
		return SubTaken{}, err
	}
	defer s.b.exit()
	var t SubTaken
	err := segment.Guard(func() (err error) {
		t, err = s.takeHeld(buf)
		return err
	})
	return t, s.wrap(err)
}

// Take is TryTake that waits for a message (or event) until ctx is done or
// the bus closes.
func (s *Subscription) Take(ctx context.Context, buf []byte) (SubTaken, error) {
	if err := s.check(); err != nil {
		return SubTaken{}, err
	}
	defer s.b.exit()
	var t SubTaken
	err := segment.Guard(func() (err error) {
		for {
			t, err = s.takeHeld(buf)
			if err != ErrEmpty {
				return err
			}
			if err := s.wait(ctx); err != nil {
				return err
			}
		}
	})
	return t, s.wrap(err)
}

func (s *Subscription) takeHeld(buf []byte) (SubTaken, error) {
	if len(s.pending) > 0 {
		return SubTaken{Message: s.popEvent()}, nil
	}
	if s.holds == nil {
		s.holds = make([][]subHold, len(s.lanes))
	}
	for i := len(s.lanes) - 1; i >= 0; i-- {
		r := s.lanes[i]
		p, x, err := s.next(i)
		if err == ErrEmpty {
			if len(s.holds[i]) == 0 {
				r.Release() // padding passed on the way
			}
			continue
		}
		if err != nil {
			return SubTaken{}, err
		}
		if len(p) > len(buf) {
			return SubTaken{}, &ShortBufferError{Need: len(p), Have: len(buf)}
		}
		n := copy(buf, p)
		pos := r.Position()
		s.take(i, x)
		s.holds[i] = append(s.holds[i], subHold{pos: pos, end: r.Position(), msgs: r.Begun()})
		s.held++
		return SubTaken{Message: Message{N: n, Prio: i}, Position: pos}, nil
	}
	if s.events != nil {
		s.scanEvents(false)
		if len(s.pending) > 0 {
			return SubTaken{Message: s.popEvent()}, nil
		}
	}
	return SubTaken{}, ErrEmpty
}

// AckThrough releases the messages of lane prio taken by TryTake or Take,
// from the oldest up to and including the one at pos: the subscription's
// cursor moves past it, and producers may reuse the space. Messages taken
// after it stay taken.
func (s *Subscription) AckThrough(prio int, pos uint64) error {
	if err := s.check(); err != nil {
		return err
	}
	defer s.b.exit()
	if prio < 0 || prio >= len(s.lanes) {
		return fmt.Errorf("bus %q: subscription %q: ack: %w: %d", s.b.name, s.name, ErrPriority, prio)
	}
	var h []subHold
	if s.holds != nil {
		h = s.holds[prio]
	}
	k := -1
	for j := range h {
		if h[j].pos == pos {
			k = j
			break
		}
	}
	if k < 0 {
		return fmt.Errorf("bus %q: subscription %q: ack: no message taken at lane %d position %d", s.b.name, s.name, prio, pos)
	}
	last := h[k]
	// Move the rest down rather than reslicing: the backing array is kept,
	// so a steady take-ack cycle allocates nothing.
	s.holds[prio] = h[:copy(h, h[k+1:])]
	s.held -= k + 1
	return s.wrap(segment.Guard(func() error {
		return s.lanes[prio].ReleaseTo(last.end, last.msgs)
	}))
}

// untake forgets the messages taken and not acknowledged, so that the
// cursors stay where the last acknowledgement left them: the next holder
// (or the next take) gets them again.
func (s *Subscription) untake() {
	if s.held == 0 {
		return
	}
	for i, r := range s.lanes {
		r.Rewind()
		s.holds[i] = s.holds[i][:0]
		for k := range s.parts {
			if k[0] == i {
				s.dropPart(k[0], k[1])
			}
		}
	}
	s.held = 0
}
