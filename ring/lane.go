package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/shmbus/shmbus/layout"
)

// Errors returned by rings. Corruption wraps layout.ErrCorrupt.
var (
	ErrFull     = errors.New("lane full")
	ErrEmpty    = errors.New("lane empty")
	ErrTooLarge = errors.New("record too large for lane")
	ErrPending  = errors.New("reservation pending")
	ErrCorrupt  = layout.ErrCorrupt
)

func yield() { runtime.Gosched() }

// Lane is one ring of a segment: views of its control block and data
// region. A Lane is shared by the producers and the consumer of a process;
// it holds no process-local state.
type Lane struct {
	index    int
	data     []byte
	capacity uint64
	mask     uint64
	limit    uint64 // largest record, header included
	multi    bool

	tail      *atomic.Uint64 // claim position; producers write
	head      *atomic.Uint64 // release position; the consumer writes
	spscOwner *atomic.Uint32

	msgsIn, bytesIn, fullEvents        *atomic.Uint64
	msgsOut, bytesOut, recovered       *atomic.Uint64
	releasing                          *atomic.Uint64 // the head a release in progress moves to
	releaseRaw                         []byte         // the same word, for the consumer's plain store
	spaceSleeps, spaceWakes, dataWakes *atomic.Uint64
	space                              *Doorbell

	fan *SubTable // fan-out buses: the table whose cleaners free space (clean.go)
}

// NewLane returns the views of lane i of the segment seg laid out as g.
// space is the sleeper for the lane's space doorbell.
func NewLane(seg []byte, g *layout.Geometry, i int, space Sleeper) *Lane {
	e := g.Lanes[i]
	c := e.CtrlOff
	l := &Lane{
		index:       i,
		data:        seg[e.DataOff : e.DataOff+e.Capacity : e.DataOff+e.Capacity],
		capacity:    e.Capacity,
		mask:        e.Capacity - 1,
		limit:       uint64(e.RecordLimit),
		multi:       g.Flags&layout.FlagMultiProducer != 0,
		tail:        layout.Word64(seg, c+layout.CtrlTail),
		head:        layout.Word64(seg, c+layout.CtrlHead),
		spscOwner:   layout.Word32(seg, c+layout.CtrlSPSCOwner),
		msgsIn:      layout.Word64(seg, c+layout.CtrlMsgsIn),
		bytesIn:     layout.Word64(seg, c+layout.CtrlBytesIn),
		fullEvents:  layout.Word64(seg, c+layout.CtrlFullEvents),
		msgsOut:     layout.Word64(seg, c+layout.CtrlMsgsOut),
		bytesOut:    layout.Word64(seg, c+layout.CtrlBytesOut),
		recovered:   layout.Word64(seg, c+layout.CtrlRecovered),
		releasing:   layout.Word64(seg, c+layout.CtrlReleasing),
		releaseRaw:  seg[c+layout.CtrlReleasing : c+layout.CtrlReleasing+8 : c+layout.CtrlReleasing+8],
		spaceSleeps: layout.Word64(seg, c+layout.CtrlSpaceSleeps),
		spaceWakes:  layout.Word64(seg, c+layout.CtrlSpaceWakes),
		dataWakes:   layout.Word64(seg, c+layout.CtrlDataWakes),
	}
	l.space = NewDoorbell(seg, c+layout.CtrlSpaceSeq, space, l.spaceSleeps, l.spaceWakes)
	return l
}

// InitLane sets the positions of lane i of a segment being created. start
// must be a multiple of 8; tests start near 2^32 and 2^64 to prove that
// positions are compared only by difference.
func InitLane(seg []byte, g *layout.Geometry, i int, start uint64) {
	c := g.Lanes[i].CtrlOff
	layout.Word64(seg, c+layout.CtrlTail).Store(start)
	layout.Word64(seg, c+layout.CtrlHead).Store(start)
	layout.Word64(seg, c+layout.CtrlReleasing).Store(start)
}

// Index is the lane's index in the segment.
func (l *Lane) Index() int { return l.index }

// Capacity is the ring's size in bytes.
func (l *Lane) Capacity() int { return int(l.capacity) }

// MaxPayload is the largest payload one record may carry.
func (l *Lane) MaxPayload() int { return int(l.limit) - layout.RecordHeader }

// Multi reports whether the lane accepts several producers.
func (l *Lane) Multi() bool { return l.multi }

// SPSCOwner is the word naming the producer of a single-producer lane
// (peer slot index + 1, 0 = none).
func (l *Lane) SPSCOwner() *atomic.Uint32 { return l.spscOwner }

