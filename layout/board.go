package layout

// Board segments (format version 1 of boards).
//
// A board is a segment of its own, not a region of a bus: a header page,
// then Cells fixed-size cells, one per key. Its first eight bytes are
// BoardMagic, never Magic, so a board is never taken for a bus or a bus for
// a board. The header's first words sit where a bus header's do (magic,
// version, ready word), so that the same attach code can wait for a
// creator and tell the two apart. docs/layout.md ("Boards") describes every
// byte; this file is its source.
//
//	[0, 4096)       board header (BoardHeader, board revision, doorbell,
//	                statistics)
//	[4096, ...)     Cells cells of CellSize bytes each (a multiple of
//	                CacheBlock); the total is rounded up to a page
//
// A cell:
//
//	0x000 u32  state: CellFree or CellKeyed
//	0x004 u32  key length, 1..MaxKeyLen
//	0x008 u64  FNV-1a 64 of the key
//	0x010 u64  lock: owner tag of the writer holding the cell, 0 = none
//	0x018 u64  current: revision<<1 | copy index; 0 = never written
//	0x040 [256]key bytes
//	0x140      copy 0, then copy 1 (CopySize bytes each)
//
// A copy:
//
//	0x00 u64  sequence: odd while a writer fills the copy
//	0x08 u64  revision of the value in the copy
//	0x10 u32  value length, 0..MaxValue
//	0x14 u32  flags: CopyTombstone
//	0x20      value bytes (MaxValue, the copy padded to 64 bytes)

import (
	"fmt"
)

// BoardVersion is the board format version this package reads and writes.
const BoardVersion = 1

// BoardMagic is the first eight bytes of every board segment.
var BoardMagic = [8]byte{0x89, 'S', 'H', 'M', 'B', 'R', 'D', '\n'}

// Limits of a board's configuration.
const (
	MaxKeyLen     = 255
	MaxBoardCells = 1 << 20
	MaxBoardValue = 1 << 20
	MaxBoardSize  = 1 << 36
)

// Board header offsets. Magic, version, header size, total size and the
// ready word are where a bus header has them.
const (
	BoardOffMagic        = OffMagic      // [8]byte: BoardMagic
	BoardOffVersion      = OffVersion    // u32: BoardVersion
	BoardOffHeaderSize   = OffHeaderSize // u32: HeaderSize
	BoardOffTotalSize    = OffTotalSize  // u64
	BoardOffFlags        = 0x018         // u32: 0 in version 1
	BoardOffWakeMode     = 0x01C         // u32
	BoardOffCells        = 0x020         // u32: number of cells (keys)
	BoardOffMaxValue     = 0x024         // u32: largest value
	BoardOffCellSize     = 0x028         // u32
	BoardOffCopySize     = 0x02C         // u32
	BoardOffCellTable    = 0x030         // u64: offset of cell 0 (HeaderSize)
	BoardOffSemID        = 0x038         // i32: System V semaphore set (sem mode), else -1
	BoardOffSemCookie    = 0x03C         // u32: value of the set's last semaphore
	BoardOffCreatedNano  = 0x040         // i64
	BoardOffCreatorPID   = 0x048         // u32
	BoardOffCreatorStart = 0x050         // u64
	BoardOffReady        = OffReady      // u32: ReadyValue, stored last

	// The board revision: every write takes the next value, and the value
	// it took is the revision of what it wrote.
	BoardOffRevision = 0x080 // u64

	// The board's doorbell: watchers sleep here, writers ring it (one
	// 64-bit word laid out as a bus doorbell, see ring/doorbell.go).
	BoardOffBellSeq     = 0x100 // u32: sequence, futex word
	BoardOffBellWaiters = 0x104 // u32: sleepers and rung bit

	// Statistics.
	BoardOffConflicts  = 0x188 // u64: CompareAndPut calls refused (0x180 is reserved)
	BoardOffRecoveries = 0x190 // u64: cell locks taken over from dead writers
	BoardOffSleeps     = 0x198 // u64: watcher sleeps
	BoardOffWakes      = 0x1A0 // u64: rings that found watchers asleep
)

// Cell offsets (bytes from the start of a cell).
const (
	CellState   = 0x000
	CellKeyLen  = 0x004
	CellHash    = 0x008
	CellLock    = 0x010
	CellCurrent = 0x018
	CellKey     = 0x040
	CellCopies  = CellKey + MaxKeyLen + 1 // 0x140

	CellFree  = 0
	CellKeyed = 1
)

// Copy offsets (bytes from the start of a copy).
const (
	CopySeq    = 0x00
	CopyRev    = 0x08
	CopyLen    = 0x10
	CopyFlags  = 0x14
	CopyData   = 0x20
	CopyAlign  = 64
	CellAlign  = CacheBlock
	copyHeader = CopyData

	CopyTombstone = 1 << 0 // the key was deleted at this revision
	knownCopy     = CopyTombstone
)

