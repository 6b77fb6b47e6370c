// Package board is the protocol of shmbus boards: keyed values in a shared
// segment that any number of processes read and write, with revisions,
// compare-and-put and watches. The segment format is in package layout
// (layout/board.go, docs/layout.md "Boards"); the public API is the module
// root's Board, which adds names, files, closing and the SIGBUS guard. This
// package touches only the mapping it is given.
//
// # Cells and keys
//
// A board has a fixed number of cells, one per key. A key's home cell is
// its hash modulo the number of cells; a key lives in the first cell from
// its home on (wrapping) that was free when its first writer came by, so a
// lookup probes from the home cell and stops at a free cell or at the key.
// A cell is bound to its key for the life of the board: deleting a key
// writes a tombstone and keeps the cell. A cell goes from free to keyed
// once, by a writer holding its lock (below), which writes the key, its
// length and hash, then stores CellKeyed; readers ignore a cell until
// then. Two writers of a new key cannot bind two cells to it: a writer that
// finds a free cell locked waits for the lock (or takes it from a dead
// holder) before it looks again.
//
// # Values: two copies and a current word
//
// Each cell has two copies of its value, each with a sequence word, and a
// current word naming the copy that holds the latest complete value and
// that value's revision (revision<<1 | copy). A writer, holding the cell's
// lock:
//
//  1. takes the next board revision r (one atomic add on the board's
//     revision word: revisions are unique board-wide and increase with
//     every write, so a key's revisions strictly increase);
//  2. makes the spare copy's sequence odd (a new odd value), writes r, the
//     length, the flags and the value into it, makes the sequence even;
//  3. stores current = r<<1 | spare: the value is published;
//  4. releases the lock, then rings the board doorbell.
//
// A reader loads current (r, c), loads copy c's sequence s1, copies the
// value, loads the sequence again and accepts the copy if both loads gave
// the same even s1 and the copy holds revision r; otherwise it starts again.
// Writers only ever write the copy current does not name, so a reader is
// disturbed only when writers lap it (finish one write and begin the next
// one on the copy it is reading): a reader never waits for a writer in
// progress, and a writer that dies in step 2 leaves its half-written copy
// where no reader looks. Revisions a reader sees never go backwards: it
// returns exactly the revision current named, and current only grows.
//
// Order: every shared word is a Go atomic (sequentially consistent), with
// one exception on amd64: the writer's three stores of step 2 and 3 (the
// copy's sequence, twice, and current) need only be ordered with the other
// stores, which amd64 does for every store, so there they are plain stores
// (storeRelease in store_*.go) that do not wait for their cache lines one
// by one; the lock release after them is an exchange, a full fence, so all
// of them are visible before the doorbell load of step 4. The value bytes
// are plain memory: copyIn/copyOut in copy_*.go order them against the
// sequence words (on amd64 by the hardware's total store order, elsewhere
// by moving the bytes as atomic words).
//
// # Writers and crashes
//
// A cell's lock word holds the owner tag of the process writing it
// (internal/proc.Tag: pid and start time); goroutines of one process are
// serialised by a process-local mutex per cell before they take it. A
// writer that finds the lock held spins, then sleeps with backoff, and
// looks at the holder now and then: the lock is taken over (compare and
// swap from the holder's tag) only on proof that the holder is dead
// (internal/proc.TagState), never because it took long. The new holder
// needs no repair: the dead writer either had not published (its copy is
// the spare, which the next write overwrites) or had (current names a
// complete copy). A writer killed between publishing and ringing delays
// watchers to their backstop sleep (ring.Backstop, at most
// ring.MaxBackstop), as a bus producer killed there does; the takeover
// rings the doorbell too.
//
// # Watches
//
// Watchers use the board's one doorbell (ring.Doorbell, an eventcount:
// announce, re-check, sleep) with the key revisions as their condition. A
// writer rings after its publishing store, so a watcher that announced
// before the ring is woken and one that announced after it sees the new
// revision in its re-check: no lost wake-ups (docs/model/board.pml checks
// this and the copy protocol).
package board

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/shmbus/shmbus/internal/failpoint"
	"github.com/shmbus/shmbus/internal/proc"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// sentinel is an error that also matches another package's sentinel of the
// same meaning (ErrFull is ring.ErrFull to errors.Is, with its own words).
type sentinel struct {
	msg  string
	like error
}

func (e *sentinel) Error() string        { return e.msg }
func (e *sentinel) Is(target error) bool { return target == e.like }

