package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/shmbus/shmbus/layout"
)

// ErrShortBuffer is wrapped by a *ShortBufferError.
var ErrShortBuffer = errors.New("buffer too small")

// ShortBufferError says how large a receive buffer must be for the next
// record, which stays in the lane.
type ShortBufferError struct{ Need, Have int }

func (e *ShortBufferError) Error() string {
	return fmt.Sprintf("buffer too small: record needs %d bytes, buffer has %d", e.Need, e.Have)
}

func (e *ShortBufferError) Unwrap() error { return ErrShortBuffer }

// Consumer reads one lane. There is one consumer per lane at a time (the
// owner of the bus's consumer role); it is not safe for concurrent use.
//
// Records are read in order with Peek (look) and Next (take), and given back
// with Release, which zeroes their bytes (so that nothing of this lap can
// look published in the next) and then moves the shared head. Until Release,
// the payload slices stay valid and the producers cannot reuse the space.
type Consumer struct {
	l     *Lane
	pos   uint64 // read cursor: the next record
	head  uint64 // released up to here; equals the shared head
	msgs  uint64 // taken since the last Release
	bytes uint64

	unMsgs, unBytes uint64 // released, not yet added to the shared counters
}

// NewConsumer starts reading l at its release position: anything taken but
// not released by an earlier consumer is read again.
//
// If the previous consumer died inside Release (its bytes partly zeroed,
// the head not yet moved), the release is finished first: the records it
// was releasing had been handled.
func NewConsumer(l *Lane) (*Consumer, error) {
	h, t := l.head.Load(), l.tail.Load()
	if t-h > l.capacity || h%layout.RecordAlign != 0 {
		return nil, l.errCorrupt("head %d, tail %d", h, t)
	}
	c := &Consumer{l: l, pos: h, head: h}
	if r := l.releasing.Load(); r != h {
		if r-h > t-h || r%layout.RecordAlign != 0 {
			return nil, l.errCorrupt("release in progress to %d, head %d, tail %d", r, h, t)
		}
		c.pos = r
		c.Release()
	}
	return c, nil
}

// Lane is the consumer's lane.
func (c *Consumer) Lane() *Lane { return c.l }

// Position is the read cursor.
func (c *Consumer) Position() uint64 { return c.pos }

// Ready reports whether a published record (or padding) waits at the read
// cursor. It is the consumer's poll: one load of the line the record's
// bytes share, never of the producers' tail.
func (c *Consumer) Ready() bool {
	if c.pos-c.head >= c.l.capacity {
		return false // a whole lap taken and not released
	}
	return c.l.lengthWord(c.pos&c.l.mask).Load() != 0
}

// Drained reports whether nothing at all lies past the read cursor: no
// record published or claimed (the tail is at the cursor).
func (c *Consumer) Drained() bool { return c.l.tail.Load() == c.pos }

// InFlight reports whether space at the read cursor is claimed but not
// published: a producer is writing it, or died doing so.
func (c *Consumer) InFlight() bool {
	return c.l.tail.Load() != c.pos && c.l.lengthWord(c.pos&c.l.mask).Load() == 0
}

// Peek returns the next data record without taking it, skipping (taking)
// padding on the way. It returns ErrEmpty when nothing is published.
// Padding it skipped counts as taken: its space returns to the producers
// only at the next Release (Poll and Receive see to that; a caller of Peek
// and Next must too, or padding left at the end of the lane keeps counting
// as used). Peek cannot release it itself: earlier records the caller
// still holds would be zeroed.
func (c *Consumer) Peek() (layout.Record, []byte, error) {
	l := c.l
	for {
		if c.pos-c.head >= l.capacity {
			return layout.Record{}, nil, ErrEmpty
		}
		off := c.pos & l.mask
		n := l.lengthWord(off).Load() // pairs with the producer's Store in Commit
		if n == 0 {
			return layout.Record{}, nil, ErrEmpty
		}
		r := layout.RecordFromWords(n, l.meta(off))
		span, err := r.Check(off, l.capacity, l.limit)
		if err != nil {
			return layout.Record{}, nil, fmt.Errorf("lane %d at position %d: %w", l.index, c.pos, err)
		}
		if c.pos+span-c.head > l.capacity {
			return layout.Record{}, nil, l.errCorrupt("record at %d runs %d bytes past the lap", c.pos, c.pos+span-c.head-l.capacity)
		}
		if r.Type == layout.TypePadding {
			c.pos += span
			continue
		}
		return r, l.data[off+layout.RecordHeader : off+uint64(n) : off+uint64(n)], nil
	}
}

// Next takes the next data record: like Peek, and moves the read cursor past
// it. The payload stays valid until Release.
func (c *Consumer) Next() (layout.Record, []byte, error) {
	r, p, err := c.Peek()
	if err != nil {
		return r, p, err
	}
	c.Advance(r)
	return r, p, nil
}

