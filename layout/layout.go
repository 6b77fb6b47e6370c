// Package layout defines version 2 of the shmbus segment format: where every
// field lives, how big each part is, and how to encode, decode and validate
// the parts that describe the rest.
//
// It is pure: no system calls, no mapping. Everything a peer in another
// language needs is here and in docs/layout.md, which is written from this
// file. All fields are little-endian and fixed-width. A segment is:
//
//	[0, 4096)                 header page (Header, bus block, data doorbell,
//	                          bus statistics, lane table)
//	[4096, ...)               one control block per lane, CtrlSize bytes each
//	page-aligned              one data ring per lane, Capacity bytes each
//	page-aligned              peer table: PeerSlots slots of PeerSlotSize bytes
//	page-aligned              fan-out buses only: subscription table,
//	                          Subscriptions entries of SubEntrySize bytes
//	                          (total size rounded up to a page)
//
// The geometry is fully determined by the configuration fields of the header
// (see Plan); a reader recomputes it and rejects a segment whose lane table or
// sizes disagree, so no offset is ever taken from shared memory on trust.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Version is the format version this package reads and writes. Version 2
// added the subscription table of fan-out buses and the lane clean words.
const Version = 2

// Magic is the first eight bytes of every segment. The high-bit first byte
// and the trailing newline catch files mangled by text-mode transfers.
var Magic = [8]byte{0x89, 'S', 'H', 'M', 'B', 'U', 'S', '\n'}

// ReadyValue is stored in the ready word after everything else has been
// initialised; until then attachers must not use the segment.
const ReadyValue = 0x59444552 // "REDY" little-endian

// Sizes and alignments of the fixed parts.
const (
	PageSize       = 4096
	HeaderSize     = PageSize // the header occupies exactly one page
	CacheBlock     = 128      // false-sharing unit: two 64-byte lines (adjacent-line prefetch)
	CtrlSize       = 4 * CacheBlock
	LaneEntrySize  = 32
	PeerHeaderSize = CacheBlock
	ClaimSize      = 32
	RecordAlign    = 8
	RecordHeader   = 8 // bytes of header before every record's payload
)

// Limits of the configuration.
const (
	MaxLanes       = 64
	MinCapacity    = 1 << 10
	MaxCapacity    = 1 << 30
	MinRecordLimit = 64
	MaxPeerSlots   = 4096
	// MaxSubscriptions is the most subscription slots a fan-out bus has.
	MaxSubscriptions = 64
	// NoProducer marks a record not written by any peer slot (padding made by recovery).
	NoProducer = 0xFFFF
)

// Header field offsets (bytes from the start of the segment).
const (
	OffMagic        = 0x000 // [8]byte
	OffVersion      = 0x008 // u32
	OffHeaderSize   = 0x00C // u32
	OffTotalSize    = 0x010 // u64
	OffFlags        = 0x018 // u32
	OffWakeMode     = 0x01C // u32
	OffLaneCount    = 0x020 // u32
	OffPeerSlots    = 0x024 // u32
	OffMaxMessage   = 0x028 // u64
	OffLaneTable    = 0x030 // u32: offset of the lane table
	OffLaneEntry    = 0x034 // u32: LaneEntrySize
	OffCtrlSize     = 0x038 // u32: CtrlSize
	OffPeerSlotSize = 0x03C // u32
	OffPeerTable    = 0x040 // u64
	OffSemID        = 0x048 // i32: System V semaphore set id (sem mode), else -1
	OffSemCookie    = 0x04C // u32: value kept in the set's last semaphore (sem mode)
	OffCreatedNano  = 0x050 // i64: creation time, Unix nanoseconds
	OffCreatorPID   = 0x058 // u32
	OffCreatorStart = 0x060 // u64: creator's start time (clock ticks since boot)
	OffSubSlots     = 0x068 // u32: subscription slots; 0 = a queue bus (no table)
	OffSubEntrySize = 0x06C // u32: SubEntrySize(lanes), or 0 on a queue bus
	OffSubTable     = 0x070 // u64: offset of the subscription table, or 0
	OffReady        = 0x07C // u32: ReadyValue once initialised; stored last

	// Bus block: written rarely, read by every attacher.
	OffConsumer = 0x080 // u32: peer slot index + 1 of the consumer, 0 = none

	// Data doorbell: the consumer sleeps here; producers ring it. One
	// 64-bit word (see ring/doorbell.go): the low half is the sequence
	// and futex word, the high half the sleeper count (bits 0..30) and
	// the rung bit (bit 31).
	OffDataSeq     = 0x100 // u32: sequence, futex word
	OffDataWaiters = 0x104 // u32: sleepers and rung bit

	// Bus statistics.
	OffConsumerSleeps = 0x180 // u64: times the consumer went to sleep
	OffConsumerWakes  = 0x188 // u64: rings of the data doorbell that found the consumer asleep
	OffDropped        = 0x190 // u64: messages the consumer dropped because it could not hold them

	LaneTableOffset = 0x200
)