// Errors.
var (
	ErrNotFound = errors.New("no such key")
	ErrRevision = errors.New("revision mismatch")
	ErrBadKey   = errors.New("invalid key")
	ErrTooLarge = &sentinel{"value too large for board", ring.ErrTooLarge}
	ErrFull     = &sentinel{"no free key cell", ring.ErrFull}
	ErrCorrupt  = layout.ErrCorrupt
)

// localLocks is the number of process-local mutexes cells share.
const localLocks = 64

// Board is one process's view of a board segment.
type Board struct {
	seg []byte
	g   layout.BoardGeometry
	tag uint64

	base               unsafe.Pointer // &seg[0]
	cellSize, copySize uintptr        // from g

	rev        *atomic.Uint64
	bell       *ring.Doorbell
	conflicts  *atomic.Uint64
	recoveries *atomic.Uint64

	locks [localLocks]sync.Mutex

	keysMu sync.Mutex
	keys   []string // keys of keyed cells seen so far, by cell; "" unknown
}

// New binds a board to seg, whose header has been validated into g.
// sleeper is the wake primitive of the board's doorbell; self is this
// process.
func New(seg []byte, g layout.BoardGeometry, sleeper ring.Sleeper, self proc.Identity) *Board {
	if uint64(len(seg)) < g.TotalSize || g.TotalSize < layout.HeaderSize+uint64(g.Cells)*g.CellSize ||
		g.CellSize < layout.CellCopies+2*g.CopySize || g.CopySize < layout.CopyData+uint64(g.MaxValue) {
		// The cell views index seg unchecked: a caller's bug, never
		// the segment's (its geometry was validated before).
		panic(fmt.Sprintf("board: %d-byte mapping for an inconsistent geometry %+v", len(seg), g))
	}
	return &Board{
		seg:        seg,
		g:          g,
		tag:        proc.Tag(self),
		base:       unsafe.Pointer(unsafe.SliceData(seg)),
		cellSize:   uintptr(g.CellSize),
		copySize:   uintptr(g.CopySize),
		rev:        layout.Word64(seg, layout.BoardOffRevision),
		bell:       ring.NewDoorbell(seg, layout.BoardOffBellSeq, sleeper, layout.Word64(seg, layout.BoardOffSleeps), layout.Word64(seg, layout.BoardOffWakes)),
		conflicts:  layout.Word64(seg, layout.BoardOffConflicts),
		recoveries: layout.Word64(seg, layout.BoardOffRecoveries),
		keys:       make([]string, g.Cells),
	}
}

// Geometry is the board's validated geometry.
func (b *Board) Geometry() layout.BoardGeometry { return b.g }

// Doorbell is the board's doorbell.
func (b *Board) Doorbell() *ring.Doorbell { return b.bell }

// Revision is the board revision: the revision the latest write took.
func (b *Board) Revision() uint64 { return b.rev.Load() }

// Stats are the board's counters.
type Stats struct {
	Revision   uint64 // the latest revision taken
	Puts       uint64 // values and tombstones written (revisions taken)
	Conflicts  uint64 // CompareAndPut calls refused
	Recoveries uint64 // locks taken over from dead writers
	Sleeps     uint64 // watcher sleeps
	Wakes      uint64 // rings that found watchers asleep
	Keys       int    // cells bound to a key
	Cells      int
}

// Stats reads the counters and counts the keyed cells.
func (b *Board) Stats() Stats {
	s := Stats{
		Revision:   b.rev.Load(),
		Puts:       b.rev.Load(),
		Conflicts:  b.conflicts.Load(),
		Recoveries: b.recoveries.Load(),
		Sleeps:     layout.Word64(b.seg, layout.BoardOffSleeps).Load(),
		Wakes:      layout.Word64(b.seg, layout.BoardOffWakes).Load(),
		Cells:      b.g.Cells,
	}
	for i := 0; i < b.g.Cells; i++ {
		if b.cell(i).state().Load() == layout.CellKeyed {
			s.Keys++
		}
	}
	return s
}

// cell is one cell's shared words.
type cell struct {
	i int
	p unsafe.Pointer // the cell's first byte
}

