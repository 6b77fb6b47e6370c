package ring

// Cleaning a fan-out lane.
//
// On a fan-out bus a lane is a log read by several subscriptions, each with
// its own cursor (subscribe.go). Subscribers never zero and never move the
// head: a subscriber's release is one store of its cursor. Cleaning — zeroing
// the space every subscriber that holds producers back has passed, and moving
// the head over it, which keeps invariant Z (doc.go) — is done lazily, under a
// per-lane clean lock, by whoever needs space: a producer that finds the lane
// full (claimSpan), a subscriber that finds a producer asleep on the lane's
// space doorbell, and registration, removal and checks. Zeroing is thus off
// the round trip of a message.
//
// Clean, under the lock:
//
//  1. lock: CAS the lane's cleaner word 0 -> slot+1. Held by a live peer: give
//     up (it re-checks after unlocking, step 5). Held by a provably dead or
//     departed slot (or one this caller's slot inherited): take it over by
//     CAS and finish what the dead cleaner began (repair).
//  2. target = the minimum cursor of the active blocking subscriptions, each
//     validated (head <= c <= tail by differences, a multiple of 8; else
//     ErrCorrupt naming the subscription). With none, the published records
//     from the head, as many as the caller needs (and at least an eighth of
//     the lane, so that cleaning is not paid per message): the oldest
//     records are overwritten, and lossy subscribers behind are overrun.
//  3. walk [head, target), validating every record header, counting the
//     messages begun there (data records with FragBegin).
//  4. seqlock-publish releasing = target with the message count at it
//     (cleanSeq odd while the two change), zero [head, target), store
//     head = target (producers may now claim the space), then cleanedMsgs.
//  5. unlock, ring the space doorbell, and reload the minimum: if a
//     blocking subscriber moved past the head while the lock was held,
//     loop (whoever failed to take the lock in step 1 relies on this).
//
// A lossy subscriber tells an overrun from the releasing word: it is stored
// (step 4) before any byte is zeroed and before the head moves, so a reader
// that loads it after copying a record and finds it at or before the
// record's position read bytes that no cleaner had touched and no producer
// could have reused (subscribe.go states the reader's side).

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/layout"
)

// laneClean is a lane's clean words.
type laneClean struct {
	cleaner   *atomic.Uint32 // clean lock: peer slot + 1, 0 = free
	seq       *atomic.Uint64 // seqlock over releasing and relMsgs
	cleaned   *atomic.Uint64 // messages begun before head
	relMsgs   *atomic.Uint64 // messages begun before releasing
	releasing *atomic.Uint64 // the lane's releasing word
}

// ahead reports whether position a is past position b (by difference).
func ahead(a, b uint64) bool { return int64(a-b) > 0 }

// minClean is the least a clean without blocking subscribers frees: an
// eighth of the lane, so that a producer overwriting old records pays for
// a clean once per many messages.
func (l *Lane) minClean() uint64 { return l.capacity / 8 }

// Clean frees space in lane li for a caller holding peer slot self that
// needs need more bytes (0: as much as the subscriptions allow). It returns
// whether the head moved. It never waits for the lock: a live holder
// re-checks after it unlocks.
func (t *SubTable) Clean(li, self int, need uint64) (bool, error) {
	return t.cleanLoop(li, self, need, false)
}

// CleanDead is Clean that also takes over a lock whose holder is provably
// dead (which reads /proc): for callers that waited a while.
func (t *SubTable) CleanDead(li, self int, need uint64) (bool, error) {
	return t.cleanLoop(li, self, need, true)
}

func (t *SubTable) cleanLoop(li, self int, need uint64, prove bool) (bool, error) {
	moved := false
	for {
		got, err := t.lock(li, self, prove)
		if err != nil || !got {
			return moved, err
		}
		m, err := t.cleanLocked(li, need)
		t.unlock(li)
		if m {
			moved = true
			t.lanes[li].space.Ring()
		}
		if err != nil {
			return moved, err
		}
		if !m {
			return moved, nil
		}
		// Step 5: a blocking subscriber may have moved while we held the lock.
		if min, found, err := t.minBlocking(li); err != nil || !found || min == t.lanes[li].head.Load() {
			return moved, err
		}
		need = 0
	}
}

