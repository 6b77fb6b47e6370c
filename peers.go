package shmbus

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/internal/proc"
	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// The peer table: one slot per producer or consumer attached to the bus.
//
// A slot is taken by a CAS of its owner word from 0 (free) to this
// process's tag, pid<<32 | (start time & 0xffffffff), which names the
// process even after its pid is reused. A slot whose owner is provably dead
// may be taken over the same way, but only once none of its claim records
// can still describe unreleased space (ring.Lane.ClaimPending): that is the
// evidence the consumer needs to recover the dead producer's claims.
//
// Proof of death is the kernel's word, never a timeout: the pid does not
// exist, or exists with another start time (reused), or is a zombie.
// Liveness is judged in this process's pid namespace; peers in different
// pid namespaces must not share a bus (their pids mean nothing here).

var (
	selfOnce sync.Once
	selfID   proc.Identity
)

func selfIdentity() proc.Identity {
	selfOnce.Do(func() {
		id, err := proc.Self()
		if err != nil {
			id = proc.Identity{PID: osGetpid()}
		}
		selfID = id
	})
	return selfID
}

func ownerTag(id proc.Identity) uint64 { return proc.Tag(id) }

type peerTable struct {
	seg []byte
	g   *layout.Geometry
	tag uint64

	mu   sync.Mutex
	mine map[int]uint32 // slots this process holds, with their roles

	onTake func(slot int) // fan-out buses: repairs clean locks a dead owner of the slot held
}

func newPeerTable(seg []byte, g *layout.Geometry) *peerTable {
	return &peerTable{seg: seg, g: g, tag: ownerTag(selfIdentity()), mine: map[int]uint32{}}
}

func (t *peerTable) owner(i int) *atomic.Uint64 {
	return layout.Word64(t.seg, t.g.PeerOff(i)+layout.PeerOwner)
}

// Slots implements ring.Peers.
func (t *peerTable) Slots() int { return t.g.PeerSlots }

// Free says whether slot i has no owner (one load: no proof of death).
func (t *peerTable) Free(i int) bool { return t.owner(i).Load() == 0 }

// Claim implements ring.Peers.
func (t *peerTable) Claim(slot, lane int) ring.Claim { return ring.ClaimAt(t.seg, t.g, slot, lane) }

// State implements ring.Peers: PeerDead only with proof.
func (t *peerTable) State(i int) ring.PeerState {
	o := t.owner(i).Load()
	switch {
	case o == 0:
		return ring.PeerFree
	case o == t.tag:
		return ring.PeerAlive
	}
	return tagState(o)
}

func tagState(o uint64) ring.PeerState {
	if proc.TagState(o) == proc.Dead {
		return ring.PeerDead
	}
	return ring.PeerAlive // alive, or cannot tell: assume alive
}

// acquire takes a peer slot for role: a free one if there is one, else one
// whose owner is provably dead and whose claims are all released.
func (t *peerTable) acquire(role uint32, lanes []*ring.Lane) (int, error) {
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < t.g.PeerSlots; i++ {
			w := t.owner(i)
			o := w.Load()
			switch {
			case o == 0:
			case pass == 1 && o != t.tag && tagState(o) == ring.PeerDead && !t.pending(i, lanes):
			default:
				continue
			}
			if !w.CompareAndSwap(o, t.tag) {
				continue
			}
			t.init(i, role, lanes)
			return i, nil
		}
	}
	return -1, fmt.Errorf("%w: all %d slots are held by live peers (or by dead producers whose records are not yet recovered)", ErrNoSlot, t.g.PeerSlots)
}

func (t *peerTable) pending(i int, lanes []*ring.Lane) bool {
	for l, lane := range lanes {
		if lane.ClaimPending(t.Claim(i, l)) {
			return true
		}
	}
	return false
}

func (t *peerTable) init(i int, role uint32, lanes []*ring.Lane) {
	off := t.g.PeerOff(i)
	self := selfIdentity()
	for l := range lanes {
		t.Claim(i, l).Reset()
	}
	layout.Word32(t.seg, off+layout.PeerPID).Store(uint32(self.PID))
	layout.Word64(t.seg, off+layout.PeerStart).Store(self.Start)
	layout.Word64(t.seg, off+layout.PeerJoined).Store(uint64(time.Now().UnixNano()))
	layout.Word32(t.seg, off+layout.PeerRole).Store(role)
	t.mu.Lock()
	t.mine[i] = role
	t.mu.Unlock()
	if t.onTake != nil {
		t.onTake(i)
	}
}

// release gives slot i back. Its claim records stay as they are: all its
// claims are published (producers commit or abort before closing).
func (t *peerTable) release(i int) {
	t.mu.Lock()
	role, ok := t.mine[i]
	delete(t.mine, i)
	t.mu.Unlock()
	if !ok {
		return
	}
	// Left cleanly: the role stays readable for peer events (events.go).
	layout.Word32(t.seg, t.g.PeerOff(i)+layout.PeerRole).Store(role | layout.RoleLeft)
	t.owner(i).CompareAndSwap(t.tag, 0)
}

// releaseAll gives back every slot this process holds (Close).
func (t *peerTable) releaseAll() {
	t.mu.Lock()
	slots := make([]int, 0, len(t.mine))
	for i := range t.mine {
		slots = append(slots, i)
	}
	t.mu.Unlock()
	for _, i := range slots {
		t.release(i)
	}
}