// cell and copyOf address the mapping from its base without bounds checks:
// i is always below the geometry's cell count (callers index cells only
// from 0..Cells-1), every offset comes from the validated geometry, and New
// checked that the mapping holds all of it. The words are aligned: cells
// and copies are multiples of 64 bytes from the page-aligned mapping.
// Nothing read from the segment ever becomes an address here; key and
// value lengths read from it are checked before they bound a copy.
func (b *Board) cell(i int) cell {
	return cell{i, unsafe.Add(b.base, layout.HeaderSize+uintptr(i)*b.cellSize)}
}

func (c cell) state() *atomic.Uint32   { return (*atomic.Uint32)(unsafe.Add(c.p, layout.CellState)) }
func (c cell) keyLen() *atomic.Uint32  { return (*atomic.Uint32)(unsafe.Add(c.p, layout.CellKeyLen)) }
func (c cell) hash() *atomic.Uint64    { return (*atomic.Uint64)(unsafe.Add(c.p, layout.CellHash)) }
func (c cell) lock() *atomic.Uint64    { return (*atomic.Uint64)(unsafe.Add(c.p, layout.CellLock)) }
func (c cell) current() *atomic.Uint64 { return (*atomic.Uint64)(unsafe.Add(c.p, layout.CellCurrent)) }

// keyBytes is the key field of cell c, n bytes (n <= MaxKeyLen).
func (c cell) keyBytes(n uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(c.p, layout.CellKey)), n)
}

// copyWords is one copy: its sequence word, then its header (revision,
// length, flags) and value, which move as plain memory between the
// sequence word's stores and loads (loadHeader, storeHeader, copyIn,
// copyOut in copy_*.go).
type copyWords struct {
	p    unsafe.Pointer // the copy's first byte: its sequence word
	size uintptr        // copy_size
}

// copyHeader is a copy's header, decoded.
type copyHeader struct {
	rev   uint64
	len   uint32
	flags uint32
}

// The copy header's fields, offsets from its start (CopyRev).
const (
	hdrLen   = layout.CopyLen - layout.CopyRev
	hdrFlags = layout.CopyFlags - layout.CopyRev
)

func (cp copyWords) seq() *atomic.Uint64 { return (*atomic.Uint64)(unsafe.Add(cp.p, layout.CopySeq)) }

func (cp copyWords) header() copyHeader { return loadHeader(unsafe.Add(cp.p, layout.CopyRev)) }

func (cp copyWords) setHeader(ch copyHeader) { storeHeader(unsafe.Add(cp.p, layout.CopyRev), ch) }

// data is the copy's first n value bytes (n <= MaxValue), with the rest of
// the copy, padding included, in the capacity (see copy_other.go).
func (cp copyWords) data(n int) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(cp.p, layout.CopyData)), cp.size-layout.CopyData)[:n]
}

func (b *Board) copyOf(i, c int) copyWords { return b.copyAt(b.cell(i), c) }

func (b *Board) copyAt(cl cell, c int) copyWords {
	return copyWords{unsafe.Add(cl.p, layout.CellCopies+uintptr(c)*b.copySize), b.copySize}
}

// CheckKey says whether key is a valid key: 1 to 255 bytes, any bytes.
func CheckKey(key string) error {
	if len(key) == 0 || len(key) > layout.MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, want 1..%d", ErrBadKey, len(key), layout.MaxKeyLen)
	}
	return nil
}

// keyIs reports whether keyed cell c holds key (with hash h).
func (b *Board) keyIs(c cell, key string, h uint64) (bool, error) {
	n := c.keyLen().Load()
	if n == 0 || n > layout.MaxKeyLen {
		return false, fmt.Errorf("%w: cell %d: key length %d", ErrCorrupt, c.i, n)
	}
	if c.hash().Load() != h || int(n) != len(key) {
		return false, nil
	}
	return string(c.keyBytes(n)) == key, nil
}

// find returns the cell holding key, or -1 if no cell does yet (the key
// was never written). It never waits.
func (b *Board) find(key string, h uint64) (int, error) {
	n := b.g.Cells
	home := int(h % uint64(n))
	for k := 0; k < n; k++ {
		i := home + k
		if i >= n {
			i -= n
		}
		c := b.cell(i)
		switch s := c.state().Load(); s { // pairs with the keying store in bind
		case layout.CellFree:
			return -1, nil
		case layout.CellKeyed:
			ok, err := b.keyIs(c, key, h)
			if err != nil || ok {
				return i, err
			}
		default:
			return -1, fmt.Errorf("%w: cell %d: state %d", ErrCorrupt, i, s)
		}
	}
	return -1, nil
}