// lock takes lane li's clean lock for slot self. It reports false if a
// live peer holds it. With prove, a holder is checked for proof of death;
// without, only a holder whose slot is free, out of range or self's own
// (inherited from a dead process that had the same slot) is taken over.
func (t *SubTable) lock(li, self int, prove bool) (bool, error) {
	w := t.clean[li].cleaner
	me := uint32(self) + 1
	for {
		cur := w.Load()
		if cur == 0 {
			if !w.CompareAndSwap(0, me) {
				continue
			}
			// A clean half done under a free lock: only a damaged segment
			// (or a repair that failed) leaves one. Finish or refuse it.
			if c := &t.clean[li]; c.seq.Load()&1 != 0 || c.releasing.Load() != t.lanes[li].head.Load() {
				if err := t.repair(li); err != nil {
					w.Store(0)
					return false, err
				}
			}
			return true, nil
		}
		holder := int(cur) - 1
		stale := holder >= t.peers.Slots() || holder == self
		if !stale {
			if f, ok := t.peers.(interface{ Free(slot int) bool }); ok && f.Free(holder) {
				stale = true // its owner left holding it: it died and its slot was freed
			} else if prove {
				stale = t.peers.State(holder) != PeerAlive
			}
		}
		if !stale {
			return false, nil
		}
		if !w.CompareAndSwap(cur, me) {
			continue
		}
		if err := t.repair(li); err != nil {
			w.Store(0)
			return false, err
		}
		return true, nil
	}
}

func (t *SubTable) unlock(li int) { t.clean[li].cleaner.Store(0) }

// ErrLocked is returned when a lane's clean lock stays held by a live peer
// for longer than any clean takes (LockPatience): a peer stopped (SIGSTOP)
// while it cleaned, or a damaged lock word naming a live peer.
var ErrLocked = errors.New("clean lock held")

// LockPatience is how long LockWait and ReleasingPoint wait for a clean
// lock held by a live peer before they give up with ErrLocked.
const LockPatience = 5 * time.Second

// LockWait takes lane li's clean lock, waiting while a live peer holds it
// (taking it over from a dead one), until stop returns an error or
// LockPatience passes (ErrLocked).
func (t *SubTable) LockWait(li, self int, stop func() error) error {
	var start time.Time
	for i := 0; ; i++ {
		got, err := t.lock(li, self, i%64 == 63)
		if err != nil || got {
			return err
		}
		if stop != nil {
			if err := stop(); err != nil {
				return err
			}
		}
		if i == 0 {
			start = time.Now()
		} else if i%64 == 0 && time.Since(start) > LockPatience {
			return t.errLocked(li)
		}
		backoff(i)
	}
}

func (t *SubTable) errLocked(li int) error {
	return fmt.Errorf("lane %d: %w by peer slot %d for over %v", li, ErrLocked, int(t.clean[li].cleaner.Load())-1, LockPatience)
}

// Unlock gives back lane li's clean lock taken by LockWait, and rings the
// lane's space doorbell: producers that gave up cleaning while it was held
// look again.
func (t *SubTable) Unlock(li int) {
	t.unlock(li)
	t.lanes[li].space.Ring()
}

// backoff waits a little, longer the more often it has been called.
func backoff(i int) {
	switch {
	case i < 16:
		yield()
	case i < 64:
		osYield()
	default:
		time.Sleep(time.Duration(min(i, 1000)) * time.Microsecond)
	}
}

