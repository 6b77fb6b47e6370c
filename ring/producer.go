package ring

import (
	"fmt"
	"time"

	"github.com/shmbus/shmbus/internal/failpoint"
	"github.com/shmbus/shmbus/layout"
)

// Producer writes records into one lane. It is not safe for concurrent use;
// give each goroutine its own (each takes a peer slot, whose claim record
// says what it has claimed and not yet published).
//
// A producer holds at most one claim at a time: a contiguous span of the
// ring it owns until it publishes. Reserve carves records out of the claim;
// Commit publishes them, in order, and gives back the unused rest as
// padding.
type Producer struct {
	l     *Lane
	id    uint16
	claim Claim
	data  *Doorbell // the consumer's doorbell, rung after publishing

	head uint64 // cached release position: reloaded only when the lane looks full

	pos, end uint64 // the current claim; pos == end when none
	// The claim record's values for the last successful claim, restored
	// after a failed CAS so the record never names a position this
	// producer does not own while it does something else (waits for room).
	recPos, recEnd uint64
	start          uint64 // first record position of the claim (after wrap padding)
	cur            uint64 // next free position inside the claim
	recs           []pending
	bytes          uint64 // payload bytes reserved in the current claim

	// Statistics not yet added to the lane's counters (see Flush).
	unMsgs, unBytes uint64
}

// statsEvery is how many messages a producer or consumer counts locally
// before adding them to the shared counters: one locked add per 256
// messages instead of two per message.
const statsEvery = 256

type pending struct {
	off    uint64
	length uint32
	end    bool // the last (or only) record of a message
}

// NewProducer makes a producer for lane l writing as peer slot id, whose
// claim record for this lane is claim. data is rung after every publish.
// The caller owns slot id (and, for a single-producer lane, the lane).
func NewProducer(l *Lane, id uint16, claim Claim, data *Doorbell) *Producer {
	return &Producer{l: l, id: id, claim: claim, data: data, head: l.head.Load(), recs: make([]pending, 0, 64)}
}

// RecordSize is the number of ring bytes a record with an n-byte payload
// takes, for sizing a Batch.
func RecordSize(n int) int { return int(layout.AlignRecord(uint64(n) + layout.RecordHeader)) }

// Lane is the producer's lane.
func (p *Producer) Lane() *Lane { return p.l }

// Pending reports whether records are reserved and not yet committed.
func (p *Producer) Pending() bool { return p.pos != p.end }

// Batch claims room for records whose RecordSize values add up to size, so
// that the Reserve calls that follow need no further claim (one claim per
// batch instead of one per record). It returns ErrFull when the lane has
// no room now, ErrPending when a claim is already held.
func (p *Producer) Batch(size int) error {
	if p.Pending() {
		return ErrPending
	}
	if size <= 0 || uint64(size)%layout.RecordAlign != 0 || uint64(size) > p.l.capacity/2 {
		return fmt.Errorf("lane %d: batch of %d bytes: %w", p.l.index, size, ErrTooLarge)
	}
	return p.claimSpan(uint64(size))
}

// Reserve returns an n-byte region of the ring for the payload of one
// record, to be filled and then published by Commit. If no claim is held,
// Reserve claims exactly this record; if the held claim has no room left,
// it first publishes what it holds. flags are the fragment bits
// (layout.FragBegin|layout.FragEnd for a whole message).
func (p *Producer) Reserve(n int, flags uint8) ([]byte, error) {
	if n < 0 || uint64(n)+layout.RecordHeader > p.l.limit {
		return nil, fmt.Errorf("lane %d: %d-byte record, limit %d: %w", p.l.index, n, p.MaxPayload(), ErrTooLarge)
	}
	need := layout.AlignRecord(uint64(n) + layout.RecordHeader)
	if p.Pending() && p.end-p.cur < need {
		p.Commit()
	}
	if !p.Pending() {
		if err := p.claimSpan(need); err != nil {
			return nil, err
		}
	}
	off := p.cur & p.l.mask
	p.l.setMeta(off, layout.Record{Type: layout.TypeData, Flags: flags, Producer: p.id}.Meta())
	p.recs = append(p.recs, pending{off: off, length: uint32(n) + layout.RecordHeader, end: flags&layout.FragEnd != 0})
	p.cur += need
	p.bytes += uint64(n)
	return p.l.data[off+layout.RecordHeader : off+layout.RecordHeader+uint64(n) : off+layout.RecordHeader+uint64(n)], nil
}

