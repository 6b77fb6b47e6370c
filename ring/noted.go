package ring

import (
	"fmt"

	"github.com/shmbus/shmbus/layout"
)

// Noted sends: a producer that must know, after it died, whether a
// message was published (a bridge that records what it delivered) notes
// the position of the message's record between claiming it and committing
// it, and asks At about that position later.

// FirstReserved is the position of the first record of the held claim
// (false if no record is reserved).
func (p *Producer) FirstReserved() (uint64, bool) {
	if !p.Pending() || len(p.recs) == 0 {
		return 0, false
	}
	return p.start, true
}

// PositionState is what a lane holds at a position that was claimed.
type PositionState int

const (
	// PositionReleased: the consumer has released past the position, so
	// the record there was published and consumed, or it was left
	// unpublished by a dead claimant and recovered as padding (which adds
	// 1 to the lane's recovered counter before the consumer can pass it).
	PositionReleased PositionState = iota
	// PositionUnpublished: claimed and not (yet) published.
	PositionUnpublished
	// PositionPublished: a data record, not yet released.
	PositionPublished
	// PositionPadding: padding, written by recovery or an abort.
	PositionPadding
)

// Position is the answer of At.
type Position struct {
	State     PositionState
	Producer  uint16 // the record's producer slot (PositionPublished)
	Recovered uint64 // the lane's recovered counter, loaded after the head
}

// At says what the lane holds at pos, a record position claimed earlier
// (FirstReserved's answer). Nothing is trusted: a position not between
// the head and the tail, or not a multiple of 8, is an error, and so is a
// record that does not validate.
func (l *Lane) At(pos uint64) (Position, error) {
	if pos%layout.RecordAlign != 0 {
		return Position{}, fmt.Errorf("lane %d: position %d is not a multiple of 8", l.index, pos)
	}
	h := l.head.Load()
	t := l.tail.Load()
	if t-h > l.capacity {
		return Position{}, l.errCorrupt("tail %d is %d bytes past head %d", t, t-h, h)
	}
	if int64(t-pos) <= 0 {
		return Position{}, fmt.Errorf("lane %d: position %d was never claimed (tail %d)", l.index, pos, t)
	}
	if int64(pos-h) >= 0 { // in [h, t)
		off := pos & l.mask
		n := l.lengthWord(off).Load() // pairs with the publishing Store
		meta := l.meta(off)
		// The consumer zeroes what it releases before it moves the head:
		// if the head is still at or below pos, what was read is the
		// record of this lap.
		if h2 := l.head.Load(); int64(pos-h2) >= 0 {
			if n == 0 {
				return Position{State: PositionUnpublished}, nil
			}
			r := layout.RecordFromWords(n, meta)
			if _, err := r.Check(off, l.capacity, l.limit); err != nil {
				return Position{}, fmt.Errorf("lane %d: %w", l.index, err)
			}
			if r.Type == layout.TypePadding {
				return Position{State: PositionPadding}, nil
			}
			return Position{State: PositionPublished, Producer: r.Producer}, nil
		}
	}
	// Released. Recovery adds to the counter after padding and before the
	// consumer moves past the padding; loading it after a head that is
	// past pos sees any such padding of pos.
	return Position{State: PositionReleased, Recovered: l.recovered.Load()}, nil
}

// Recovered is the lane's count of dead claims turned into padding.
func (l *Lane) Recovered() uint64 { return l.recovered.Load() }