// repair finishes what a dead cleaner of lane li began; the caller holds
// the lock.
func (t *SubTable) repair(li int) error {
	l, c := t.lanes[li], &t.clean[li]
	h, tail, r := l.head.Load(), l.tail.Load(), c.releasing.Load()
	if tail-h > l.capacity || h%layout.RecordAlign != 0 {
		return l.errCorrupt("head %d, tail %d", h, tail)
	}
	if r-h > tail-h || r%layout.RecordAlign != 0 {
		return l.errCorrupt("clean in progress to %d, head %d, tail %d", r, h, tail)
	}
	if s := c.seq.Load(); s&1 != 0 {
		// Died publishing releasing: nothing is zeroed yet, so the records
		// of [head, releasing) can be counted again.
		n, err := l.countBegun(h, r)
		if err != nil {
			return err
		}
		c.relMsgs.Store(c.cleaned.Load() + n)
		c.seq.Store(s + 1)
	}
	if r != h {
		l.zero(h, r)
		l.head.Store(r)
	}
	c.cleaned.Store(c.relMsgs.Load())
	return nil
}

// cleanLocked is steps 2-4 of Clean.
func (t *SubTable) cleanLocked(li int, need uint64) (bool, error) {
	l, c := t.lanes[li], &t.clean[li]
	h, tail := l.head.Load(), l.tail.Load()
	if tail-h > l.capacity || h%layout.RecordAlign != 0 {
		return false, l.errCorrupt("head %d, tail %d", h, tail)
	}
	target, found, err := t.minBlocking(li)
	if err != nil {
		return false, err
	}
	var n uint64
	if found {
		if n, err = l.countBegun(h, target); err != nil {
			return false, err
		}
	} else {
		target, n = l.publishedPrefix(h, tail, max(need, l.minClean()))
	}
	if target == h {
		return false, nil
	}
	msgs := c.cleaned.Load() + n
	s := c.seq.Load()
	c.seq.Store(s + 1) // odd: releasing and relMsgs change
	c.releasing.Store(target)
	c.relMsgs.Store(msgs)
	c.seq.Store(s + 2)
	l.zero(h, target)
	l.head.Store(target) // publishes the zeroed space: pairs with the producer's Load in claimSpan
	c.cleaned.Store(msgs)
	return true, nil
}

// minBlocking is the least cursor of lane li over the active blocking
// subscriptions, each validated against the lane's head and tail; found is
// false if there is none.
func (t *SubTable) minBlocking(li int) (min uint64, found bool, err error) {
	l := t.lanes[li]
	h, tail := l.head.Load(), l.tail.Load()
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.State.Load() != layout.SubActive || e.Flags.Load()&layout.SubLossy != 0 {
			continue
		}
		cur := e.Cursor[li].Load()
		if cur-h > tail-h || cur%layout.RecordAlign != 0 {
			// The tail may have moved past a fresh cursor since we read it.
			if tail = l.tail.Load(); cur-h > tail-h || cur%layout.RecordAlign != 0 {
				return 0, false, fmt.Errorf("lane %d: %w: subscription %d (%q) has cursor %d outside [head %d, tail %d]",
					li, ErrCorrupt, i, e.NameString(), cur, h, tail)
			}
		}
		if !found || cur-h < min-h {
			min, found = cur, true
		}
	}
	return min, found, nil
}

// MinBlocking is the least cursor of lane li over the active blocking
// subscriptions (found is false if there is none), for statistics.
func (t *SubTable) MinBlocking(li int) (min uint64, found bool, err error) { return t.minBlocking(li) }

// Releasable reports whether a clean of lane li would move its head now:
// the blocking subscriptions have all passed it, or there are none and a
// record is published there. It only loads words.
func (t *SubTable) Releasable(li int) bool {
	l := t.lanes[li]
	min, found, err := t.minBlocking(li)
	if err != nil {
		return true // let the clean report it
	}
	h := l.head.Load()
	if found {
		return min != h
	}
	if h%layout.RecordAlign != 0 {
		return true // let the clean report it
	}
	return l.tail.Load() != h && l.lengthWord(h&l.mask).Load() != 0
}

