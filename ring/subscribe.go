package ring

// Subscribers of a fan-out lane.
//
// A fan-out bus has a subscription table (layout.SubOff) instead of a
// consumer. Each active subscription has a cursor per lane: everything
// before it has been read and released by the subscription's holder, who
// alone writes it. A subscriber reads the records at its cursor in place,
// as the queue consumer does, and releases by storing the cursor; the head
// moves only when a cleaner (clean.go) zeroes the space every blocking
// subscription has passed.
//
// Blocking subscribers are in the cleaners' minimum, so head <= min <=
// cursor: the records they read cannot be cleaned or rewritten under them,
// and they read without further checks.
//
// Lossy subscribers are not in the minimum: a cleaner with no blocking
// subscription to wait for may clean past them. A lossy reader at p:
//
//  1. loads releasing; past p: overrun (step 4);
//  2. loads the record's length word at p (zero: nothing yet, but first
//     load releasing again, since a cleaner may have zeroed it) and copies
//     the record out with plain loads;
//  3. loads releasing again; past p: the copy may be torn, discard it
//     (step 4); else the copy is intact and is delivered;
//  4. overrun: reads releasing and the count of messages begun before it
//     consistently (the clean seqlock), reports the difference from its own
//     count as missed, and moves its cursor to releasing, a record boundary.
//
// Why step 3 proves the copy intact: a cleaner stores releasing past p
// before it zeroes anything at p, and stores the head (which lets producers
// reuse p's bytes) after that, and a producer writes there only after
// loading that head. So any write that could have changed the bytes copied
// in step 2 comes after a store of releasing past p; if the load of step 3,
// which comes after the copy, does not see such a store, no such write can
// have been seen by the copy. This needs the copy's plain loads to be
// ordered before the load of step 3 (a seqlock's read barrier): amd64
// keeps loads in order (TSO), so there it is free; elsewhere (arm64, whose
// LDAR orders only later accesses after itself) loadFence issues an atomic
// read-modify-write on a word of the reader's own, which is a full barrier.
// Go's atomics are sequentially consistent, so the stores of the cleaner and
// the producer and the reader's atomic loads are in one total order.

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/shmbus/shmbus/layout"
)

// SubTable is a process's view of a fan-out segment's subscription table and
// of its lanes' clean words. It holds no process-local state beyond the
// views, and is shared by the producers and subscribers of a process.
type SubTable struct {
	g       *layout.Geometry
	peers   Peers
	lanes   []*Lane
	clean   []laneClean
	Entries []SubEntry
}

// SubEntry is the view of one subscription entry.
type SubEntry struct {
	Index                              int
	State, Flags, Holder, Gen, NameLen *atomic.Uint32
	HolderTag, Created                 *atomic.Uint64
	Name                               []byte           // SubNameMax bytes of shared memory
	Cursor, Delivered                  []*atomic.Uint64 // per lane
}

// NameString is the entry's name as stored, bounded and with bytes outside
// the name alphabet replaced, for messages.
func (e *SubEntry) NameString() string {
	n := min(int(e.NameLen.Load()), len(e.Name))
	b := make([]byte, n)
	for i := range b {
		c := e.Name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			c = '?'
		}
		b[i] = c
	}
	return string(b)
}

// NewSubTable returns the views of the subscription table of seg (laid out
// as g, which must have subscriptions) over its lanes, and hooks the lanes
// up so that a producer that finds one full cleans it.
func NewSubTable(seg []byte, g *layout.Geometry, lanes []*Lane, peers Peers) *SubTable {
	t := &SubTable{g: g, peers: peers, lanes: lanes}
	for i, l := range lanes {
		c := g.Lanes[i].CtrlOff
		t.clean = append(t.clean, laneClean{
			cleaner:   layout.Word32(seg, c+layout.CtrlCleaner),
			seq:       layout.Word64(seg, c+layout.CtrlCleanSeq),
			cleaned:   layout.Word64(seg, c+layout.CtrlCleanedMsgs),
			relMsgs:   layout.Word64(seg, c+layout.CtrlReleasingMsgs),
			releasing: l.releasing,
		})
	}
	for i := 0; i < g.Subscriptions; i++ {
		off := g.SubOff(i)
		e := SubEntry{
			Index:     i,
			State:     layout.Word32(seg, off+layout.SubState),
			Flags:     layout.Word32(seg, off+layout.SubFlags),
			Holder:    layout.Word32(seg, off+layout.SubHolder),
			Gen:       layout.Word32(seg, off+layout.SubGen),
			NameLen:   layout.Word32(seg, off+layout.SubNameLen),
			HolderTag: layout.Word64(seg, off+layout.SubHolderTag),
			Created:   layout.Word64(seg, off+layout.SubCreated),
			Name:      seg[off+layout.SubName : off+layout.SubName+layout.SubNameMax : off+layout.SubName+layout.SubNameMax],
		}
		for li := range lanes {
			lo := g.SubLaneOff(i, li)
			e.Cursor = append(e.Cursor, layout.Word64(seg, lo+layout.SubCursor))
			e.Delivered = append(e.Delivered, layout.Word64(seg, lo+layout.SubDelivered))
		}
		t.Entries = append(t.Entries, e)
	}
	for _, l := range lanes {
		l.fan = t
	}
	return t
}