// BoardConfig is what a board's creator chooses.
type BoardConfig struct {
	Cells    int // keys the board can hold, 1..MaxBoardCells
	MaxValue int // largest value, 0..MaxBoardValue
	WakeMode WakeMode
}

// BoardGeometry is where everything of a board is, computed by PlanBoard.
type BoardGeometry struct {
	BoardConfig
	CellSize  uint64
	CopySize  uint64
	TotalSize uint64
}

// PlanBoard lays a board out for c: cells follow the header page back to
// back, each copy holds a header and MaxValue bytes rounded up to 64, each
// cell is a multiple of 128 bytes, the total a whole number of pages.
func PlanBoard(c BoardConfig) (BoardGeometry, error) {
	if c.Cells < 1 || c.Cells > MaxBoardCells {
		return BoardGeometry{}, fmt.Errorf("%w: %d keys, want 1..%d", ErrConfig, c.Cells, MaxBoardCells)
	}
	if c.MaxValue < 0 || c.MaxValue > MaxBoardValue {
		return BoardGeometry{}, fmt.Errorf("%w: largest value %d, want 0..%d", ErrConfig, c.MaxValue, MaxBoardValue)
	}
	if c.WakeMode != WakeFutex && c.WakeMode != WakeSem {
		return BoardGeometry{}, fmt.Errorf("%w: wake mode %d", ErrConfig, c.WakeMode)
	}
	g := BoardGeometry{BoardConfig: c}
	g.CopySize = alignUp(copyHeader+uint64(c.MaxValue), CopyAlign)
	g.CellSize = alignUp(CellCopies+2*g.CopySize, CellAlign)
	g.TotalSize = alignUp(HeaderSize+uint64(c.Cells)*g.CellSize, PageSize)
	if g.TotalSize > MaxBoardSize {
		return BoardGeometry{}, fmt.Errorf("%w: %d keys of up to %d bytes need %d bytes, more than %d", ErrConfig, c.Cells, c.MaxValue, g.TotalSize, uint64(MaxBoardSize))
	}
	return g, nil
}

// CellOff is the offset of cell i.
func (g *BoardGeometry) CellOff(i int) uint64 { return HeaderSize + uint64(i)*g.CellSize }

// CopyOff is the offset of copy c (0 or 1) of cell i.
func (g *BoardGeometry) CopyOff(i, c int) uint64 {
	return g.CellOff(i) + CellCopies + uint64(c)*g.CopySize
}

// BoardHeader is the decoded fixed part of a board's header page.
type BoardHeader struct {
	Version      uint32
	HeaderSize   uint32
	TotalSize    uint64
	Flags        uint32
	WakeMode     WakeMode
	Cells        uint32
	MaxValue     uint32
	CellSize     uint32
	CopySize     uint32
	CellTable    uint64
	SemID        int32
	SemCookie    uint32
	CreatedNano  int64
	CreatorPID   uint32
	CreatorStart uint64
	Ready        uint32
}

// NewBoardHeader is the header describing g, not yet ready.
func NewBoardHeader(g BoardGeometry) BoardHeader {
	return BoardHeader{
		Version:    BoardVersion,
		HeaderSize: HeaderSize,
		TotalSize:  g.TotalSize,
		WakeMode:   g.WakeMode,
		Cells:      uint32(g.Cells),
		MaxValue:   uint32(g.MaxValue),
		CellSize:   uint32(g.CellSize),
		CopySize:   uint32(g.CopySize),
		CellTable:  HeaderSize,
		SemID:      -1,
	}
}

// Encode writes h into the first HeaderSize bytes of b, ready word
// included (creators encode with Ready = 0 and store ReadyValue last).
func (h *BoardHeader) Encode(b []byte) {
	_ = b[HeaderSize-1]
	copy(b[BoardOffMagic:], BoardMagic[:])
	le.PutUint32(b[BoardOffVersion:], h.Version)
	le.PutUint32(b[BoardOffHeaderSize:], h.HeaderSize)
	le.PutUint64(b[BoardOffTotalSize:], h.TotalSize)
	le.PutUint32(b[BoardOffFlags:], h.Flags)
	le.PutUint32(b[BoardOffWakeMode:], uint32(h.WakeMode))
	le.PutUint32(b[BoardOffCells:], h.Cells)
	le.PutUint32(b[BoardOffMaxValue:], h.MaxValue)
	le.PutUint32(b[BoardOffCellSize:], h.CellSize)
	le.PutUint32(b[BoardOffCopySize:], h.CopySize)
	le.PutUint64(b[BoardOffCellTable:], h.CellTable)
	le.PutUint32(b[BoardOffSemID:], uint32(h.SemID))
	le.PutUint32(b[BoardOffSemCookie:], h.SemCookie)
	le.PutUint64(b[BoardOffCreatedNano:], uint64(h.CreatedNano))
	le.PutUint32(b[BoardOffCreatorPID:], h.CreatorPID)
	le.PutUint64(b[BoardOffCreatorStart:], h.CreatorStart)
	le.PutUint32(b[BoardOffReady:], h.Ready)
}