// countBegun walks the records of [from, to), which must all be published,
// validating each, and counts the messages begun there.
func (l *Lane) countBegun(from, to uint64) (uint64, error) {
	var n uint64
	for pos := from; pos != to; {
		off := pos & l.mask
		r := layout.RecordFromWords(l.lengthWord(off).Load(), l.meta(off))
		if r.Length == 0 {
			return 0, l.errCorrupt("unpublished record at %d below a subscription cursor %d", pos, to)
		}
		span, err := r.Check(off, l.capacity, l.limit)
		if err != nil {
			return 0, fmt.Errorf("lane %d at position %d: %w", l.index, pos, err)
		}
		if span > to-pos {
			return 0, l.errCorrupt("record at %d runs past the subscription cursor %d", pos, to)
		}
		if r.Type == layout.TypeData && r.Flags&layout.FragBegin != 0 {
			n++
		}
		pos += span
	}
	return n, nil
}

// publishedPrefix walks the published records from h (before tail) until
// they cover want bytes or an unpublished or unreadable record is met; it
// returns the position reached and the messages begun before it.
func (l *Lane) publishedPrefix(h, tail, want uint64) (uint64, uint64) {
	var n uint64
	pos := h
	if h%layout.RecordAlign != 0 || tail-h > l.capacity {
		return h, 0 // not a lane to walk (the callers report it, or only count)
	}
	for pos != tail && pos-h < want {
		off := pos & l.mask
		r := layout.RecordFromWords(l.lengthWord(off).Load(), l.meta(off))
		if r.Length == 0 {
			break
		}
		span, err := r.Check(off, l.capacity, l.limit)
		if err != nil || span > tail-pos {
			break
		}
		if r.Type == layout.TypeData && r.Flags&layout.FragBegin != 0 {
			n++
		}
		pos += span
	}
	return pos, n
}

// zero clears the ring bytes of [from, to).
func (l *Lane) zero(from, to uint64) {
	off, n := from&l.mask, to-from
	if off+n <= l.capacity {
		clear(l.data[off : off+n])
	} else {
		clear(l.data[off:])
		clear(l.data[:n-(l.capacity-off)])
	}
}

// ReleasingPoint reads lane li's releasing position and the messages begun
// before it, consistently (the seqlock of step 4). A cleaner that died with
// the sequence odd is found and repaired on the way (self is the caller's
// peer slot).
func (t *SubTable) ReleasingPoint(li, self int) (pos, msgs uint64, err error) {
	c := &t.clean[li]
	var start time.Time
	for i := 0; ; i++ {
		if i == 0 {
			start = time.Now()
		} else if i%256 == 0 && time.Since(start) > LockPatience {
			return 0, 0, t.errLocked(li)
		}
		s1 := c.seq.Load()
		if s1&1 == 0 {
			pos, msgs = c.releasing.Load(), c.relMsgs.Load()
			if c.seq.Load() == s1 {
				return pos, msgs, nil
			}
		}
		if i%256 == 255 {
			// Odd for long: its writer may be dead. Taking the lock
			// repairs a dead holder's half-done clean.
			got, err := t.lock(li, self, true)
			if err != nil {
				return 0, 0, err
			}
			if got {
				t.unlock(li)
			}
		}
		backoff(i)
	}
}

// Slot is the peer slot the producer writes as.
func (p *Producer) Slot() int { return int(p.id) }

// Repair takes and gives back lane li's clean lock if it names slot self:
// a process that has just taken a peer slot calls it, since a dead process
// that held the slot may have died holding the lock, which everyone else
// now takes for the live new owner's.
func (t *SubTable) Repair(self int) error {
	for li := range t.lanes {
		if t.clean[li].cleaner.Load() != uint32(self)+1 {
			continue
		}
		got, err := t.lock(li, self, false)
		if err != nil {
			return err
		}
		if got {
			t.Unlock(li)
		}
	}
	return nil
}