// takeRole makes slot the holder of the role word w (slot index + 1, 0 =
// nobody): at once if nobody holds it, or if its holder is provably dead,
// or if the slot it names now belongs to a peer without that role (the
// holder died and its slot was reused).
func (t *peerTable) takeRole(w *atomic.Uint32, slot int, role uint32, what string) error {
	for {
		cur := w.Load()
		switch {
		case cur == uint32(slot)+1:
			return nil
		case cur != 0 && int(cur) <= t.g.PeerSlots:
			holder := int(cur) - 1
			holderRole := layout.Word32(t.seg, t.g.PeerOff(holder)+layout.PeerRole).Load()
			if st := t.State(holder); st == ring.PeerAlive && holderRole&role != 0 {
				pid := layout.Word32(t.seg, t.g.PeerOff(holder)+layout.PeerPID).Load()
				return fmt.Errorf("%w: %s is held by pid %d", ErrBusy, what, pid)
			}
		}
		// Free, held by a dead or departed peer, or garbage: take it.
		if w.CompareAndSwap(cur, uint32(slot)+1) {
			return nil
		}
	}
}

// dropRole clears the role word if slot holds it.
func (t *peerTable) dropRole(w *atomic.Uint32, slot int) {
	w.CompareAndSwap(uint32(slot)+1, 0)
}

// PeerInfo describes one occupied peer slot.
type PeerInfo struct {
	Slot   int
	PID    int
	Role   string // "producer", "consumer", "subscriber"
	Alive  bool
	Joined time.Time
}

func (t *peerTable) list() []PeerInfo {
	var out []PeerInfo
	for i := 0; i < t.g.PeerSlots; i++ {
		o := t.owner(i).Load()
		if o == 0 {
			continue
		}
		off := t.g.PeerOff(i)
		role := layout.Word32(t.seg, off+layout.PeerRole).Load()
		name := roleName(role)
		out = append(out, PeerInfo{
			Slot:   i,
			PID:    int(o >> 32),
			Role:   name,
			Alive:  t.State(i) != ring.PeerDead,
			Joined: time.Unix(0, int64(layout.Word64(t.seg, off+layout.PeerJoined).Load())),
		})
	}
	return out
}

// ReleaseDead gives back the peer slots that provably dead processes still
// hold, and with them their roles (a role word naming a free slot is free:
// the next NewConsumer or single producer takes it at once). It returns the
// peers whose slots it freed. A dead producer with a claim not yet recovered
// keeps its slot for now — the consumer needs the claim record to turn the
// claim into padding — and the consumer is woken to do that at once; a
// later call frees the slot. Live processes are never touched.
//
// Role words themselves are left alone: clearing one could race with a new
// process that took the freed slot and found the role word already naming
// it.
//
// On a fan-out bus it also removes the ephemeral subscriptions whose
// holders are provably dead.
//
// The daemon calls it when a lease ends; any process may.
func (b *Bus) ReleaseDead() ([]PeerInfo, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var out []PeerInfo
	err := segment.Guard(func() error {
		if b.subs != nil {
			b.removeDead() // ephemeral subscriptions of dead holders stop holding producers back
		}
		t := b.peers
		kick := false
		for _, p := range t.list() {
			if p.Alive {
				continue
			}
			w := t.owner(p.Slot)
			o := w.Load()
			if o == 0 || o == t.tag || tagState(o) != ring.PeerDead {
				continue // freed or taken over meanwhile
			}
			if t.pending(p.Slot, b.lanes) {
				kick = true
				continue
			}
			if w.CompareAndSwap(o, 0) {
				out = append(out, p)
			}
		}
		if kick {
			b.data.Kick()
		}
		return nil
	})
	if err != nil {
		return out, busError(b.name, fmt.Errorf("release dead peers: %w", err))
	}
	return out, nil
}

// peerMark names one attachment of a peer: its slot and the owner tag it
// had, so that a slot given back and taken again by another process is
// not mistaken for the one marked.
type peerMark struct {
	slot int
	tag  uint64
}

// mark is the peer holding slot now.
func (t *peerTable) mark(slot int) peerMark {
	return peerMark{slot: slot, tag: t.owner(slot).Load()}
}

// left says whether the peer m has given its slot back (or lost it to
// another process): one load.
func (t *peerTable) left(m peerMark) bool {
	return m.tag == 0 || t.owner(m.slot).Load() != m.tag
}

// gone says whether the peer m has left its slot or is provably dead (which
// reads /proc).
func (t *peerTable) gone(m peerMark) bool {
	return t.left(m) || m.tag != t.tag && tagState(m.tag) == ring.PeerDead
}

// consumerMark is the holder of the consumer role, if any.
func (t *peerTable) consumerMark() (peerMark, bool) {
	cur := layout.Word32(t.seg, layout.OffConsumer).Load()
	if cur == 0 || int(cur) > t.g.PeerSlots {
		return peerMark{}, false
	}
	return t.mark(int(cur) - 1), true
}

// holdsConsumer says whether m still holds the consumer role.
func (t *peerTable) holdsConsumer(m peerMark) bool {
	return layout.Word32(t.seg, layout.OffConsumer).Load() == uint32(m.slot)+1 && !t.left(m)
}