// Lane control block offsets (bytes from the start of the block). Each group
// is on its own CacheBlock so producers and the consumer do not share lines.
const (
	// Producer block.
	CtrlTail       = 0x000 // u64: claim position (end of space claimed by producers)
	CtrlSPSCOwner  = 0x008 // u32: SPSC lanes: slot index + 1 of the producer, 0 = none
	CtrlMsgsIn     = 0x010 // u64
	CtrlBytesIn    = 0x018 // u64 payload bytes
	CtrlFullEvents = 0x020 // u64: a producer found the lane full

	// Consumer block.
	CtrlHead      = 0x080 // u64: release position (end of space given back)
	CtrlMsgsOut   = 0x088 // u64
	CtrlBytesOut  = 0x090 // u64
	CtrlRecovered = 0x098 // u64: spans of dead producers turned into padding
	CtrlReleasing = 0x0A0 // u64: the head a release in progress moves to (see ring.Consumer.Release)

	// Clean words of fan-out buses (see ring/clean.go), in the consumer
	// block, which a fan-out bus has no consumer to write.
	CtrlCleaner       = 0x0A8 // u32: clean lock: peer slot index + 1 of the cleaner, 0 = free
	CtrlCleanSeq      = 0x0B0 // u64: seqlock of Releasing and ReleasingMsgs: odd while they change
	CtrlCleanedMsgs   = 0x0B8 // u64: messages begun in [start, head): exact, kept by cleaners
	CtrlReleasingMsgs = 0x0C0 // u64: messages begun in [start, releasing)

	// Space doorbell: producers blocked on a full lane sleep here (one
	// 64-bit word, laid out as the data doorbell).
	CtrlSpaceSeq     = 0x100 // u32: sequence, futex word
	CtrlSpaceWaiters = 0x104 // u32: sleepers and rung bit

	// Doorbell statistics.
	CtrlSpaceSleeps = 0x180 // u64: producer sleeps on this lane's space doorbell
	CtrlSpaceWakes  = 0x188 // u64: consumer rang the space doorbell
	CtrlDataWakes   = 0x190 // u64: producers of this lane rang the data doorbell
)

// Peer slot offsets (bytes from the start of a slot).
const (
	PeerOwner  = 0x00 // u64: pid<<32 | (start time & 0xffffffff); 0 = free; claimed by CAS
	PeerPID    = 0x08 // u32
	PeerRole   = 0x0C // u32: RoleProducer | RoleConsumer
	PeerStart  = 0x10 // u64: full start time
	PeerJoined = 0x18 // i64: Unix nanoseconds
	PeerClaims = PeerHeaderSize

	// Within a claim record (one per lane, at PeerClaims + lane*ClaimSize).
	ClaimPos = 0x00 // u64: start of the span being claimed
	ClaimEnd = 0x08 // u64: end of that span
	ClaimOK  = 0x10 // u64: ClaimPos+1 once the claim succeeded
)

// Peer roles.
const (
	RoleProducer   = 1 << 0
	RoleConsumer   = 1 << 1
	RoleSubscriber = 1 << 2
	// RoleLeft is set in the role word of a slot its owner gave back (the
	// role bits stay, for peer events); a slot freed by others after its
	// owner died keeps its role without it. Peers that clear the word to
	// 0 on leaving (the C client) are read as having left too.
	RoleLeft = 1 << 31
)

