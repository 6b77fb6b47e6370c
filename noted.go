package shmbus

import (
	"context"
	"fmt"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// Noted sends let a producer find out, even after it was killed, whether a
// message it was sending was published: SendNoted tells it the record's
// lane position before it publishes, and Bus.PositionAt says later what
// became of that position. A bridge that writes the position down with
// the sequence number of what it is delivering (internal/bridge) delivers
// exactly once across its own crashes.

// PositionState is what became of a lane position (see PositionAt).
type PositionState = ring.PositionState

// The states of a position.
const (
	// PositionReleased: the consumer has released past it. The record was
	// published and consumed, unless its producer died before publishing
	// and a consumer turned the claim into padding: that adds 1 to the
	// lane's recovered counter first (Position.Recovered), so a producer
	// that noted the counter before publishing knows it was published if
	// the counter has not moved since.
	PositionReleased = ring.PositionReleased
	// PositionUnpublished: claimed and not published (yet, or ever: its
	// producer died).
	PositionUnpublished = ring.PositionUnpublished
	// PositionPublished: a published message, not yet released.
	PositionPublished = ring.PositionPublished
	// PositionPadding: the claim was recovered (its producer died) or
	// aborted: nothing was published there.
	PositionPadding = ring.PositionPadding
)

// Position is what PositionAt found: the state, the peer slot that
// published the message (PositionPublished), and the lane's recovered
// counter (PositionReleased).
type Position = ring.Position

// SendNoted sends msg at priority prio as Send does, for a message that
// fits one record (MaxRecordPayload; larger ones fail with ErrTooLarge).
// Once the record's room is claimed and msg copied there, and before the
// record is published, it calls note with the record's lane position and
// the lane's recovered counter: a process that writes them down can ask
// PositionAt about the position later, after a crash between the two.
// If note returns an error, nothing is published and the error is
// returned. note must not block on the bus: the lane's later messages wait
// behind the unpublished record.
func (p *Producer) SendNoted(ctx context.Context, msg []byte, prio int, note func(pos, recovered uint64) error) error {
	l, err := p.lane(prio)
	if err != nil {
		return err
	}
	if len(msg) > l.MaxPayload() {
		return &TooLargeError{Bus: p.b.name, Size: len(msg), Limit: l.MaxPayload(), Which: LimitRecord}
	}
	if err := p.b.enter(); err != nil {
		return err
	}
	defer p.b.exit()
	failFast := p.b.hdr.Flags&layout.FlagFailFast != 0
	var noteErr error
	err = segment.Guard(func() error {
		if l.Pending() {
			return ring.ErrPending
		}
		for {
			buf, err := l.Reserve(len(msg), layout.FragBegin|layout.FragEnd)
			if err == ring.ErrFull && !failFast {
				if err := p.b.waitRoom(ctx, l, ring.RecordSize(len(msg)), &p.spin); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			copy(buf, msg)
			pos, _ := l.FirstReserved()
			if noteErr = note(pos, l.Lane().Recovered()); noteErr != nil {
				l.Abort()
				return nil
			}
			l.Commit()
			return nil
		}
	})
	if noteErr != nil {
		return noteErr
	}
	return p.wrap(err)
}

// PositionAt says what the lane of priority prio holds at pos, a position
// SendNoted reported. A position the lane has not reached, or one that is
// not a record position, is an error.
func (b *Bus) PositionAt(prio int, pos uint64) (Position, error) {
	if prio < 0 || prio >= len(b.lanes) {
		return Position{}, fmt.Errorf("bus %q: %w: %d, %s", b.name, ErrPriority, prio, priorityRange(len(b.lanes)))
	}
	if err := b.enter(); err != nil {
		return Position{}, err
	}
	defer b.exit()
	var at Position
	err := segment.Guard(func() (err error) {
		at, err = b.lanes[prio].At(pos)
		return err
	})
	if err != nil {
		return Position{}, fmt.Errorf("bus %q: position: %w", b.name, err)
	}
	return at, nil
}
