package ring

import "github.com/shmbus/shmbus/layout"

// PeerState is what is known of a peer slot's owner.
type PeerState int

const (
	PeerFree  PeerState = iota // no owner
	PeerAlive                  // owner alive (or not provably dead)
	PeerDead                   // owner provably dead: its claims will never be published
)

// Peers is the consumer's view of the peer table, for recovery.
type Peers interface {
	Slots() int
	// State must return PeerDead only with proof of death (pid gone or
	// reused, or zombie); anything uncertain is PeerAlive.
	State(slot int) PeerState
	Claim(slot, lane int) Claim
}

// Recover looks at the read cursor: if space there is claimed but not
// published and the claimant is provably dead, it publishes the rest of the
// dead claim as padding (so the consumer moves on) and reports true.
//
// Which claim covers the cursor c (with t the tail, read after c was found
// unpublished):
//
//	(a) a dead slot whose claim is confirmed (OK == Pos+1) and contains c:
//	    claims are disjoint, so the span [c, End) is the dead producer's own
//	    unpublished rest (it publishes in order, so nothing after c in its
//	    claim is published either). Pad [c, End).
//	(b) otherwise, the claimant moved the tail but died before confirming.
//	    Its claim record still says Pos == c (a producer rewrites Pos only
//	    for its next claim, after publishing this one). If any slot not
//	    provably dead has Pos == c, wait: it may be the claimant. Else the
//	    claimant is among the dead slots with Pos == c and no confirmation;
//	    usually one. Several (a second one failed its CAS at c and died
//	    before retrying) are told apart by their End: the true claim ends
//	    where the next claim begins, at the tail or at a position another
//	    producer claimed or published. If that leaves exactly one End, pad
//	    [c, End); if not, wait.
//
// Recovery is never decided by time alone: a slow producer that is alive is
// waited for however long it takes. A dead slot's claim is used only if the
// slot is still dead after its claim was read: a live peer that took the
// slot over in between would otherwise lend its own claim to the dead.
func (c *Consumer) Recover(peers Peers) (bool, error) {
	l := c.l
	c0 := c.pos
	if c0-c.head >= l.capacity || l.lengthWord(c0&l.mask).Load() != 0 {
		return false, nil
	}
	t := l.tail.Load() // after the length load: a claim at c0 is visible in t
	if t == c0 {
		return false, nil
	}
	if t-c0 > l.capacity {
		return false, l.errCorrupt("tail %d is %d bytes past the read position %d", t, t-c0, c0)
	}
	var (
		liveAt bool
		ends   []uint64
		slots  []int
		starts = map[uint64]bool{}
	)
	for s := 0; s < peers.Slots(); s++ {
		st := peers.State(s)
		if st == PeerFree {
			continue
		}
		cl := peers.Claim(s, l.index)
		pos := cl.Pos.Load()
		starts[pos] = true
		if st != PeerDead {
			// Only a possible span can be the claimant's: a reset or
			// half-restored record (End <= Pos) is no claim. (A reset
			// record has Pos 0, the first position of a fresh lane.)
			if end := cl.End.Load(); pos == c0 && end-pos-1 < l.capacity {
				liveAt = true
			}
			continue
		}
		end, ok := cl.End.Load(), cl.OK.Load()
		if end-pos > l.capacity || end == pos || end%layout.RecordAlign != 0 || end-c0 > t-c0 {
			continue // not a claim that can lie between c0 and t
		}
		if ok == pos+1 && c0-pos < end-pos {
			// Re-check: the slot may have been taken over by a live peer
			// between State and the loads above (then it is not dead now).
			if peers.State(s) != PeerDead {
				return false, nil
			}
			// It may have published at c0 and died after our first look;
			// its death makes that store visible now.
			if l.lengthWord(c0&l.mask).Load() != 0 {
				return false, nil
			}
			l.padSpan(c0, end)
			l.recovered.Add(1)
			return true, nil
		}
		if ok != pos+1 && pos == c0 {
			ends = append(ends, end)
			slots = append(slots, s)
		}
	}
	if liveAt || len(ends) == 0 {
		return false, nil
	}
	// Count the distinct consistent ends (an end may be 0 where positions
	// wrap at 2^64, so "none yet" is found == 0, not pick == 0).
	var pick uint64
	found := 0
	for _, e := range ends {
		consistent := e == t || starts[e] || l.lengthWord(e&l.mask).Load() != 0
		if consistent && (found == 0 || e != pick) {
			pick = e
			found++
		}
	}
	if found != 1 {
		return false, nil
	}
	for _, s := range slots {
		if peers.State(s) != PeerDead {
			return false, nil // taken over meanwhile: look again later
		}
	}
	if l.lengthWord(c0&l.mask).Load() != 0 {
		return false, nil // published meanwhile, by a claimant now dead
	}
	l.padSpan(c0, pick)
	l.recovered.Add(1)
	return true, nil
}

// ClaimPending reports whether cl may still describe space of lane l that
// the consumer has not released: a dead peer's slot must not be reused
// until it does not, or the evidence recovery needs would be lost.
func (l *Lane) ClaimPending(cl Claim) bool {
	end, h := cl.End.Load(), l.head.Load()
	return end-h-1 < l.capacity // h < end <= h+capacity, by difference
}
