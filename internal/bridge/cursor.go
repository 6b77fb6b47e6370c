package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/shmbus/shmbus"
)

// The cursor of a stream->bus route: its state file (DIR/shmbus-bridge.
// DURABLE.state), 64 bytes written whole by one pwrite before each message
// is published on the bus:
//
//	0   u64 floor      stream sequence of the last message known to be on the bus
//	8   u64 seq        the message being sent (0: none)
//	16  u64 prio       its priority
//	24  u64 pos        the lane position of its record (Producer.SendNoted)
//	32  u64 recovered  the lane's recovered counter when it was claimed
//	40  u64 slot       the bridge's producer slot
//	48  u64 created    the bus's creation time (tells a bus made again)
//	56  u32 crc        CRC-32C of bytes 0..55
//	60  u32 zero
//
// A bridge that dies after the write, before or after the publish, finds
// on its restart what became of pos (Bus.PositionAt) and so whether seq
// reached the bus. Little endian. An 8-byte file is the earlier format:
// the floor alone.

const cursorSize = 64

type cursor struct {
	floor          uint64
	seq            uint64 // 0: nothing in flight
	prio           int
	pos, recovered uint64
	slot           int
	created        uint64
}

// errCursor is a state file that does not parse.
var errCursor = errors.New("bad state file")

func (c cursor) encode() [cursorSize]byte {
	var b [cursorSize]byte
	le := binary.LittleEndian
	le.PutUint64(b[0:], c.floor)
	le.PutUint64(b[8:], c.seq)
	le.PutUint64(b[16:], uint64(c.prio))
	le.PutUint64(b[24:], c.pos)
	le.PutUint64(b[32:], c.recovered)
	le.PutUint64(b[40:], uint64(c.slot))
	le.PutUint64(b[48:], c.created)
	le.PutUint32(b[56:], crc32.Checksum(b[:56], castagnoli))
	return b
}

// parseCursor reads a state file's bytes. Nothing in them is trusted: a
// wrong size or checksum, or a priority or slot out of range, is an error
// wrapping errCursor.
func parseCursor(b []byte) (cursor, error) {
	le := binary.LittleEndian
	switch {
	case len(b) == 0:
		return cursor{}, nil
	case len(b) == 8:
		return cursor{floor: le.Uint64(b)}, nil
	case len(b) != cursorSize:
		return cursor{}, fmt.Errorf("%w: %d bytes", errCursor, len(b))
	}
	if got, want := crc32.Checksum(b[:56], castagnoli), le.Uint32(b[56:]); got != want || le.Uint32(b[60:]) != 0 {
		return cursor{}, fmt.Errorf("%w: checksum %08x, file says %08x", errCursor, got, want)
	}
	c := cursor{floor: le.Uint64(b[0:]), seq: le.Uint64(b[8:]), pos: le.Uint64(b[24:]),
		recovered: le.Uint64(b[32:]), created: le.Uint64(b[48:])}
	prio, slot := le.Uint64(b[16:]), le.Uint64(b[40:])
	if prio > 255 || slot > 1<<16 {
		return cursor{}, fmt.Errorf("%w: priority %d, slot %d", errCursor, prio, slot)
	}
	c.prio, c.slot = int(prio), int(slot)
	return c, nil
}

// landed says whether the message c.seq, in flight when the cursor was
// written, reached bus b; sure is false when the bus cannot tell (then
// the route sends it again: at least once).
func (c cursor) landed(b *shmbus.Bus) (landed, sure bool, why string) {
	if c.created != uint64(b.Config().Created.UnixNano()) {
		return false, true, "the bus was made again since"
	}
	if c.prio >= b.Priorities() {
		return false, false, fmt.Sprintf("priority %d is not one of the bus's", c.prio)
	}
	at, err := b.PositionAt(c.prio, c.pos)
	if err != nil {
		return false, false, err.Error()
	}
	switch at.State {
	case shmbus.PositionPublished:
		if int(at.Producer) != c.slot {
			return false, false, fmt.Sprintf("position %d holds a message of slot %d, not %d", c.pos, at.Producer, c.slot)
		}
		return true, true, "published, not yet consumed"
	case shmbus.PositionUnpublished:
		return false, true, "claimed, never published"
	case shmbus.PositionPadding:
		return false, true, "claimed, never published (recovered)"
	}
	// Released: published and consumed, or recovered as padding, which
	// adds to the counter before the consumer passes it.
	if at.Recovered == c.recovered {
		return true, true, "published and consumed"
	}
	return false, false, fmt.Sprintf("consumed or recovered: %d claims of the lane were recovered since", at.Recovered-c.recovered)
}
