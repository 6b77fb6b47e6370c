package ring

import "github.com/shmbus/shmbus/layout"

// Waiting counts the messages published in the lane and not yet released:
// the records between the head and the first unpublished one that end a
// message (a whole message, or the last fragment of a large one). It reads
// the ring without taking part in it, so any process may call it; while
// producers and the consumer work the count is a snapshot that may be off
// by the records they move meanwhile, and a record that fails its checks
// ends the count (Check reports such faults).
func (l *Lane) Waiting() uint64 {
	head, tail := l.head.Load(), l.tail.Load()
	if tail-head > l.capacity {
		return 0 // positions caught mid-update or damaged: nothing to walk
	}
	var n uint64
	for pos := head; pos != tail; {
		off := pos & l.mask
		length := l.lengthWord(off).Load() // pairs with the producer's Store in Commit
		if length == 0 {
			break // claimed and not yet published, or released meanwhile
		}
		r := layout.RecordFromWords(length, l.meta(off))
		span, err := r.Check(off, l.capacity, l.limit)
		if err != nil || span > tail-pos {
			break
		}
		if r.Type == layout.TypeData && r.Flags&layout.FragEnd != 0 {
			n++
		}
		pos += span
	}
	return n
}