// Lookup finds key's cell without waiting; ok is false if the key was
// never written.
func (b *Board) Lookup(key string) (i int, ok bool, err error) {
	if err := CheckKey(key); err != nil {
		return -1, false, err
	}
	i, err = b.find(key, layout.KeyHash(key))
	return i, i >= 0, err
}

// revOf is cell i's revision: one load of its current word (0 for a cell
// never written).
func (b *Board) revOf(i int) uint64 { return b.cell(i).current().Load() >> 1 }

// Get copies the latest complete value of key into buf (grown if it is too
// small) and returns it with its revision. A key never written yields
// ErrNotFound with revision 0; a deleted key ErrNotFound with the
// tombstone's revision.
func (b *Board) Get(key string, buf []byte) ([]byte, uint64, error) {
	if err := CheckKey(key); err != nil {
		return nil, 0, err
	}
	h := layout.KeyHash(key)
	b.prefetch(int(h % uint64(b.g.Cells)))
	i, err := b.find(key, h)
	if err != nil {
		return nil, 0, err
	}
	if i < 0 {
		return nil, 0, ErrNotFound
	}
	v, rev, dead, err := b.read(i, buf)
	if err != nil {
		return nil, rev, err
	}
	if dead {
		return nil, rev, ErrNotFound
	}
	return v, rev, nil
}

// prefetch loads the sequence words of both copies of cell i, the key's
// home cell, before the lookup reads the cell's first line: a writer in
// another process rewrites that line and the copies on every write, and a
// reader would otherwise miss on the line and then, once current names the
// copy, on the copy; with both copies requested up front, the misses
// overlap. The loads' values are not used.
func (b *Board) prefetch(i int) {
	c := b.cell(i)
	for k := range 2 {
		cp := b.copyAt(c, k)
		cp.seq().Load()
		if b.copySize > layout.CopyAlign {
			// The copy's second line: the rest of a small value.
			(*atomic.Uint64)(unsafe.Add(cp.p, layout.CopyAlign)).Load()
		}
	}
}

// read is the reader's side of the copy protocol for cell i: the value of
// the copy current names, its revision, and whether it is a tombstone.
func (b *Board) read(i int, buf []byte) (_ []byte, rev uint64, dead bool, _ error) {
	c := b.cell(i)
	for spins := 0; ; spins++ {
		cw := c.current().Load() // pairs with the publishing store in write
		if cw == 0 {
			return nil, 0, false, ErrNotFound
		}
		rev = cw >> 1
		cp := b.copyOf(i, int(cw&1))
		s1 := cp.seq().Load() // pairs with the closing store in write
		if s1&1 == 0 {
			ch := cp.header()
			n, flags, crev := ch.len, ch.flags, ch.rev
			if n <= uint32(b.g.MaxValue) {
				if cap(buf) < int(n) {
					buf = make([]byte, n)
				}
				buf = buf[:n]
				copyOut(buf, cp.data(int(n)))
			}
			if cp.seq().Load() == s1 { // the copy did not change while we read it
				if crev == rev {
					if err := layout.CheckCopy(rev, crev, n, flags, b.g.MaxValue); err != nil {
						return nil, rev, false, fmt.Errorf("cell %d: %w", i, err)
					}
					return buf, rev, flags&layout.CopyTombstone != 0, nil
				}
				if c.current().Load() == cw {
					// Stable, named by current, and not its revision:
					// no writer does that.
					return nil, rev, false, fmt.Errorf("%w: cell %d: current names revision %d, its copy holds %d", ErrCorrupt, i, rev, crev)
				}
			}
		} else if c.current().Load() == cw {
			// A writer only opens the copy current does not name: an
			// open current copy with current unchanged is damage, unless
			// we raced a lap; look again a few times before saying so.
			if spins > 1000 {
				return nil, rev, false, fmt.Errorf("%w: cell %d: current copy %d is open (sequence %d)", ErrCorrupt, i, cw&1, s1)
			}
		}
		if spins > 64 {
			runtime.Gosched() // lapped again and again: let the writers run
		}
	}
}

// Put writes value as key's new value and returns its revision.
func (b *Board) Put(key string, value []byte) (uint64, error) {
	return b.write(key, value, opPut, 0)
}

// CompareAndPut writes value only if key's revision is rev (Get's
// revision, of a value or of a tombstone); rev 0 asks for a key that has
// no value (never written, or deleted). Otherwise it fails with an error
// wrapping ErrRevision that says the key's revision.
func (b *Board) CompareAndPut(key string, rev uint64, value []byte) (uint64, error) {
	return b.write(key, value, opCAS, rev)
}

