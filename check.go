package shmbus

import (
	"fmt"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
)

// Check reads the bus called name in dir ("" for the default) without
// attaching as a peer and checks it: the header against the file, every
// lane's positions, every record between each lane's release position and
// its first unpublished record, the role words and the peer table. It
// returns nil for a consistent bus, or an error wrapping ErrCorrupt that
// names the first fault and where it is. A bus in use may show records
// being written; those are not faults.
func Check(dir, name string) error {
	if err := segment.ValidateName(name); err != nil {
		return fmt.Errorf("check bus %q: %w", name, err)
	}
	m, h, g, err := segment.Open(segment.Path(dir, name), time.Millisecond)
	if err != nil {
		return fmt.Errorf("check bus %q: %w", name, err)
	}
	defer m.Close()
	err = segment.Guard(func() error { return checkSegment(m.Bytes(), &h, &g) })
	if err != nil {
		return fmt.Errorf("check bus %q: %w", name, err)
	}
	return nil
}

func checkSegment(seg []byte, h *layout.Header, g *layout.Geometry) error {
	if c := layout.Word32(seg, layout.OffConsumer).Load(); c > uint32(g.PeerSlots) {
		return fmt.Errorf("%w: consumer role word %d, bus has %d peer slots", ErrCorrupt, c, g.PeerSlots)
	}
	for i, e := range g.Lanes {
		if err := checkLane(seg, g, i, e); err != nil {
			return fmt.Errorf("lane %d: %w", i, err)
		}
	}
	for i := 0; i < g.PeerSlots; i++ {
		off := g.PeerOff(i)
		owner := layout.Word64(seg, off+layout.PeerOwner).Load()
		role := layout.Word32(seg, off+layout.PeerRole).Load()
		if owner == 0 {
			continue
		}
		if role&^(layout.RoleProducer|layout.RoleConsumer) != 0 {
			return fmt.Errorf("%w: peer slot %d: role %#x", ErrCorrupt, i, role)
		}
		if pid := layout.Word32(seg, off+layout.PeerPID).Load(); pid != 0 && uint64(pid) != owner>>32 {
			return fmt.Errorf("%w: peer slot %d: owner tag %#x does not match pid %d", ErrCorrupt, i, owner, pid)
		}
	}
	return nil
}

func checkLane(seg []byte, g *layout.Geometry, i int, e layout.LaneEntry) error {
	ctrl := e.CtrlOff
	head := layout.Word64(seg, ctrl+layout.CtrlHead).Load()
	tail := layout.Word64(seg, ctrl+layout.CtrlTail).Load()
	if head%layout.RecordAlign != 0 || tail%layout.RecordAlign != 0 {
		return fmt.Errorf("%w: positions not 8-byte aligned: head %d, tail %d", ErrCorrupt, head, tail)
	}
	if tail-head > e.Capacity {
		return fmt.Errorf("%w: tail %d is %d bytes past head %d; the lane holds %d", ErrCorrupt, tail, tail-head, head, e.Capacity)
	}
	if o := layout.Word32(seg, ctrl+layout.CtrlSPSCOwner).Load(); o > uint32(g.PeerSlots) {
		return fmt.Errorf("%w: producer role word %d, bus has %d peer slots", ErrCorrupt, o, g.PeerSlots)
	}
	data := seg[e.DataOff : e.DataOff+e.Capacity]
	mask := e.Capacity - 1
	pos := head
	for pos != tail {
		off := pos & mask
		n := layout.Word32At(data, off).Load()
		if n == 0 {
			break // claimed, being written (or its writer died): not a fault
		}
		meta := layout.Word32At(data, off+4).Load()
		r := layout.RecordFromWords(n, meta)
		span, err := r.Check(off, e.Capacity, uint64(e.RecordLimit))
		if err != nil {
			return fmt.Errorf("record at position %d: %w", pos, err)
		}
		if r.Type == layout.TypeData && r.Producer != layout.NoProducer && int(r.Producer) >= g.PeerSlots {
			return fmt.Errorf("%w: record at position %d names producer slot %d of %d", ErrCorrupt, pos, r.Producer, g.PeerSlots)
		}
		if span > tail-pos {
			return fmt.Errorf("%w: record at position %d runs %d bytes past the tail", ErrCorrupt, pos, span-(tail-pos))
		}
		pos += span
	}
	// Invariant Z: outside [head, tail) every length word is zero.
	for p := tail; p != head+e.Capacity; p += layout.RecordAlign {
		if layout.Word32At(data, p&mask).Load() != 0 {
			if p == tail && layout.Word64(seg, ctrl+layout.CtrlTail).Load() != tail {
				break // a producer claimed and published meanwhile
			}
			return fmt.Errorf("%w: non-zero record header at position %d, in free space (tail %d, head %d)", ErrCorrupt, p, tail, head)
		}
	}
	return nil
}