// Subscription table entries (fan-out buses). An entry is a header block
// of SubHeaderSize bytes, then SubLaneSize bytes per lane: the cursor and
// delivered count of that lane, written by the subscription's holder.
const (
	SubHeaderSize = CacheBlock
	SubLaneSize   = 16
	SubNameMax    = 64

	SubState     = 0x00 // u32: SubFree, SubCreating, SubActive, SubRemoving; changed by CAS
	SubFlags     = 0x04 // u32: SubLossy | SubDurable | SubEvents
	SubHolder    = 0x08 // u32: peer slot index + 1 of the holder, 0 = none
	SubGen       = 0x0C // u32: generation, bumped each time the entry is made
	SubHolderTag = 0x10 // u64: the holder's peer owner tag when it took hold
	SubCreated   = 0x18 // i64: Unix nanoseconds
	SubNameLen   = 0x20 // u32: bytes of SubName used
	SubName      = 0x40 // [SubNameMax]byte
	SubLanes     = SubHeaderSize

	// Within a lane's SubLaneSize bytes.
	SubCursor    = 0x00 // u64: read position: everything before it is released
	SubDelivered = 0x08 // u64: messages begun before the cursor (as CtrlCleanedMsgs counts)
)

// Subscription entry states.
const (
	SubFree     = 0
	SubCreating = 1 // being made: not yet visible to cleaners
	SubActive   = 2
	SubRemoving = 3 // being removed: ignored by cleaners, not yet reusable
)

// Subscription flags.
const (
	SubLossy   = 1 << 0 // not in the release minimum: overrun instead of blocking producers
	SubDurable = 1 << 1 // stays when its holder dies
	SubEvents  = 1 << 2 // its holder asked for peer lifecycle events
	knownSub   = SubLossy | SubDurable | SubEvents
)

// KnownSubFlags reports whether f has only defined subscription flags.
func KnownSubFlags(f uint32) bool { return f&^knownSub == 0 }

// SubEntrySize is the size of one subscription entry for lanes lanes.
func SubEntrySize(lanes int) uint64 {
	return alignUp(SubHeaderSize+uint64(lanes)*SubLaneSize, CacheBlock)
}

// Header flags.
const (
	FlagMultiProducer = 1 << 0 // lanes are MPSC; otherwise SPSC
	FlagFailFast      = 1 << 1 // a full lane fails sends instead of blocking
	knownFlags        = FlagMultiProducer | FlagFailFast
)

// WakeMode is how sleeping peers are woken.
type WakeMode uint32

const (
	WakeFutex WakeMode = 1
	WakeSem   WakeMode = 2
)

func (m WakeMode) String() string {
	switch m {
	case WakeFutex:
		return "futex"
	case WakeSem:
		return "sem"
	}
	return fmt.Sprintf("wake(%d)", uint32(m))
}

// Errors. Every decode or validation failure wraps ErrCorrupt, ErrVersion or
// ErrNotReady so callers can tell them apart with errors.Is.
var (
	ErrCorrupt  = errors.New("segment corrupt")
	ErrVersion  = errors.New("unsupported segment version")
	ErrNotReady = errors.New("segment not initialised")
	ErrConfig   = errors.New("invalid configuration")
)

// Config is what a creator chooses; everything else is derived from it.
type Config struct {
	Lanes        int // priority levels, 1..MaxLanes
	LaneCapacity int // bytes per lane ring, power of two in [MinCapacity, MaxCapacity]
	RecordLimit  int // largest record (header + payload) a lane accepts; 0 = LaneCapacity/8
	PeerSlots    int // 1..MaxPeerSlots
	// Subscriptions is the number of subscription slots of a fan-out bus,
	// 1..MaxSubscriptions; 0 is a queue bus.
	Subscriptions int
	MaxMessage    uint64
	Flags         uint32
	WakeMode      WakeMode
}

// LaneEntry is one row of the lane table.
type LaneEntry struct {
	CtrlOff     uint64
	DataOff     uint64
	Capacity    uint64
	RecordLimit uint32
	Flags       uint32 // reserved, zero in v1
}

