package shmbus

import (
	"time"

	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// PeerEventKind is what happened to a peer.
type PeerEventKind int

const (
	PeerAttached PeerEventKind = 1 + iota // took a peer slot
	PeerDetached                          // gave its slot back
	PeerDied                              // proven dead (pid gone or reused, or a zombie) while holding its slot
)

func (k PeerEventKind) String() string {
	switch k {
	case PeerAttached:
		return "attached"
	case PeerDetached:
		return "detached"
	case PeerDied:
		return "died"
	}
	return "unknown"
}

// PeerEvent is a lifecycle event of one peer of a bus: a producer,
// consumer or subscriber that attached, detached or died. Subscriptions
// with SubscribeOptions.Events receive them in order with their messages;
// the daemon's SUBSCRIBE events are the same events.
type PeerEvent struct {
	Kind   PeerEventKind
	Slot   int
	PID    int
	Role   string // "producer", "consumer", "subscriber" (as PeerInfo.Role)
	Joined time.Time
}

// roleName names a peer slot's role word.
func roleName(role uint32) string {
	switch {
	case role&layout.RoleConsumer != 0:
		return "consumer"
	case role&layout.RoleSubscriber != 0:
		return "subscriber"
	case role&layout.RoleProducer != 0:
		return "producer"
	}
	return "none"
}

// PeerWatcher finds the peer events of a bus by comparing its peer table
// with what it saw last. It is not safe for concurrent use.
type PeerWatcher struct {
	b    *Bus
	seen []seenPeer
}

type seenPeer struct {
	tag    uint64 // owner tag, 0 = free
	role   uint32
	joined int64
	died   bool // reported dead: no detach follows
}

// WatchPeers returns a watcher whose first Scan reports what changed after
// this call (the peers attached now are its baseline).
func (b *Bus) WatchPeers() *PeerWatcher { return b.newPeerWatcher() }

func (b *Bus) newPeerWatcher() *PeerWatcher {
	w := &PeerWatcher{b: b, seen: make([]seenPeer, b.g.PeerSlots)}
	for i := range w.seen {
		w.seen[i] = w.look(i)
	}
	return w
}

func (w *PeerWatcher) look(i int) seenPeer {
	t := w.b.peers
	off := t.g.PeerOff(i)
	return seenPeer{
		tag:    t.owner(i).Load(),
		role:   layout.Word32(t.seg, off+layout.PeerRole).Load(),
		joined: int64(layout.Word64(t.seg, off+layout.PeerJoined).Load()),
	}
}

// Scan appends to evs the events since the last scan. With prove it also
// looks for proof that the peers it knows have died (which reads /proc for
// each); without, it only sees slots change hands (one load per slot).
// Slot self (the caller's own, or -1) is left out.
func (w *PeerWatcher) Scan(evs []PeerEvent, prove bool) []PeerEvent {
	if w.b.enter() != nil {
		return evs
	}
	defer w.b.exit()
	return w.scan(evs, prove, -1)
}

func (w *PeerWatcher) scan(evs []PeerEvent, prove bool, self int) []PeerEvent {
	t := w.b.peers
	for i := range w.seen {
		old := &w.seen[i]
		o := t.owner(i).Load()
		if o == 0 && old.tag == 0 {
			// Free then and now; but a peer may have come and gone in
			// between (its join time and pid stay in the slot).
			cur := w.look(i)
			if cur.joined != old.joined && cur.joined != 0 && i != self {
				pid := int(layout.Word32(t.seg, t.g.PeerOff(i)+layout.PeerPID).Load())
				role, kind := roleName(cur.role&^layout.RoleLeft), PeerDetached
				if cur.role&layout.RoleLeft == 0 && cur.role != 0 { // freed by others, after its death
					kind = PeerDied
				}
				ev := PeerEvent{Kind: PeerAttached, Slot: i, PID: pid, Role: role, Joined: time.Unix(0, cur.joined)}
				evs = append(evs, ev)
				ev.Kind = kind
				evs = append(evs, ev)
			}
			old.joined = cur.joined
			continue
		}
		if o == old.tag {
			if prove && o != 0 && !old.died && o != t.tag && tagState(o) == ring.PeerDead {
				old.died = true
				if i != self {
					evs = append(evs, old.event(PeerDied, i))
				}
			}
			continue
		}
		cur := w.look(i)
		cur.tag = o
		if old.tag != 0 && !old.died && i != self {
			// Gone since the last look: a clean release clears the role
			// word before the owner; a dead peer's slot freed by others
			// keeps it (or has a new owner while the old tag is dead).
			kind := PeerDetached
			if o == 0 && cur.role != 0 && cur.role&layout.RoleLeft == 0 || o != 0 && tagState(old.tag) == ring.PeerDead {
				kind = PeerDied
			}
			evs = append(evs, old.event(kind, i))
		}
		if o != 0 && i != self {
			if cur.role == 0 {
				// Taken but not yet filled in: look again next time.
				*old = seenPeer{}
				continue
			}
			evs = append(evs, cur.event(PeerAttached, i))
		}
		*old = cur
	}
	return evs
}

func (p seenPeer) event(kind PeerEventKind, slot int) PeerEvent {
	return PeerEvent{Kind: kind, Slot: slot, PID: int(p.tag >> 32), Role: roleName(p.role), Joined: time.Unix(0, p.joined)}
}