// DecodeBoardHeader reads a board header from b (the whole header page)
// without judging it beyond its magic and version. Use Validate.
func DecodeBoardHeader(b []byte) (BoardHeader, error) {
	if len(b) < HeaderSize {
		return BoardHeader{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrCorrupt, len(b), HeaderSize)
	}
	if m := [8]byte(b[:8]); m != BoardMagic {
		if m == Magic {
			return BoardHeader{}, fmt.Errorf("%w: a bus, not a board", ErrCorrupt)
		}
		return BoardHeader{}, fmt.Errorf("%w: bad magic % x", ErrCorrupt, b[:8])
	}
	h := BoardHeader{
		Version:      le.Uint32(b[BoardOffVersion:]),
		HeaderSize:   le.Uint32(b[BoardOffHeaderSize:]),
		TotalSize:    le.Uint64(b[BoardOffTotalSize:]),
		Flags:        le.Uint32(b[BoardOffFlags:]),
		WakeMode:     WakeMode(le.Uint32(b[BoardOffWakeMode:])),
		Cells:        le.Uint32(b[BoardOffCells:]),
		MaxValue:     le.Uint32(b[BoardOffMaxValue:]),
		CellSize:     le.Uint32(b[BoardOffCellSize:]),
		CopySize:     le.Uint32(b[BoardOffCopySize:]),
		CellTable:    le.Uint64(b[BoardOffCellTable:]),
		SemID:        int32(le.Uint32(b[BoardOffSemID:])),
		SemCookie:    le.Uint32(b[BoardOffSemCookie:]),
		CreatedNano:  int64(le.Uint64(b[BoardOffCreatedNano:])),
		CreatorPID:   le.Uint32(b[BoardOffCreatorPID:]),
		CreatorStart: le.Uint64(b[BoardOffCreatorStart:]),
		Ready:        le.Uint32(b[BoardOffReady:]),
	}
	if h.Version != BoardVersion {
		return h, fmt.Errorf("%w: board version %d, this build reads %d", ErrVersion, h.Version, BoardVersion)
	}
	return h, nil
}

// Config is the creator's configuration recorded in h.
func (h *BoardHeader) Config() BoardConfig {
	return BoardConfig{Cells: int(h.Cells), MaxValue: int(h.MaxValue), WakeMode: h.WakeMode}
}

// Validate checks h against the placement rule and fileSize, the real size
// of the segment, and returns the recomputed geometry. A header whose ready
// word is not set yields ErrNotReady.
func (h *BoardHeader) Validate(fileSize int64) (BoardGeometry, error) {
	if h.Ready != ReadyValue {
		return BoardGeometry{}, fmt.Errorf("%w: ready word %#x", ErrNotReady, h.Ready)
	}
	if h.HeaderSize != HeaderSize || h.CellTable != HeaderSize || h.Flags != 0 {
		return BoardGeometry{}, fmt.Errorf("%w: header size %d, cell table at %#x, flags %#x", ErrCorrupt, h.HeaderSize, h.CellTable, h.Flags)
	}
	g, err := PlanBoard(h.Config())
	if err != nil {
		return BoardGeometry{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if uint64(h.CellSize) != g.CellSize || uint64(h.CopySize) != g.CopySize || h.TotalSize != g.TotalSize {
		return BoardGeometry{}, fmt.Errorf("%w: cells of %d bytes, copies of %d, total %d; layout needs %d, %d, %d",
			ErrCorrupt, h.CellSize, h.CopySize, h.TotalSize, g.CellSize, g.CopySize, g.TotalSize)
	}
	if fileSize < 0 || uint64(fileSize) != h.TotalSize {
		return BoardGeometry{}, fmt.Errorf("%w: file is %d bytes, header says %d", ErrCorrupt, fileSize, h.TotalSize)
	}
	if h.WakeMode == WakeSem && h.SemID < 0 {
		return BoardGeometry{}, fmt.Errorf("%w: sem wake mode without a semaphore set", ErrCorrupt)
	}
	return g, nil
}

// KeyHash is the hash a cell records for its key (FNV-1a, 64 bits); the
// key's home cell is KeyHash % Cells, and lookups probe from there to the
// following cells (wrapping), stopping at a free cell.
func KeyHash(key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return h
}

// CheckCopy validates the header of a cell's current copy: rev the
// revision the cell's current word names, maxValue the board's largest
// value.
func CheckCopy(rev, copyRev uint64, length, flags uint32, maxValue int) error {
	switch {
	case copyRev != rev:
		return fmt.Errorf("%w: current copy holds revision %d, the cell names %d", ErrCorrupt, copyRev, rev)
	case uint64(length) > uint64(maxValue):
		return fmt.Errorf("%w: value length %d, the board holds at most %d", ErrCorrupt, length, maxValue)
	case flags&^knownCopy != 0:
		return fmt.Errorf("%w: copy flags %#x", ErrCorrupt, flags)
	case flags&CopyTombstone != 0 && length != 0:
		return fmt.Errorf("%w: tombstone with a %d-byte value", ErrCorrupt, length)
	}
	return nil
}