// Geometry is where everything is, computed from a Config by Plan.
type Geometry struct {
	Config
	Lanes        []LaneEntry
	PeerTableOff uint64
	PeerSlotSize uint64
	SubTableOff  uint64 // 0 on a queue bus
	SubEntrySize uint64 // 0 on a queue bus
	TotalSize    uint64
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// AlignRecord is the number of ring bytes a record of length n occupies.
func AlignRecord(n uint64) uint64 { return alignUp(n, RecordAlign) }

// PeerSlotSize is the size of one peer slot for a segment with lanes lanes.
func PeerSlotSize(lanes int) uint64 {
	return alignUp(PeerHeaderSize+uint64(lanes)*ClaimSize, CacheBlock)
}

// Normalize fills defaults into c and checks it.
func (c Config) Normalize() (Config, error) {
	if c.RecordLimit == 0 {
		c.RecordLimit = c.LaneCapacity / 8
	}
	if c.Lanes < 1 || c.Lanes > MaxLanes {
		return c, fmt.Errorf("%w: %d lanes, want 1..%d", ErrConfig, c.Lanes, MaxLanes)
	}
	if c.LaneCapacity < MinCapacity || c.LaneCapacity > MaxCapacity || bits.OnesCount(uint(c.LaneCapacity)) != 1 {
		return c, fmt.Errorf("%w: lane capacity %d, want a power of two in [%d, %d]", ErrConfig, c.LaneCapacity, MinCapacity, MaxCapacity)
	}
	if c.RecordLimit < MinRecordLimit || c.RecordLimit > c.LaneCapacity/2 || c.RecordLimit%RecordAlign != 0 {
		return c, fmt.Errorf("%w: record limit %d, want a multiple of 8 in [%d, %d]", ErrConfig, c.RecordLimit, MinRecordLimit, c.LaneCapacity/2)
	}
	if c.PeerSlots < 1 || c.PeerSlots > MaxPeerSlots {
		return c, fmt.Errorf("%w: %d peer slots, want 1..%d", ErrConfig, c.PeerSlots, MaxPeerSlots)
	}
	if c.Subscriptions < 0 || c.Subscriptions > MaxSubscriptions {
		return c, fmt.Errorf("%w: %d subscriptions, want 0 (a queue) or 1..%d", ErrConfig, c.Subscriptions, MaxSubscriptions)
	}
	if c.MaxMessage < 1 {
		return c, fmt.Errorf("%w: max message %d", ErrConfig, c.MaxMessage)
	}
	if c.Flags&^knownFlags != 0 {
		return c, fmt.Errorf("%w: unknown flags %#x", ErrConfig, c.Flags&^knownFlags)
	}
	if c.WakeMode != WakeFutex && c.WakeMode != WakeSem {
		return c, fmt.Errorf("%w: wake mode %d", ErrConfig, c.WakeMode)
	}
	return c, nil
}

// Plan lays a segment out for c. It is the only placement rule: control
// blocks follow the header back to back, each data ring starts on a page, the
// peer table starts on a page after the last ring, the subscription table
// (fan-out buses only) on the page after the peer table, and the total is a
// whole number of pages.
func Plan(c Config) (Geometry, error) {
	c, err := c.Normalize()
	if err != nil {
		return Geometry{}, err
	}
	g := Geometry{Config: c, Lanes: make([]LaneEntry, c.Lanes)}
	off := alignUp(HeaderSize+uint64(c.Lanes)*CtrlSize, PageSize)
	for i := range g.Lanes {
		g.Lanes[i] = LaneEntry{
			CtrlOff:     HeaderSize + uint64(i)*CtrlSize,
			DataOff:     off,
			Capacity:    uint64(c.LaneCapacity),
			RecordLimit: uint32(c.RecordLimit),
		}
		off = alignUp(off+uint64(c.LaneCapacity), PageSize)
	}
	g.PeerTableOff = off
	g.PeerSlotSize = PeerSlotSize(c.Lanes)
	g.TotalSize = alignUp(off+uint64(c.PeerSlots)*g.PeerSlotSize, PageSize)
	if c.Subscriptions > 0 {
		g.SubTableOff = g.TotalSize
		g.SubEntrySize = SubEntrySize(c.Lanes)
		g.TotalSize = alignUp(g.SubTableOff+uint64(c.Subscriptions)*g.SubEntrySize, PageSize)
	}
	return g, nil
}

// SubOff is the offset of subscription entry i.
func (g *Geometry) SubOff(i int) uint64 { return g.SubTableOff + uint64(i)*g.SubEntrySize }

// SubLaneOff is the offset of subscription entry i's words for lane l.
func (g *Geometry) SubLaneOff(i, l int) uint64 {
	return g.SubOff(i) + SubLanes + uint64(l)*SubLaneSize
}

// PeerOff is the offset of peer slot i.
func (g *Geometry) PeerOff(i int) uint64 { return g.PeerTableOff + uint64(i)*g.PeerSlotSize }

// ClaimOff is the offset of slot i's claim record for lane l.
func (g *Geometry) ClaimOff(i, l int) uint64 {
	return g.PeerOff(i) + PeerClaims + uint64(l)*ClaimSize
}

// Header is the decoded fixed part of the header page.
type Header struct {
	Version      uint32
	HeaderSize   uint32
	TotalSize    uint64
	Flags        uint32
	WakeMode     WakeMode
	LaneCount    uint32
	PeerSlots    uint32
	MaxMessage   uint64
	LaneTable    uint32
	LaneEntry    uint32
	CtrlSize     uint32
	PeerSlotSize uint32
	PeerTable    uint64
	SemID        int32
	SemCookie    uint32
	CreatedNano  int64
	CreatorPID   uint32
	CreatorStart uint64
	SubSlots     uint32
	SubEntrySize uint32
	SubTable     uint64
	Ready        uint32
	Lanes        []LaneEntry
}

var le = binary.LittleEndian

// NewHeader is the header describing g, not yet ready.
func NewHeader(g Geometry) Header {
	return Header{
		Version:      Version,
		HeaderSize:   HeaderSize,
		TotalSize:    g.TotalSize,
		Flags:        g.Flags,
		WakeMode:     g.WakeMode,
		LaneCount:    uint32(len(g.Lanes)),
		PeerSlots:    uint32(g.PeerSlots),
		MaxMessage:   g.MaxMessage,
		LaneTable:    LaneTableOffset,
		LaneEntry:    LaneEntrySize,
		CtrlSize:     CtrlSize,
		PeerSlotSize: uint32(g.PeerSlotSize),
		PeerTable:    g.PeerTableOff,
		SubSlots:     uint32(g.Subscriptions),
		SubEntrySize: uint32(g.SubEntrySize),
		SubTable:     g.SubTableOff,
		SemID:        -1,
		Lanes:        append([]LaneEntry(nil), g.Lanes...),
	}
}

// Encode writes h into the first HeaderSize bytes of b, ready word included
// (as h.Ready says). Creators encode with Ready = 0 and store ReadyValue
// separately, last, with an atomic store.
func (h *Header) Encode(b []byte) {
	_ = b[HeaderSize-1]
	copy(b[OffMagic:], Magic[:])
	le.PutUint32(b[OffVersion:], h.Version)
	le.PutUint32(b[OffHeaderSize:], h.HeaderSize)
	le.PutUint64(b[OffTotalSize:], h.TotalSize)
	le.PutUint32(b[OffFlags:], h.Flags)
	le.PutUint32(b[OffWakeMode:], uint32(h.WakeMode))
	le.PutUint32(b[OffLaneCount:], h.LaneCount)
	le.PutUint32(b[OffPeerSlots:], h.PeerSlots)
	le.PutUint64(b[OffMaxMessage:], h.MaxMessage)
	le.PutUint32(b[OffLaneTable:], h.LaneTable)
	le.PutUint32(b[OffLaneEntry:], h.LaneEntry)
	le.PutUint32(b[OffCtrlSize:], h.CtrlSize)
	le.PutUint32(b[OffPeerSlotSize:], h.PeerSlotSize)
	le.PutUint64(b[OffPeerTable:], h.PeerTable)
	le.PutUint32(b[OffSemID:], uint32(h.SemID))
	le.PutUint32(b[OffSemCookie:], h.SemCookie)
	le.PutUint64(b[OffCreatedNano:], uint64(h.CreatedNano))
	le.PutUint32(b[OffCreatorPID:], h.CreatorPID)
	le.PutUint64(b[OffCreatorStart:], h.CreatorStart)
	le.PutUint32(b[OffSubSlots:], h.SubSlots)
	le.PutUint32(b[OffSubEntrySize:], h.SubEntrySize)
	le.PutUint64(b[OffSubTable:], h.SubTable)
	le.PutUint32(b[OffReady:], h.Ready)
	for i, e := range h.Lanes {
		p := b[LaneTableOffset+i*LaneEntrySize:]
		le.PutUint64(p[0:], e.CtrlOff)
		le.PutUint64(p[8:], e.DataOff)
		le.PutUint64(p[16:], e.Capacity)
		le.PutUint32(p[24:], e.RecordLimit)
		le.PutUint32(p[28:], e.Flags)
	}
}

// DecodeHeader reads the header from b without judging it beyond what is
// needed to read it safely (b must hold the whole header page). Use Validate.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrCorrupt, len(b), HeaderSize)
	}
	if [8]byte(b[:8]) != Magic {
		return Header{}, fmt.Errorf("%w: bad magic % x", ErrCorrupt, b[:8])
	}
	h := Header{
		Version:      le.Uint32(b[OffVersion:]),
		HeaderSize:   le.Uint32(b[OffHeaderSize:]),
		TotalSize:    le.Uint64(b[OffTotalSize:]),
		Flags:        le.Uint32(b[OffFlags:]),
		WakeMode:     WakeMode(le.Uint32(b[OffWakeMode:])),
		LaneCount:    le.Uint32(b[OffLaneCount:]),
		PeerSlots:    le.Uint32(b[OffPeerSlots:]),
		MaxMessage:   le.Uint64(b[OffMaxMessage:]),
		LaneTable:    le.Uint32(b[OffLaneTable:]),
		LaneEntry:    le.Uint32(b[OffLaneEntry:]),
		CtrlSize:     le.Uint32(b[OffCtrlSize:]),
		PeerSlotSize: le.Uint32(b[OffPeerSlotSize:]),
		PeerTable:    le.Uint64(b[OffPeerTable:]),
		SemID:        int32(le.Uint32(b[OffSemID:])),
		SemCookie:    le.Uint32(b[OffSemCookie:]),
		CreatedNano:  int64(le.Uint64(b[OffCreatedNano:])),
		CreatorPID:   le.Uint32(b[OffCreatorPID:]),
		CreatorStart: le.Uint64(b[OffCreatorStart:]),
		SubSlots:     le.Uint32(b[OffSubSlots:]),
		SubEntrySize: le.Uint32(b[OffSubEntrySize:]),
		SubTable:     le.Uint64(b[OffSubTable:]),
		Ready:        le.Uint32(b[OffReady:]),
	}
	if h.Version != Version {
		return h, fmt.Errorf("%w: version %d, this build reads %d", ErrVersion, h.Version, Version)
	}
	if h.LaneCount < 1 || h.LaneCount > MaxLanes {
		return h, fmt.Errorf("%w: lane count %d", ErrCorrupt, h.LaneCount)
	}
	h.Lanes = make([]LaneEntry, h.LaneCount)
	for i := range h.Lanes {
		p := b[LaneTableOffset+i*LaneEntrySize:]
		h.Lanes[i] = LaneEntry{
			CtrlOff:     le.Uint64(p[0:]),
			DataOff:     le.Uint64(p[8:]),
			Capacity:    le.Uint64(p[16:]),
			RecordLimit: le.Uint32(p[24:]),
			Flags:       le.Uint32(p[28:]),
		}
	}
	return h, nil
}