// MaxPayload is the largest payload one record may carry.
func (p *Producer) MaxPayload() int { return p.l.MaxPayload() }

// claimSpan claims size contiguous bytes, preceded by a padding record if
// they would cross the end of the ring.
//
// Claim protocol (see doc.go): the claim record is written before the tail
// moves, so a consumer that finds the tail past an unpublished record can
// always learn who claimed it:
//
//  1. Pos = t, End = t+span   (End after Pos: a record with Pos == t and an
//     old End < Pos is an impossible span and is ignored)
//  2. tail: t -> t+span       (CAS with several producers, a store with one)
//  3. OK = t+1                (confirms that step 2 succeeded)
//
// Steps 1 and 3 are plain stores to the producer's own slot. Step 1 is
// ordered before the tail's atomic CAS or ordered store, which is all a reader needs
// (it reads the claim only after seeing the tail move). Step 3 may become
// visible early on weakly ordered CPUs; that is harmless, because Recover
// only trusts a claim that ends at or before the tail it read.
func (p *Producer) claimSpan(size uint64) error {
	l := p.l
	for {
		t := l.tail.Load()
		if t%layout.RecordAlign != 0 {
			return l.errCorrupt("tail %d is not a multiple of 8", t)
		}
		off := t & l.mask
		var pad uint64
		if off+size > l.capacity {
			pad = l.capacity - off
		}
		end := t + pad + size
		if end-p.head > l.capacity {
			p.head = l.head.Load() // pairs with the consumer's Store in Release: the space is zeroed
			if used := t - p.head; used > l.capacity {
				// t may be stale: other producers claimed and the consumer
				// released past it since. Only a fresh tail proves corruption.
				if t2 := l.tail.Load(); t2-p.head > l.capacity {
					return l.errCorrupt("tail %d is %d bytes past head %d", t2, t2-p.head, p.head)
				}
				continue
			}
			if end-p.head > l.capacity {
				if l.fan != nil { // fan-out: free what the subscriptions passed
					if moved, err := l.fan.Clean(l.index, int(p.id), end-p.head-l.capacity); err != nil {
						return err
					} else if moved {
						continue
					}
				}
				l.fullEvents.Add(1)
				return ErrFull
			}
		}
		p.claim.set(t, end)
		if l.multi {
			if !l.tail.CompareAndSwap(t, end) {
				// Another producer claimed t. Put the record back to the
				// last claim, End first: a record whose End is below its
				// Pos is ignored, so no step of this names a span we do
				// not own (see Recover, rule b).
				p.claim.restore(p.recPos, p.recEnd)
				continue
			}
		} else {
			// The only producer: a store ordered after step 1's (so a
			// consumer that sees the new tail sees the claim record) and
			// before the records' length words (so one that sees a record
			// published sees the tail past it). Nothing this producer
			// loads later depends on it being seen first: the doorbell's
			// store-load order is the length word's, in Commit.
			storeOrdered(l.tail, end)
		}
		p.claim.confirm(t)
		p.recPos, p.recEnd = t, end
		failpoint.AfterClaim.Fire()
		if pad > 0 {
			l.putRecord(off, pad, layout.TypePadding, p.id)
		}
		p.pos, p.end, p.start, p.cur = t, end, t+pad, t+pad
		return nil
	}
}

// putRecord publishes a header-only record (padding) of length n at off.
func (l *Lane) putRecord(off, n uint64, typ uint8, producer uint16) {
	l.setMeta(off, layout.Record{Type: typ, Producer: producer}.Meta())
	l.lengthWord(off).Store(uint32(n)) // publishes: pairs with the consumer's Load in Peek
}

// Commit publishes the reserved records and rings the consumer's doorbell
// if it sleeps. Unused room of a Batch becomes padding.
//
// The whole claim is published by one atomic store: the length words of
// every record but the first (and of trailing padding) are written with
// plain stores, then the first record's length with an atomic store. A
// consumer reaches the later records only through the first, so the load
// that sees it published sees them too. A commit is thus all or nothing:
// a producer that dies inside Commit leaves its first record unpublished,
// and recovery skips the whole claim.
func (p *Producer) Commit() {
	if !p.Pending() {
		return
	}
	failpoint.BeforeCommit.Fire()
	l := p.l
	if p.cur != p.end {
		off := p.cur & l.mask
		l.setMeta(off, layout.Record{Type: layout.TypePadding, Producer: p.id}.Meta())
		if len(p.recs) == 0 {
			l.lengthWord(off).Store(uint32(p.end - p.cur))
		} else {
			l.setLengthRelaxed(off, uint32(p.end-p.cur))
		}
	}
	if len(p.recs) > 0 {
		for _, r := range p.recs[1:] {
			l.setLengthRelaxed(r.off, r.length)
		}
		// The commit: pairs with the consumer's Load in Peek.
		l.lengthWord(p.recs[0].off).Store(p.recs[0].length)
	}
	for _, r := range p.recs {
		if r.end {
			p.unMsgs++
		}
	}
	p.unBytes += p.bytes
	if p.unMsgs >= statsEvery {
		p.Flush()
	}
	p.recs, p.bytes = p.recs[:0], 0
	p.pos, p.cur = p.end, p.end
	if woke, _ := p.data.Ring(); woke {
		l.dataWakes.Add(1)
	}
}