// Lanes is the number of lanes.
func (t *SubTable) Lanes() int { return len(t.lanes) }

// Start sets entry e's cursors and delivered counts for a new
// subscription — at each lane's head (oldest) or at the end of its
// published records (latest) — and makes it active. It holds every lane's
// clean lock while it does (taking them in lane order, waiting for live
// holders), so that no cleaner computes a minimum that misses it. The
// caller has made the entry SubCreating.
func (t *SubTable) Start(e, self int, oldest bool, stop func() error) error {
	en := &t.Entries[e]
	locked := 0
	defer func() {
		for li := range locked {
			t.Unlock(li)
		}
	}()
	for li := range t.lanes {
		if err := t.LockWait(li, self, stop); err != nil {
			return err
		}
		locked++
	}
	for li, l := range t.lanes {
		c := &t.clean[li]
		h, tail := l.head.Load(), l.tail.Load()
		if tail-h > l.capacity || h%layout.RecordAlign != 0 {
			return l.errCorrupt("head %d, tail %d", h, tail)
		}
		pos, n := h, uint64(0)
		if !oldest {
			pos, n = l.publishedPrefix(h, tail, l.capacity)
		}
		en.Cursor[li].Store(pos)
		en.Delivered[li].Store(c.cleaned.Load() + n)
	}
	if !en.State.CompareAndSwap(layout.SubCreating, layout.SubActive) {
		return fmt.Errorf("%w: subscription entry %d changed state while it was made", ErrCorrupt, e)
	}
	return nil
}

// Overrun is returned by a lossy SubReader that was overrun: Missed
// messages begun in the lane were cleaned before it read them, and its
// cursor has moved to the oldest record still there.
type Overrun struct{ Missed uint64 }

func (o *Overrun) Error() string { return fmt.Sprintf("overrun: %d messages missed", o.Missed) }

// SubReader reads one lane for one subscription. It belongs to the
// subscription's holder and is not safe for concurrent use.
type SubReader struct {
	t     *SubTable
	l     *Lane
	li    int
	e     *SubEntry
	self  int
	lossy bool

	pos   uint64        // read cursor
	rel   uint64        // the cursor as last stored
	head  uint64        // cached head: reloaded when pos looks a lap ahead of it
	msgs  uint64        // messages begun before pos
	last  layout.Record // the record PeekCopy returned last
	fence atomic.Uint32
}

// Reader returns a reader of lane li for subscription entry e, held by peer
// slot self, starting at the entry's cursor (validated: for a blocking
// subscription head <= cursor <= tail, for a lossy one cursor <= tail).
func (t *SubTable) Reader(e, li, self int) (*SubReader, error) {
	en := &t.Entries[e]
	l := t.lanes[li]
	r := &SubReader{t: t, l: l, li: li, e: en, self: self, lossy: en.Flags.Load()&layout.SubLossy != 0}
	h, tail := l.head.Load(), l.tail.Load()
	c := en.Cursor[li].Load()
	if tail-h > l.capacity || h%layout.RecordAlign != 0 {
		return nil, l.errCorrupt("head %d, tail %d", h, tail)
	}
	bad := c%layout.RecordAlign != 0
	if r.lossy {
		bad = bad || ahead(c, tail)
	} else {
		bad = bad || c-h > tail-h
	}
	if bad {
		return nil, fmt.Errorf("lane %d: %w: subscription %d (%q) has cursor %d outside [head %d, tail %d]",
			li, ErrCorrupt, e, en.NameString(), c, h, tail)
	}
	r.pos, r.rel, r.head, r.msgs = c, c, h, en.Delivered[li].Load()
	return r, nil
}

