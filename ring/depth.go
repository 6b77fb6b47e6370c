package ring

import "github.com/shmbus/shmbus/layout"

// Depth is what lies in a lane between its release position (head) and
// its claim position (tail), found by walking the records there: unlike
// the message counters, which peers add to the segment in batches (and a
// killed peer's last batch never), it cannot drift.
type Depth struct {
	Bytes    uint64 // ring bytes between head and tail: exact
	Messages uint64 // complete messages published (whole records and last fragments)
	// Unfinished counts messages whose fragments are in the lane but whose
	// last fragment is not (yet): a large message being sent, or one whose
	// producer gave up or died (the consumer drops it).
	Unfinished int
	// Unpublished is the ring bytes from the first claimed-but-unpublished
	// record to the tail: producers writing, or dead ones not yet
	// recovered. The walk cannot see past it, so Messages counts only what
	// lies before.
	Unpublished uint64
	// Unreadable is set when the walk met a record it could not decode (the
	// lane moved under it, or is damaged); the counts are of what came
	// before.
	Unreadable bool
}

// Depth walks the lane's records from head to tail. Any process attached
// to the segment may call it, while the consumer and producers work: the
// walk only loads words and checks every length against the lane, so a
// record released or written under it ends the walk (Unreadable) instead
// of misleading it. On a quiet lane it is exact.
func (l *Lane) Depth() Depth {
	// A release while the walk runs zeroes records behind it: the walk
	// would stop at them. Walk again from the new head, a few times.
	var d Depth
	for range 4 {
		head := l.head.Load()
		d = l.walk(head)
		if l.head.Load() == head {
			break
		}
	}
	return d
}

// walk counts the records from head to the tail.
func (l *Lane) walk(head uint64) Depth {
	tail := l.tail.Load()
	d := Depth{Bytes: tail - head}
	if tail-head > l.capacity || head%layout.RecordAlign != 0 {
		d.Unreadable = true
		return d
	}
	open := map[uint16]bool{} // producers with a message begun and not ended
	for pos := head; pos != tail; {
		off := pos & l.mask
		n := l.lengthWord(off).Load() // pairs with the producer's Store in Commit
		if n == 0 {
			d.Unpublished = tail - pos
			break
		}
		r := layout.RecordFromWords(n, l.meta(off))
		span, err := r.Check(off, l.capacity, l.limit)
		if err != nil || span > tail-pos {
			d.Unreadable = true
			break
		}
		pos += span
		if r.Type == layout.TypePadding {
			continue
		}
		// Fragments of different producers interleave in a multi-producer
		// lane; each producer's are in order.
		if r.Flags&layout.FragEnd != 0 {
			d.Messages++
			delete(open, r.Producer)
		} else {
			open[r.Producer] = true
		}
	}
	d.Unfinished = len(open)
	return d
}