// Config is the creator's configuration recorded in h.
func (h *Header) Config() Config {
	c := Config{
		Lanes:      int(h.LaneCount),
		PeerSlots:  int(h.PeerSlots),
		MaxMessage: h.MaxMessage,
		// A count beyond the limit fails Plan; it must not wrap into range.
		Subscriptions: int(min(h.SubSlots, MaxSubscriptions+1)),
		Flags:         h.Flags,
		WakeMode:      h.WakeMode,
	}
	if len(h.Lanes) > 0 && h.Lanes[0].Capacity <= MaxCapacity {
		c.LaneCapacity = int(h.Lanes[0].Capacity)
		c.RecordLimit = int(h.Lanes[0].RecordLimit)
	}
	return c
}

// Validate checks h against the placement rule and against fileSize, the
// real size of the segment. It returns the geometry to use; every offset in
// it has been recomputed, not read. A segment whose ready word is not set
// yields ErrNotReady (the creator may still be initialising it).
func (h *Header) Validate(fileSize int64) (Geometry, error) {
	if h.Ready != ReadyValue {
		return Geometry{}, fmt.Errorf("%w: ready word %#x", ErrNotReady, h.Ready)
	}
	if h.HeaderSize != HeaderSize || h.LaneTable != LaneTableOffset || h.LaneEntry != LaneEntrySize || h.CtrlSize != CtrlSize {
		return Geometry{}, fmt.Errorf("%w: header size %d, lane table at %#x of %d-byte entries, control blocks of %d bytes",
			ErrCorrupt, h.HeaderSize, h.LaneTable, h.LaneEntry, h.CtrlSize)
	}
	g, err := Plan(h.Config())
	if err != nil {
		return Geometry{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(h.Lanes) != len(g.Lanes) {
		return Geometry{}, fmt.Errorf("%w: %d lane entries for %d lanes", ErrCorrupt, len(h.Lanes), len(g.Lanes))
	}
	for i, e := range h.Lanes {
		if e != g.Lanes[i] {
			return Geometry{}, fmt.Errorf("%w: lane %d entry %+v, expected %+v", ErrCorrupt, i, e, g.Lanes[i])
		}
	}
	if h.PeerTable != g.PeerTableOff || uint64(h.PeerSlotSize) != g.PeerSlotSize {
		return Geometry{}, fmt.Errorf("%w: peer table at %#x with %d-byte slots, expected %#x and %d",
			ErrCorrupt, h.PeerTable, h.PeerSlotSize, g.PeerTableOff, g.PeerSlotSize)
	}
	if h.SubTable != g.SubTableOff || uint64(h.SubEntrySize) != g.SubEntrySize {
		return Geometry{}, fmt.Errorf("%w: subscription table at %#x with %d-byte entries, expected %#x and %d",
			ErrCorrupt, h.SubTable, h.SubEntrySize, g.SubTableOff, g.SubEntrySize)
	}
	if h.TotalSize != g.TotalSize {
		return Geometry{}, fmt.Errorf("%w: total size %d, layout needs %d", ErrCorrupt, h.TotalSize, g.TotalSize)
	}
	if fileSize < 0 || uint64(fileSize) != h.TotalSize {
		return Geometry{}, fmt.Errorf("%w: file is %d bytes, header says %d", ErrCorrupt, fileSize, h.TotalSize)
	}
	if h.WakeMode == WakeSem && h.SemID < 0 {
		return Geometry{}, fmt.Errorf("%w: sem wake mode without a semaphore set", ErrCorrupt)
	}
	return g, nil
}

// Record types.
const (
	TypeData    = 1
	TypePadding = 2
)

// Record flags (fragment bits). A whole message is FragBegin|FragEnd; a
// larger one is a FragBegin record, records with neither flag, and a
// FragEnd record.
const (
	FragBegin   = 1 << 0
	FragEnd     = 1 << 1
	knownRecord = FragBegin | FragEnd
)

// Record is a decoded record header. Length counts the header and the
// payload but not the alignment padding after it; it is the commit word: a
// record is published when its Length, stored last with release semantics,
// becomes non-zero.
type Record struct {
	Length   uint32
	Type     uint8
	Flags    uint8
	Producer uint16
}

// Meta is the second word of the record header (type, flags, producer).
func (r Record) Meta() uint32 {
	return uint32(r.Type) | uint32(r.Flags)<<8 | uint32(r.Producer)<<16
}

// RecordFromWords builds a Record from the two little-endian header words.
func RecordFromWords(length, meta uint32) Record {
	return Record{Length: length, Type: uint8(meta), Flags: uint8(meta >> 8), Producer: uint16(meta >> 16)}
}

// Check validates a committed record found at ring offset off of a ring of
// capacity c with record limit limit. It returns the ring bytes the record
// spans.
func (r Record) Check(off, c, limit uint64) (uint64, error) {
	n := uint64(r.Length)
	span := AlignRecord(n)
	switch r.Type {
	case TypePadding:
		if n < RecordHeader || span > c-off || r.Flags != 0 || n != span {
			return 0, fmt.Errorf("%w: padding record of length %d at offset %d", ErrCorrupt, n, off)
		}
	case TypeData:
		if n < RecordHeader || n > limit || span > c-off || r.Flags&^knownRecord != 0 {
			return 0, fmt.Errorf("%w: data record of length %d flags %#x at offset %d (limit %d)", ErrCorrupt, n, r.Flags, off, limit)
		}
	default:
		return 0, fmt.Errorf("%w: record type %d at offset %d", ErrCorrupt, r.Type, off)
	}
	return span, nil
}