// Lane is the reader's lane.
func (r *SubReader) Lane() *Lane { return r.l }

// Position is the read cursor.
func (r *SubReader) Position() uint64 { return r.pos }

// Begun is the number of messages begun before the read cursor.
func (r *SubReader) Begun() uint64 { return r.msgs }

// behind reports whether the cursor is a whole lap ahead of the head (the
// bytes there are the head's record, not a new one).
func (r *SubReader) lapAhead() bool {
	if r.pos-r.head < r.l.capacity {
		return false
	}
	r.head = r.l.head.Load()
	return r.pos-r.head >= r.l.capacity
}

// Ready reports whether a record (or, for a lossy reader, an overrun)
// waits at the cursor.
func (r *SubReader) Ready() bool {
	if r.lossy && ahead(r.l.releasing.Load(), r.pos) {
		return true
	}
	return !r.lapAhead() && r.l.lengthWord(r.pos&r.l.mask).Load() != 0
}

// InFlight reports whether space at the cursor is claimed but not
// published.
func (r *SubReader) InFlight() bool {
	return r.l.tail.Load() != r.pos && !r.lapAhead() && r.l.lengthWord(r.pos&r.l.mask).Load() == 0
}

// Peek returns the next data record in place, passing padding, or ErrEmpty.
// Only for blocking subscriptions: a lossy one must use PeekCopy.
func (r *SubReader) Peek() (layout.Record, []byte, error) {
	l := r.l
	for {
		if r.lapAhead() {
			return layout.Record{}, nil, ErrEmpty
		}
		off := r.pos & l.mask
		n := l.lengthWord(off).Load() // pairs with the producer's Store in Commit
		if n == 0 {
			return layout.Record{}, nil, ErrEmpty
		}
		rec := layout.RecordFromWords(n, l.meta(off))
		span, err := rec.Check(off, l.capacity, l.limit)
		if err != nil {
			return layout.Record{}, nil, fmt.Errorf("lane %d at position %d: %w", l.index, r.pos, err)
		}
		if rec.Type == layout.TypePadding {
			r.pos += span
			continue
		}
		return rec, l.data[off+layout.RecordHeader : off+uint64(n) : off+uint64(n)], nil
	}
}

// PeekCopy copies the next data record's payload into buf, passing padding,
// and returns its header and length; ErrEmpty if there is none. An overrun
// (lossy readers) returns an *Overrun and moves the cursor to the oldest
// record still in the lane; a payload longer than buf a *ShortBufferError.
// The copy is intact: see the file comment.
func (r *SubReader) PeekCopy(buf []byte) (layout.Record, int, error) {
	l := r.l
	for {
		if ahead(l.releasing.Load(), r.pos) {
			return layout.Record{}, 0, r.overrun()
		}
		if r.lapAhead() {
			return layout.Record{}, 0, ErrEmpty
		}
		off := r.pos & l.mask
		n := l.lengthWord(off).Load()
		if n == 0 {
			if ahead(l.releasing.Load(), r.pos) {
				return layout.Record{}, 0, r.overrun()
			}
			return layout.Record{}, 0, ErrEmpty
		}
		rec := layout.RecordFromWords(n, l.meta(off))
		span, err := rec.Check(off, l.capacity, l.limit)
		if err == nil && rec.Type == layout.TypeData && int(n)-layout.RecordHeader > len(buf) {
			err = &ShortBufferError{Need: int(n) - layout.RecordHeader, Have: len(buf)}
		}
		k := 0
		if err == nil && rec.Type == layout.TypeData {
			k = copy(buf, l.data[off+layout.RecordHeader:off+uint64(n)])
		}
		loadFence(&r.fence)
		if ahead(l.releasing.Load(), r.pos) {
			return layout.Record{}, 0, r.overrun() // torn, or the header was
		}
		if err != nil {
			if _, short := err.(*ShortBufferError); short {
				return rec, 0, err
			}
			return layout.Record{}, 0, fmt.Errorf("lane %d at position %d: %w", l.index, r.pos, err)
		}
		if rec.Type == layout.TypePadding {
			r.pos += span
			continue
		}
		r.last = rec
		return rec, k, nil
	}
}