// Delete writes a tombstone for key and returns its revision; a key with
// no value yields ErrNotFound and writes nothing.
func (b *Board) Delete(key string) (uint64, error) {
	return b.write(key, nil, opDelete, 0)
}

type op int

const (
	opPut op = iota
	opCAS
	opDelete
)

func (b *Board) write(key string, value []byte, o op, expect uint64) (uint64, error) {
	if err := CheckKey(key); err != nil {
		return 0, err
	}
	if len(value) > b.g.MaxValue {
		return 0, fmt.Errorf("%w: %d bytes, the board holds at most %d", ErrTooLarge, len(value), b.g.MaxValue)
	}
	h := layout.KeyHash(key)
	i, err := b.find(key, h)
	if err != nil {
		return 0, err
	}
	if i < 0 {
		if o == opDelete || o == opCAS && expect != 0 {
			// No value to delete or compare with: fail without binding
			// a cell to the key.
			return b.refuse(o, expect, 0, false)
		}
		i, err = b.bind(key, h) // returns with cell i locked
		if err != nil {
			return 0, err
		}
	} else if err := b.lock(i); err != nil {
		return 0, err
	}
	failpoint.BoardLocked.Fire()
	rev, err := b.writeLocked(i, value, o, expect)
	b.unlock(i)
	if err == nil {
		b.bell.Ring() // after the publishing store; an error only delays watchers
	}
	return rev, err
}

// writeLocked is steps 1-3 of the write protocol, with cell i locked.
func (b *Board) writeLocked(i int, value []byte, o op, expect uint64) (uint64, error) {
	c := b.cell(i)
	cw := c.current().Load()
	cur := cw >> 1
	live := false
	if cw != 0 {
		// The current copy: no writer but this one touches it now.
		live = b.copyOf(i, int(cw&1)).header().flags&layout.CopyTombstone == 0
	}
	switch {
	case o == opDelete && !live:
		return b.refuse(o, expect, cur, live)
	case o == opCAS && !(expect == 0 && !live || expect != 0 && expect == cur):
		return b.refuse(o, expect, cur, live)
	}
	spare := 1 - int(cw&1)
	cp := b.copyOf(i, spare)
	rev := b.rev.Add(1)
	open := (cp.seq().Load() | 1) + 2 // a new odd value, even after a writer died with the copy open
	storeRelease(cp.seq(), open)
	failpoint.BoardCopyOpen.Fire()
	var flags uint32
	if o == opDelete {
		flags = layout.CopyTombstone
		value = nil
	}
	cp.setHeader(copyHeader{rev: rev, len: uint32(len(value)), flags: flags})
	copyIn(cp.data(len(value)), value)
	failpoint.BoardCopyWritten.Fire()
	storeRelease(cp.seq(), open+1) // pairs with the reader's second sequence load
	failpoint.BoardCopyClosed.Fire()
	storeRelease(c.current(), rev<<1|uint64(spare)) // publishes; pairs with the reader's first load
	failpoint.BoardPublished.Fire()
	return rev, nil
}

func (b *Board) refuse(o op, expect, cur uint64, live bool) (uint64, error) {
	if o == opDelete {
		return cur, ErrNotFound
	}
	b.conflicts.Add(1)
	state := fmt.Sprintf("revision %d", cur)
	switch {
	case cur == 0:
		state = "no value"
	case !live:
		state = fmt.Sprintf("deleted at revision %d", cur)
	}
	want := fmt.Sprintf("revision %d", expect)
	if expect == 0 {
		want = "no value"
	}
	return cur, fmt.Errorf("%w: the key has %s, expected %s", ErrRevision, state, want)
}

