package shmbus

import (
	"fmt"
	"strings"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
)

// CheckError is what Check and Bus.Check return for a damaged bus: every
// fault found, each an error wrapping ErrCorrupt that says where it is.
// errors.Is(err, ErrCorrupt) holds for a CheckError.
type CheckError struct {
	Bus    string  // the bus's name
	Faults []error // one per fault, in the order found
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "shmbus: check bus %q: %d fault", e.Bus, len(e.Faults))
	if len(e.Faults) != 1 {
		b.WriteByte('s')
	}
	for i, f := range e.Faults {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap gives the faults to errors.Is and errors.As.
func (e *CheckError) Unwrap() []error { return e.Faults }

// Check reads the bus called name in dir ("" for the default) without
// attaching as a peer and checks it: the header against the file, every
// lane's positions, every record between each lane's release position and
// its first unpublished record, the free space of every lane, the role
// words and the peer table. It returns nil for a consistent bus; a
// *CheckError listing every fault found for a damaged one; and an error
// wrapping ErrCorrupt, ErrVersion, ErrNotExist … for a segment that cannot be
// read at all. A bus in use may show records being written; those are not
// faults.
func Check(dir, name string) error {
	if err := segment.ValidateName(name); err != nil {
		return opError("check", "bus", name, err)
	}
	m, h, g, err := segment.Open(segment.Path(dir, name), time.Millisecond)
	if err != nil {
		return opError("check", "bus", name, err)
	}
	defer m.Close()
	return checkMapped(name, m.Bytes(), &h, &g)
}

// Check checks the bus this handle is attached to, as the function Check
// does by name; it also works for a memfd bus, which has no name to open.
func (b *Bus) Check() error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	return checkMapped(b.name, b.seg, &b.hdr, &b.g)
}

func checkMapped(name string, seg []byte, h *layout.Header, g *layout.Geometry) error {
	var faults []error
	if err := segment.Guard(func() error {
		faults = checkSegment(seg, h, g)
		return nil
	}); err != nil {
		return opError("check", "bus", name, err)
	}
	if len(faults) > 0 {
		return &CheckError{Bus: name, Faults: faults}
	}
	return nil
}

// checkSegment returns every fault of the mapped segment seg.
func checkSegment(seg []byte, h *layout.Header, g *layout.Geometry) []error {
	var faults []error
	fault := func(format string, args ...any) {
		faults = append(faults, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
	}
	if c := layout.Word32(seg, layout.OffConsumer).Load(); c > uint32(g.PeerSlots) {
		fault("consumer role word %d, bus has %d peer slots", c, g.PeerSlots)
	}
	for i, e := range g.Lanes {
		for _, err := range checkLane(seg, g, e) {
			faults = append(faults, fmt.Errorf("lane %d: %w", i, err))
		}
	}
	for i := 0; i < g.PeerSlots; i++ {
		off := g.PeerOff(i)
		owner := layout.Word64(seg, off+layout.PeerOwner).Load()
		role := layout.Word32(seg, off+layout.PeerRole).Load()
		if owner == 0 {
			continue
		}
		if role&^(layout.RoleProducer|layout.RoleConsumer|layout.RoleSubscriber|layout.RoleLeft) != 0 {
			fault("peer slot %d: role %#x", i, role)
		}
		if pid := layout.Word32(seg, off+layout.PeerPID).Load(); pid != 0 && uint64(pid) != owner>>32 {
			fault("peer slot %d: owner tag %#x does not match pid %d", i, owner, pid)
		}
	}
	if g.Subscriptions > 0 {
		faults = append(faults, checkFanOut(seg, g)...)
	}
	return faults
}

// checkLane returns the faults of lane e. A fault in the positions ends the
// lane's check (nothing else can be located); a fault in a record ends the
// walk of its records (the next one cannot be found) but the free space is
// still checked.
func checkLane(seg []byte, g *layout.Geometry, e layout.LaneEntry) []error {
	var faults []error
	fault := func(err error) { faults = append(faults, err) }
	ctrl := e.CtrlOff
	head := layout.Word64(seg, ctrl+layout.CtrlHead).Load()
	tail := layout.Word64(seg, ctrl+layout.CtrlTail).Load()
	if o := layout.Word32(seg, ctrl+layout.CtrlSPSCOwner).Load(); o > uint32(g.PeerSlots) {
		fault(fmt.Errorf("%w: producer role word %d, bus has %d peer slots", ErrCorrupt, o, g.PeerSlots))
	}
	if head%layout.RecordAlign != 0 || tail%layout.RecordAlign != 0 {
		return append(faults, fmt.Errorf("%w: positions not 8-byte aligned: head %d, tail %d", ErrCorrupt, head, tail))
	}
	if tail-head > e.Capacity {
		return append(faults, fmt.Errorf("%w: tail %d is %d bytes past head %d; the lane holds %d", ErrCorrupt, tail, tail-head, head, e.Capacity))
	}
	data := seg[e.DataOff : e.DataOff+e.Capacity]
	mask := e.Capacity - 1
	for pos := head; pos != tail; {
		off := pos & mask
		n := layout.Word32At(data, off).Load()
		if n == 0 {
			break // claimed, being written (or its writer died): not a fault
		}
		meta := layout.Word32At(data, off+4).Load()
		r := layout.RecordFromWords(n, meta)
		span, err := r.Check(off, e.Capacity, uint64(e.RecordLimit))
		if err != nil {
			fault(fmt.Errorf("record at position %d: %w", pos, err))
			break
		}
		if r.Type == layout.TypeData && r.Producer != layout.NoProducer && int(r.Producer) >= g.PeerSlots {
			fault(fmt.Errorf("%w: record at position %d names producer slot %d of %d", ErrCorrupt, pos, r.Producer, g.PeerSlots))
		}
		if span > tail-pos {
			fault(fmt.Errorf("%w: record at position %d runs %d bytes past the tail", ErrCorrupt, pos, span-(tail-pos)))
			break
		}
		pos += span
	}
	// Invariant Z: outside [head, tail) every length word is zero. One
	// fault is reported for each run of non-zero words.
	inRun := false
	for p := tail; p != head+e.Capacity; p += layout.RecordAlign {
		if layout.Word32At(data, p&mask).Load() == 0 {
			inRun = false
			continue
		}
		if p == tail && layout.Word64(seg, ctrl+layout.CtrlTail).Load() != tail {
			break // a producer claimed and published meanwhile
		}
		if !inRun {
			fault(fmt.Errorf("%w: non-zero record header at position %d, in free space (tail %d, head %d)", ErrCorrupt, p, tail, head))
		}
		inRun = true
	}
	return faults
}