// overrun moves a lossy reader to the lane's releasing position.
func (r *SubReader) overrun() error {
	pos, msgs, err := r.t.ReleasingPoint(r.li, r.self)
	if err != nil {
		return err
	}
	if !ahead(pos, r.pos) {
		return ErrEmpty // moved back by a repair: nothing was lost after all
	}
	if pos%layout.RecordAlign != 0 || ahead(pos, r.l.tail.Load()) {
		return r.l.errCorrupt("releasing position %d (tail %d)", pos, r.l.tail.Load())
	}
	missed := uint64(0)
	if msgs-r.msgs < 1<<62 {
		missed = msgs - r.msgs
	}
	r.pos, r.msgs = pos, msgs
	r.head = pos // head <= releasing; reloaded when needed
	if h := r.l.head.Load(); !ahead(h, pos) {
		r.head = h
	}
	return &Overrun{Missed: missed}
}

// Next moves the cursor past rec, the record Peek or PeekCopy returned.
func (r *SubReader) Next(rec layout.Record) {
	r.pos += layout.AlignRecord(uint64(rec.Length))
	if rec.Flags&layout.FragBegin != 0 {
		r.msgs++
	}
}

// Release stores the cursor, so that cleaners may free what it passed. If
// a producer sleeps on the lane's space doorbell, the reader cleans (the
// producer is waiting anyway, and may be one that cannot clean) and rings.
func (r *SubReader) Release() error {
	if r.pos == r.rel {
		return nil
	}
	r.e.Cursor[r.li].Store(r.pos) // pairs with the cleaner's Load in minBlocking
	r.e.Delivered[r.li].Store(r.msgs)
	r.rel = r.pos
	return r.Help()
}

// Help cleans the lane if a producer sleeps on its space doorbell and the
// subscriptions have passed its head: producers that cannot clean (the C
// client) rely on it. Subscribers call it on release and before they
// sleep; the cost when nobody sleeps is one load.
func (r *SubReader) Help() error {
	if r.l.space.Sleepers() == 0 || !r.t.Releasable(r.li) {
		return nil
	}
	_, err := r.t.Clean(r.li, r.self, 0)
	return err
}

// Recover pads a dead producer's claim at the cursor (see
// Consumer.Recover), serialised with cleaners by the lane's clean lock.
func (r *SubReader) Recover(peers Peers) (bool, error) {
	got, err := r.t.lock(r.li, r.self, true)
	if err != nil || !got {
		return false, err
	}
	defer r.t.Unlock(r.li)
	c := &Consumer{l: r.l, pos: r.pos, head: r.l.head.Load()}
	if ahead(c.head, c.pos) {
		return false, nil // overrun: the reader finds out at its next read
	}
	return c.Recover(peers)
}

// IsOverrun reports whether err is an *Overrun, and returns it.
func IsOverrun(err error) (*Overrun, bool) {
	var o *Overrun
	ok := errors.As(err, &o)
	return o, ok
}

// Skip moves the cursor past the data record PeekCopy just returned, by the
// header it validated (the ring may have been overwritten since).
func (r *SubReader) Skip() { r.Next(r.last) }

// Begun is the number of messages begun in lane li so far: those before
// the head, and those published after it (a walk of the lane, for
// statistics).
func (t *SubTable) Begun(li int) uint64 {
	l, c := t.lanes[li], &t.clean[li]
	for range 4 {
		h, cleaned := l.head.Load(), c.cleaned.Load()
		_, n := l.publishedPrefix(h, l.tail.Load(), l.capacity)
		if l.head.Load() == h {
			return cleaned + n
		}
	}
	return c.cleaned.Load()
}

// SubMark is a reader's position, to go back to (Reset).
type SubMark struct{ pos, msgs uint64 }

// Mark is the reader's current position.
func (r *SubReader) Mark() SubMark { return SubMark{r.pos, r.msgs} }

// Reset moves the reader back to m, which must not be before the last
// Release: the records after it are read again.
func (r *SubReader) Reset(m SubMark) { r.pos, r.msgs = m.pos, m.msgs }
