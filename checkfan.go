package shmbus

import (
	"fmt"

	"github.com/shmbus/shmbus/layout"
)

// checkFanOut returns the faults of a fan-out bus's subscription table and
// lane clean words: states, flags, names and holders of the entries, and
// every cursor against its lane's head and tail (blocking cursors may not
// be behind the head, no cursor ahead of the tail).
func checkFanOut(seg []byte, g *layout.Geometry) []error {
	var faults []error
	fault := func(format string, args ...any) {
		faults = append(faults, fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
	}
	type lanePos struct{ head, tail uint64 }
	lanes := make([]lanePos, len(g.Lanes))
	for i, e := range g.Lanes {
		c := e.CtrlOff
		lp := lanePos{layout.Word64(seg, c+layout.CtrlHead).Load(), layout.Word64(seg, c+layout.CtrlTail).Load()}
		lanes[i] = lp
		cleaner := layout.Word32(seg, c+layout.CtrlCleaner).Load()
		if cleaner > uint32(g.PeerSlots) {
			fault("lane %d: clean lock word %d, bus has %d peer slots", i, cleaner, g.PeerSlots)
		}
		r := layout.Word64(seg, c+layout.CtrlReleasing).Load()
		if r%layout.RecordAlign != 0 || r-lp.head > lp.tail-lp.head {
			fault("lane %d: releasing position %d outside [head %d, tail %d]", i, r, lp.head, lp.tail)
		}
		if seq := layout.Word64(seg, c+layout.CtrlCleanSeq).Load(); cleaner == 0 && (seq&1 != 0 || r != lp.head) {
			fault("lane %d: a clean half done (sequence %d, releasing %d, head %d) and nobody cleaning", i, seq, r, lp.head)
		}
	}
	for i := 0; i < g.Subscriptions; i++ {
		off := g.SubOff(i)
		st := layout.Word32(seg, off+layout.SubState).Load()
		if st > layout.SubRemoving {
			fault("subscription entry %d: state %d", i, st)
			continue
		}
		if st != layout.SubActive {
			continue
		}
		flags := layout.Word32(seg, off+layout.SubFlags).Load()
		if !layout.KnownSubFlags(flags) {
			fault("subscription entry %d: flags %#x", i, flags)
		}
		n := layout.Word32(seg, off+layout.SubNameLen).Load()
		name := ""
		if n > layout.SubNameMax {
			fault("subscription entry %d: name of %d bytes", i, n)
		} else {
			name = string(seg[off+layout.SubName : off+layout.SubName+uint64(n)])
			if err := validSubName(name); err != nil {
				fault("subscription entry %d: %v", i, err)
				name = fmt.Sprintf("#%d", i)
			}
		}
		if h := layout.Word32(seg, off+layout.SubHolder).Load(); h > uint32(g.PeerSlots) {
			fault("subscription %q: holder word %d, bus has %d peer slots", name, h, g.PeerSlots)
		}
		for li, lp := range lanes {
			cur := layout.Word64(seg, g.SubLaneOff(i, li)+layout.SubCursor).Load()
			switch {
			case cur%layout.RecordAlign != 0:
				fault("subscription %q: lane %d cursor %d not 8-byte aligned", name, li, cur)
			case ahead(cur, lp.tail):
				fault("subscription %q: lane %d cursor %d past the tail %d", name, li, cur, lp.tail)
			case flags&layout.SubLossy == 0 && ahead(lp.head, cur):
				fault("subscription %q: blocking, lane %d cursor %d behind the head %d", name, li, cur, lp.head)
			}
		}
	}
	return faults
}