// Flush adds the producer's locally counted statistics to the lane's
// shared counters. Commit does it every 256 messages; call it when the
// producer goes idle or closes so that readers see exact counts.
func (p *Producer) Flush() {
	if p.unMsgs != 0 || p.unBytes != 0 {
		p.l.msgsIn.Add(p.unMsgs)
		p.l.bytesIn.Add(p.unBytes)
		p.unMsgs, p.unBytes = 0, 0
	}
}

// Abort gives back every reserved record unpublished: they become padding
// the consumer skips.
func (p *Producer) Abort() {
	if !p.Pending() {
		return
	}
	p.l.padSpan(p.start, p.end)
	p.recs, p.bytes = p.recs[:0], 0
	p.pos, p.cur = p.end, p.end
	if woke, _ := p.data.Ring(); woke {
		p.l.dataWakes.Add(1)
	}
}

// padSpan publishes [from, to) as padding records, split at the ring's end.
func (l *Lane) padSpan(from, to uint64) {
	for from != to {
		off := from & l.mask
		n := min(to-from, l.capacity-off)
		l.putRecord(off, n, layout.TypePadding, layout.NoProducer)
		from += n
	}
}

// Send publishes one record carrying msg (a whole message). It returns
// ErrFull at once if the lane has no room.
func (p *Producer) Send(msg []byte) error {
	buf, err := p.Reserve(len(msg), layout.FragBegin|layout.FragEnd)
	if err != nil {
		return err
	}
	copy(buf, msg)
	p.Commit()
	return nil
}

// SendBatch publishes as many of msgs as fit now, each a whole message, with
// one claim and one doorbell check, and returns how many it sent. It
// returns ErrFull only if not even the first fits.
func (p *Producer) SendBatch(msgs [][]byte) (int, error) {
	if p.Pending() {
		p.Commit()
	}
	k, size := 0, uint64(0)
	for _, m := range msgs {
		if uint64(len(m))+layout.RecordHeader > p.l.limit {
			break
		}
		s := layout.AlignRecord(uint64(len(m)) + layout.RecordHeader)
		if size+s > p.l.capacity/2 {
			break
		}
		size += s
		k++
	}
	if k == 0 {
		if len(msgs) == 0 {
			return 0, nil
		}
		return 0, p.Send(msgs[0]) // reports the size error
	}
	for {
		err := p.claimSpan(size)
		if err == nil {
			break
		}
		if err != ErrFull || k == 1 {
			return 0, err
		}
		k /= 2
		size = 0
		for _, m := range msgs[:k] {
			size += layout.AlignRecord(uint64(len(m)) + layout.RecordHeader)
		}
	}
	for _, m := range msgs[:k] {
		buf, _ := p.Reserve(len(m), layout.FragBegin|layout.FragEnd) // fits: the claim was sized for it
		copy(buf, m)
	}
	p.Commit()
	return k, nil
}

// HasRoom reports whether a claim of size bytes (a RecordSize, or a Batch
// size) would fit now.
func (p *Producer) HasRoom(size int) bool {
	l := p.l
	t := l.tail.Load()
	s := uint64(size)
	if off := t & l.mask; off+s > l.capacity {
		s += l.capacity - off
	}
	return t+s-l.head.Load() <= l.capacity
}

// WaitRoom blocks until a claim of size bytes would fit, stop returns an
// error, or the deadline passes (os.ErrDeadlineExceeded). It spins as spin
// allows, then sleeps on the lane's space doorbell.
func (p *Producer) WaitRoom(size int, deadline time.Time, stop func() error, spin *Spinner) error {
	p.Flush()
	ready := func() bool { return p.HasRoom(size) }
	return p.l.space.Wait(ready, stop, deadline, spin, 0, nil)
}