// Space is the doorbell producers sleep on when the lane is full.
func (l *Lane) Space() *Doorbell { return l.space }

// Stats is a snapshot of a lane's counters and positions.
type Stats struct {
	Head, Tail        uint64
	MsgsIn, BytesIn   uint64
	MsgsOut, BytesOut uint64
	FullEvents        uint64
	Recovered         uint64
	SpaceSleeps       uint64
	SpaceWakes        uint64
	DataWakes         uint64
	SpaceSleepersNow  int
	Capacity          uint64
}

// Used is the number of ring bytes between head and tail (claimed or
// published and not yet released).
func (s Stats) Used() uint64 { return s.Tail - s.Head }

// Stats reads the lane's counters. They are updated once per batch, so a
// snapshot taken while traffic flows is approximate.
func (l *Lane) Stats() Stats {
	return Stats{
		Head:             l.head.Load(),
		Tail:             l.tail.Load(),
		MsgsIn:           l.msgsIn.Load(),
		BytesIn:          l.bytesIn.Load(),
		MsgsOut:          l.msgsOut.Load(),
		BytesOut:         l.bytesOut.Load(),
		FullEvents:       l.fullEvents.Load(),
		Recovered:        l.recovered.Load(),
		SpaceSleeps:      l.spaceSleeps.Load(),
		SpaceWakes:       l.spaceWakes.Load(),
		DataWakes:        l.dataWakes.Load(),
		SpaceSleepersNow: l.space.Sleepers(),
		Capacity:         l.capacity,
	}
}

// lengthWord is the commit word of the record header at ring offset off.
func (l *Lane) lengthWord(off uint64) *atomic.Uint32 {
	return layout.Word32At(l.data, off)
}

// meta reads the second word of the record header at off. A plain read: it
// is only read after the length word was loaded non-zero, which orders it.
func (l *Lane) meta(off uint64) uint32 { return binary.LittleEndian.Uint32(l.data[off+4:]) }

// setMeta writes the second header word. A plain store: nobody reads it
// before the length word that publishes the record is stored after it.
func (l *Lane) setMeta(off uint64, v uint32) { binary.LittleEndian.PutUint32(l.data[off+4:], v) }

// setLengthRelaxed writes a length word with a plain store, for records of a
// batch published by a later atomic store (see Producer.Commit).
func (l *Lane) setLengthRelaxed(off uint64, v uint32) { binary.LittleEndian.PutUint32(l.data[off:], v) }

// errCorrupt builds an ErrCorrupt with the lane's name.
func (l *Lane) errCorrupt(format string, args ...any) error {
	return fmt.Errorf("lane %d: %w: %s", l.index, ErrCorrupt, fmt.Sprintf(format, args...))
}

// Claim is one producer's claim record for one lane, in its peer slot.
// Others read it with atomic loads; its owner writes it with plain stores
// (see Producer.claimSpan for what orders them).
type Claim struct {
	Pos, End, OK *atomic.Uint64
	raw          []byte
}

// ClaimAt is the claim record of peer slot slot for lane lane.
func ClaimAt(seg []byte, g *layout.Geometry, slot, lane int) Claim {
	off := g.ClaimOff(slot, lane)
	return Claim{
		Pos: layout.Word64(seg, off+layout.ClaimPos),
		End: layout.Word64(seg, off+layout.ClaimEnd),
		OK:  layout.Word64(seg, off+layout.ClaimOK),
		raw: seg[off : off+layout.ClaimSize : off+layout.ClaimSize],
	}
}

// set writes the claim record's words with plain stores.
func (c Claim) set(pos, end uint64) {
	binary.LittleEndian.PutUint64(c.raw[layout.ClaimPos:], pos)
	binary.LittleEndian.PutUint64(c.raw[layout.ClaimEnd:], end)
}

func (c Claim) confirm(pos uint64) { binary.LittleEndian.PutUint64(c.raw[layout.ClaimOK:], pos+1) }

// restore writes back an earlier claim's Pos and End, End first.
func (c Claim) restore(pos, end uint64) {
	binary.LittleEndian.PutUint64(c.raw[layout.ClaimEnd:], end)
	binary.LittleEndian.PutUint64(c.raw[layout.ClaimPos:], pos)
}

// Reset clears a claim record; only for a slot that has just been taken.
func (c Claim) Reset() {
	c.Pos.Store(0)
	c.End.Store(0)
	c.OK.Store(0)
}