// bind finds key's cell or binds a free one to it, and returns it locked.
func (b *Board) bind(key string, h uint64) (int, error) {
	n := b.g.Cells
	home := int(h % uint64(n))
	for k := 0; k < n; k++ {
		i := home + k
		if i >= n {
			i -= n
		}
		c := b.cell(i)
		switch s := c.state().Load(); s {
		case layout.CellKeyed:
			ok, err := b.keyIs(c, key, h)
			if err != nil {
				return -1, err
			}
			if !ok {
				continue
			}
			return i, b.lock(i)
		case layout.CellFree:
		default:
			return -1, fmt.Errorf("%w: cell %d: state %d", ErrCorrupt, i, s)
		}
		// Free: whoever holds the lock may be binding it; take the lock
		// and look again.
		if err := b.lock(i); err != nil {
			return -1, err
		}
		if c.state().Load() == layout.CellKeyed {
			ok, err := b.keyIs(c, key, h)
			if err == nil && ok {
				return i, nil
			}
			b.unlock(i)
			if err != nil {
				return -1, err
			}
			continue
		}
		failpoint.BoardBinding.Fire()
		copy(c.keyBytes(uint32(len(key))), key) // published by the state store below
		c.keyLen().Store(uint32(len(key)))
		c.hash().Store(h)
		c.state().Store(layout.CellKeyed) // pairs with the state load in find
		return i, nil
	}
	return -1, fmt.Errorf("%w: all %d cells hold other keys", ErrFull, n)
}

// Lock waiting: spin briefly, then sleep with a growing delay; look at the
// holder's liveness after lockProbeAfter and then every lockProbeEvery.
const (
	lockSpins      = 100
	lockMaxSleep   = time.Millisecond
	lockProbeAfter = 100 * time.Microsecond
	lockProbeEvery = 5 * time.Millisecond
)

// lock takes cell i's local mutex and shared lock. The shared lock is
// taken from its holder only on proof that the holder is dead.
func (b *Board) lock(i int) error {
	b.locks[i%localLocks].Lock()
	w := b.cell(i).lock()
	var start, probed time.Time
	sleep := time.Microsecond
	for spins := 0; ; spins++ {
		o := w.Load()
		switch {
		case o == 0:
			if w.CompareAndSwap(0, b.tag) {
				return nil
			}
			continue
		case o == b.tag:
			// Left held by this process (a write cut short by a fault
			// of the mapping); the local mutex excludes every other
			// writer of this process, so it is ours again.
			return nil
		}
		if spins < lockSpins {
			continue
		}
		now := time.Now()
		if start.IsZero() {
			start = now
		}
		if now.Sub(start) >= lockProbeAfter && now.Sub(probed) >= lockProbeEvery {
			probed = now
			if proc.TagState(o) == proc.Dead && w.CompareAndSwap(o, b.tag) {
				b.recoveries.Add(1)
				// The dead writer may have published without ringing.
				b.bell.Kick()
				return nil
			}
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, lockMaxSleep)
	}
}

func (b *Board) unlock(i int) {
	// After the publishing store, and a full fence (an exchange): the
	// stores before it (storeRelease) are visible before the doorbell
	// load in Ring, which the no-lost-wake-up argument needs.
	b.cell(i).lock().Store(0)
	b.locks[i%localLocks].Unlock()
}

// Key is the key of cell i, if it is keyed.
func (b *Board) key(i int) (string, bool, error) {
	c := b.cell(i)
	if c.state().Load() != layout.CellKeyed {
		return "", false, nil
	}
	b.keysMu.Lock()
	k := b.keys[i]
	b.keysMu.Unlock()
	if k != "" {
		return k, true, nil
	}
	n := c.keyLen().Load()
	if n == 0 || n > layout.MaxKeyLen {
		return "", false, fmt.Errorf("%w: cell %d: key length %d", ErrCorrupt, i, n)
	}
	k = string(c.keyBytes(n))
	if c.hash().Load() != layout.KeyHash(k) {
		return "", false, fmt.Errorf("%w: cell %d: hash %#x does not match its key", ErrCorrupt, i, c.hash().Load())
	}
	b.keysMu.Lock()
	b.keys[i] = k // a keyed cell's key never changes
	b.keysMu.Unlock()
	return k, true, nil
}

// Entry is a key's value at a revision.
type Entry struct {
	Key     string
	Value   []byte
	Rev     uint64
	Deleted bool // a tombstone: the key was deleted at Rev
}

// Range calls f for every key with a value, in cell order (tombstones are
// skipped unless deleted is true), with the value read as Get reads it.
// It stops when f returns false.
func (b *Board) Range(deleted bool, f func(Entry) bool) error {
	for i := 0; i < b.g.Cells; i++ {
		k, ok, err := b.key(i)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		v, rev, dead, err := b.read(i, nil)
		if errors.Is(err, ErrNotFound) {
			continue // bound, not yet written
		}
		if err != nil {
			return err
		}
		if dead && !deleted {
			continue
		}
		if !f(Entry{Key: k, Value: v, Rev: rev, Deleted: dead}) {
			return nil
		}
	}
	return nil
}