// Advance takes r, the data record Peek just returned at the read cursor,
// without looking at the ring again: Next for a caller that has the record.
func (c *Consumer) Advance(r layout.Record) {
	c.pos += layout.AlignRecord(uint64(r.Length))
	if r.Flags&layout.FragEnd != 0 {
		c.msgs++
	}
	c.bytes += uint64(r.Length) - layout.RecordHeader
}

// Release gives every taken record back to the producers: their bytes are
// zeroed, then the head moves, then a producer waiting for room is woken.
func (c *Consumer) Release() { c.release(c.pos) }

// ReleaseTo gives back the taken records before position to, which must
// lie between the release position and the read cursor and be the start of
// a record (or the cursor): records taken at or after it stay taken, valid,
// and are read again by a consumer that takes over. The statistics count
// the released messages once everything taken is released.
func (c *Consumer) ReleaseTo(to uint64) error {
	if to-c.head > c.pos-c.head || to%layout.RecordAlign != 0 {
		return fmt.Errorf("lane %d: release to %d outside the taken records [%d, %d]", c.l.index, to, c.head, c.pos)
	}
	c.release(to)
	return nil
}

func (c *Consumer) release(to uint64) {
	if to == c.head {
		return
	}
	l := c.l
	// Say where this release goes before zeroing anything: a consumer that
	// dies half-way leaves zeroed record headers inside [head, tail), and
	// its successor must finish the release rather than read them. A plain
	// store: only a successor reads the word, after this process is dead,
	// and every store a dead process executed is visible by then; program
	// order (the zeroing is a call, which the compiler does not move
	// stores across) is all that matters. A seq-cst store here cost three
	// times the throughput of small messages.
	binary.LittleEndian.PutUint64(l.releaseRaw, to)
	from, n := c.head&l.mask, to-c.head
	if from+n <= l.capacity {
		clear(l.data[from : from+n])
	} else {
		clear(l.data[from:])
		clear(l.data[:n-(l.capacity-from)])
	}
	// Publishes the zeroed space: pairs with the producer's Load in claimSpan.
	l.head.Store(to)
	c.head = to
	if to == c.pos {
		c.unMsgs += c.msgs
		c.unBytes += c.bytes
		c.msgs, c.bytes = 0, 0
	}
	if c.unMsgs >= statsEvery {
		c.Flush()
	}
	l.space.Ring()
}

// Untake moves the read cursor back to the release position: every record
// taken since the last Release is read again, in order, by the next Peek.
// It is for a consumer that took records to hand them on and could not.
func (c *Consumer) Untake() {
	c.pos = c.head
	c.msgs, c.bytes = 0, 0
}

// Flush adds locally counted statistics to the lane's shared counters
// (done every 256 messages, and before the consumer waits).
func (c *Consumer) Flush() {
	if c.unMsgs != 0 || c.unBytes != 0 {
		c.l.msgsOut.Add(c.unMsgs)
		c.l.bytesOut.Add(c.unBytes)
		c.unMsgs, c.unBytes = 0, 0
	}
}

// Poll hands up to max records (all that are published, if max <= 0) to f,
// then releases them together. f must not keep the payload.
func (c *Consumer) Poll(max int, f func(r layout.Record, payload []byte)) (int, error) {
	k := 0
	for max <= 0 || k < max {
		r, p, err := c.Next()
		if err == ErrEmpty {
			break
		}
		if err != nil {
			c.Release()
			return k, err
		}
		f(r, p)
		k++
	}
	c.Release()
	return k, nil
}

// Receive copies the next record's payload into buf and releases it. A
// buffer too small gets a *ShortBufferError and the record stays.
func (c *Consumer) Receive(buf []byte) (int, layout.Record, error) {
	r, p, err := c.Peek()
	if err != nil {
		if err == ErrEmpty {
			c.Release() // padding skipped on the way
		}
		return 0, r, err
	}
	if len(p) > len(buf) {
		return 0, r, &ShortBufferError{Need: len(p), Have: len(buf)}
	}
	n := copy(buf, p)
	c.pos += layout.AlignRecord(uint64(r.Length))
	if r.Flags&layout.FragEnd != 0 {
		c.msgs++
	}
	c.bytes += uint64(n)
	c.Release()
	return n, r, nil
}

// Wait blocks until a record is published on this lane, stop returns an
// error, or the deadline passes. While space is claimed but unpublished it
// sleeps in short steps and calls Recover with peers, so a producer that
// died mid-claim does not hold the lane forever.
func (c *Consumer) Wait(data *Doorbell, peers Peers, deadline time.Time, stop func() error, spin *Spinner) error {
	recover := func() {
		if peers != nil && c.InFlight() {
			c.Recover(peers)
		}
	}
	c.Flush()
	return data.Wait(c.Ready, stop, deadline, spin, 0, recover)
}
