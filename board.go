package shmbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/internal/board"
	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
	"github.com/shmbus/shmbus/sem"
)

// Boards: keyed values shared by processes (see internal/board for the
// protocol and docs/semantics.md, "Boards", for what it promises). This
// file is glue: names, files, semaphores, closing and the SIGBUS guard.

// Board errors, besides ErrClosed, ErrNotExist, ErrExist, ErrCorrupt,
// ErrVersion, ErrBadName, ErrTooLarge (a value larger than the board's
// MaxValue) and ErrFull (every cell holds another key), which boards share
// with buses.
var (
	ErrNotFound = board.ErrNotFound // the key has no value (never written, or deleted)
	ErrRevision = board.ErrRevision // CompareAndPut: the key's revision is not the one given
	ErrBadKey   = board.ErrBadKey   // a key is 1 to 255 bytes
)

// Defaults for BoardOptions.
const (
	DefaultBoardKeys     = 256
	DefaultBoardMaxValue = 1024
)

// BoardOptions configure CreateBoard. The zero value (or nil) is a board of
// 256 keys of values up to 1 KiB, the platform's default wake mode and mode
// 0600.
type BoardOptions struct {
	Keys     int         // keys the board can hold, 1..1<<20; default 256
	MaxValue int         // largest value in bytes, up to 1 MiB; default 1 KiB (-1 for 0: keys only)
	Wake     WakeMode    // default DefaultWake
	Mode     os.FileMode // permission bits of the segment (and semaphore set); default 0600
	Dir      string      // default $SHMBUS_DIR or /dev/shm
	// Memfd makes the board an anonymous sealed memfd, reached only
	// through its descriptor (Board.File, OpenBoardFile), as for buses.
	Memfd bool
}

// BoardEntry is a key's value at a revision; Deleted marks a tombstone.
type BoardEntry = board.Entry

// BoardStats are a board's counters.
type BoardStats = board.Stats

// Board is a process's attachment to a board. It is safe for concurrent
// use.
type Board struct {
	name    string
	m       *segment.Mapping
	hdr     layout.BoardHeader
	sems    *sem.Set
	b       *board.Board
	created bool

	closed    atomic.Bool
	calls     atomic.Int64 // as Bus.calls
	drained   chan struct{}
	drainOnce sync.Once
}

func (o *BoardOptions) config() (layout.BoardConfig, error) {
	if o == nil {
		o = &BoardOptions{}
	}
	c := layout.BoardConfig{Cells: o.Keys, MaxValue: o.MaxValue, WakeMode: layout.WakeMode(o.Wake)}
	if c.Cells == 0 {
		c.Cells = DefaultBoardKeys
	}
	switch {
	case c.MaxValue == 0:
		c.MaxValue = DefaultBoardMaxValue
	case c.MaxValue == -1:
		c.MaxValue = 0
	}
	if c.WakeMode == 0 {
		c.WakeMode = layout.WakeMode(DefaultWake)
	}
	if err := checkWake(c.WakeMode); err != nil {
		return c, err
	}
	return c, nil
}

// CreateBoard makes a new board called name and attaches to it. Boards
// have names of their own (the file shmbus-board.NAME): a board and a bus
// may share a name. It fails with ErrExist if the board exists, and leaves
// nothing behind if it fails.
func CreateBoard(name string, opts *BoardOptions) (*Board, error) {
	b, err := createBoard(name, opts)
	if err != nil {
		return nil, &Error{Op: "create", Kind: "board", Name: name, Err: err}
	}
	return b, nil
}

func createBoard(name string, opts *BoardOptions) (*Board, error) {
	if err := checkHostAndName(name); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &BoardOptions{}
	}
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	g, err := layout.PlanBoard(cfg)
	if err != nil {
		return nil, err
	}
	mode := opts.Mode.Perm()
	if mode == 0 {
		mode = DefaultMode
	}
	m, path, err := createMapping(context.Background(), segment.BoardPath(opts.Dir, name), name, opts.Memfd, int64(g.TotalSize), mode)
	if err != nil {
		return nil, err
	}
	undo := func() {
		m.Close()
		if path != "" {
			segment.Remove(path)
		}
	}
	h := layout.NewBoardHeader(g)
	self := selfIdentity()
	h.CreatedNano = time.Now().UnixNano()
	h.CreatorPID = uint32(self.PID)
	h.CreatorStart = self.Start
	var set *sem.Set
	if cfg.WakeMode == layout.WakeSem {
		set, h.SemCookie, err = createSems(m.File(), 0, mode) // semaphore 0: the doorbell; 1: the cookie
		if err != nil {
			undo()
			return nil, err
		}
		h.SemID = int32(set.ID())
	}
	seg := m.Bytes()
	if err := segment.Guard(func() error {
		h.Encode(seg) // the cells are all zero: free
		// Two-phase init: everything above is visible before the ready word.
		layout.Word32(seg, layout.BoardOffReady).Store(layout.ReadyValue)
		return nil
	}); err != nil {
		undo()
		if set != nil {
			set.Remove()
		}
		return nil, err
	}
	h.Ready = layout.ReadyValue
	b := attachBoard(name, m, h, g, set)
	b.created = true
	return b, nil
}

// OpenBoard attaches to the existing board called name; opts.Dir and
// opts.Wait are as for Open. The header is validated against the file's
// real size before anything in it is used.
func OpenBoard(name string, opts *OpenOptions) (*Board, error) {
	b, err := openBoard(name, opts)
	if err != nil {
		return nil, opError("open", "board", name, err)
	}
	return b, nil
}

func openBoard(name string, opts *OpenOptions) (*Board, error) {
	if err := segment.ValidateName(name); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	m, h, g, err := segment.OpenBoard(segment.BoardPath(opts.Dir, name), opts.Wait)
	if err != nil {
		return nil, err
	}
	return attachBoardMapping(name, m, h, g)
}

// OpenBoardFile attaches to the board whose segment is open in f (a memfd
// board's descriptor, inherited or received), as OpenFile does for buses.
func OpenBoardFile(name string, f *os.File, opts *OpenOptions) (*Board, error) {
	b, err := openBoardFile(name, f, opts)
	if err != nil {
		return nil, opError("open", "board", name, err)
	}
	return b, nil
}

func openBoardFile(name string, f *os.File, opts *OpenOptions) (*Board, error) {
	if err := segment.ValidateName(name); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	m, h, g, err := segment.OpenBoardFD(f, "fd:"+segment.BoardPrefix+name, opts.Wait)
	if err != nil {
		return nil, err
	}
	return attachBoardMapping(name, m, h, g)
}

func attachBoardMapping(name string, m *segment.Mapping, h layout.BoardHeader, g layout.BoardGeometry) (*Board, error) {
	if !layout.HostLittleEndian() {
		m.Close()
		return nil, fmt.Errorf("%w: big-endian host", errors.ErrUnsupported)
	}
	if err := checkWake(h.WakeMode); err != nil {
		m.Close()
		return nil, err
	}
	var set *sem.Set
	if h.WakeMode == layout.WakeSem {
		var err error
		if set, err = attachSems(int(h.SemID), 0, h.SemCookie); err != nil {
			m.Close()
			return nil, err
		}
	}
	return attachBoard(name, m, h, g, set), nil
}

func attachBoard(name string, m *segment.Mapping, h layout.BoardHeader, g layout.BoardGeometry, set *sem.Set) *Board {
	var sleeper ring.Sleeper = futex.Sleeper{}
	if set != nil {
		sleeper = set.Sleeper(0)
	}
	return &Board{name: name, m: m, hdr: h, sems: set, drained: make(chan struct{}),
		b: board.New(m.Bytes(), g, sleeper, selfIdentity())}
}

// Name is the board's name.
func (b *Board) Name() string { return b.name }

// Path is the segment file's path, or a label for a board without one.
func (b *Board) Path() string { return b.m.Path() }

// File is the open segment file (for passing a memfd board's descriptor);
// owned by the board, closed by Close.
func (b *Board) File() *os.File { return b.m.File() }

// Header is the decoded header the board was attached with.
func (b *Board) Header() layout.BoardHeader { return b.hdr }

// Capacity is the number of keys the board can hold.
func (b *Board) Capacity() int { return int(b.hdr.Cells) }

// Keys returns the keys that have a value, in no particular order.
func (b *Board) Keys() ([]string, error) {
	var out []string
	err := b.Range(false, func(e BoardEntry) bool { out = append(out, e.Key); return true })
	return out, err
}

// MaxValue is the largest value the board holds.
func (b *Board) MaxValue() int { return int(b.hdr.MaxValue) }

// WakeMode is how the board's watchers are woken.
func (b *Board) WakeMode() WakeMode { return WakeMode(b.hdr.WakeMode) }

// enter registers a call that uses the mapping (see Bus.enter).
func (b *Board) enter() error {
	if b.calls.Add(1)&closingBit != 0 {
		b.exit()
		return boardError(b.name, ErrClosed)
	}
	return nil
}

func (b *Board) exit() {
	if b.calls.Add(-1) == closingBit {
		b.drainOnce.Do(func() { close(b.drained) })
	}
}

// do runs f on the mapping: closed check, SIGBUS guard, error context.
func (b *Board) do(verb, key string, f func() error) error {
	if err := b.enter(); err != nil {
		return err
	}
	err := segment.Guard(f)
	b.exit()
	if err != nil {
		return b.wrap(verb, key, err)
	}
	return nil
}

// wrap gives err its context: the board, the call and the key.
func (b *Board) wrap(verb, key string, err error) error {
	if key != "" {
		return boardError(b.name, fmt.Errorf("%s %q: %w", verb, key, err))
	}
	return boardError(b.name, fmt.Errorf("%s: %w", verb, err))
}

// Get copies key's latest complete value into buf (grown if too small;
// pass a buffer of MaxValue bytes to never allocate) and returns it with
// its revision. It never waits for a writer. A key without a value yields
// ErrNotFound, with revision 0 if it was never written and the
// tombstone's revision if it was deleted.
func (b *Board) Get(key string, buf []byte) (value []byte, rev uint64, err error) {
	if err := b.enter(); err != nil {
		return nil, 0, err
	}
	value, rev, err = b.get(key, buf)
	b.exit()
	if err != nil {
		return nil, rev, b.wrap("get", key, err)
	}
	return value, rev, nil
}

// get and put are Get's and Put's calls under the SIGBUS guard, written
// out rather than through do: no closure on the two hottest paths.
func (b *Board) get(key string, buf []byte) (_ []byte, _ uint64, err error) {
	defer endGuard(&err, debug.SetPanicOnFault(true))
	return b.b.Get(key, buf)
}

func (b *Board) put(key string, value []byte) (_ uint64, err error) {
	defer endGuard(&err, debug.SetPanicOnFault(true))
	return b.b.Put(key, value)
}

// endGuard ends a guard begun with debug.SetPanicOnFault(true) (old is
// what it returned), as segment.Guard does: a memory fault of the mapping
// becomes an error wrapping ErrTruncated; any other panic goes on.
func endGuard(err *error, old bool) {
	debug.SetPanicOnFault(old)
	r := recover()
	if r == nil {
		return
	}
	if re, ok := r.(runtime.Error); ok {
		if a, ok := re.(interface{ Addr() uintptr }); ok {
			*err = fmt.Errorf("%w: memory fault at %#x: %v", ErrTruncated, a.Addr(), re)
			return
		}
	}
	panic(r)
}

// Put makes value key's value and returns its revision. Revisions are
// unique on the board and increase with every write: each key's strictly
// increase.
func (b *Board) Put(key string, value []byte) (rev uint64, err error) {
	if err := b.enter(); err != nil {
		return 0, err
	}
	rev, err = b.put(key, value)
	b.exit()
	if err != nil {
		return rev, b.wrap("put", key, err)
	}
	return rev, nil
}

// CompareAndPut makes value key's value only if key's revision is still
// rev (as Get returned it); rev 0 asks that the key have no value. It
// fails with ErrRevision otherwise, and writes nothing.
func (b *Board) CompareAndPut(key string, rev uint64, value []byte) (newRev uint64, err error) {
	err = b.do("compare-and-put", key, func() error {
		var e error
		newRev, e = b.b.CompareAndPut(key, rev, value)
		return e
	})
	return newRev, err
}

// Delete removes key's value (a tombstone revision, which watchers see)
// and returns the tombstone's revision; ErrNotFound if it had none. The
// key keeps its cell.
func (b *Board) Delete(key string) (rev uint64, err error) {
	err = b.do("delete", key, func() error {
		var e error
		rev, e = b.b.Delete(key)
		return e
	})
	return rev, err
}

// Range calls f with every key that has a value (deleted keys too if
// deleted is true), in no particular order, until f returns false. Close
// waits for a Range in progress: f must not call Close.
func (b *Board) Range(deleted bool, f func(BoardEntry) bool) error {
	return b.do("range", "", func() error { return b.b.Range(deleted, f) })
}

// List returns the entries of every key that has a value.
func (b *Board) List() ([]BoardEntry, error) {
	var out []BoardEntry
	err := b.Range(false, func(e BoardEntry) bool { out = append(out, e); return true })
	return out, err
}

// Stats reads the board's counters.
func (b *Board) Stats() (s BoardStats, err error) {
	err = b.do("stats", "", func() error { s = b.b.Stats(); return nil })
	return s, err
}

// Check validates the attached board's cells (see CheckBoard).
func (b *Board) Check() error {
	return b.do("check", "", b.b.Check)
}

// Watch blocks until key's revision is past afterRev, then returns its
// entry at its latest revision (a deletion is an entry with Deleted set).
// Writes faster than the watcher are coalesced: it gets the latest value,
// never a stale one. It ends with ctx's error, or ErrClosed if the board
// is closed.
func (b *Board) Watch(ctx context.Context, key string, afterRev uint64) (e BoardEntry, err error) {
	if err := board.CheckKey(key); err != nil {
		return e, boardError(b.name, fmt.Errorf("watch: %w", err))
	}
	w := b.newWatcher(afterRev, []string{key}, "", false)
	for {
		es, err := w.Next(ctx)
		if err != nil {
			return e, err
		}
		if len(es) > 0 {
			return es[0], nil
		}
	}
}

// BoardWatcher watches several keys, or every key with a prefix, with one
// goroutine and the board's one doorbell. It belongs to one goroutine.
type BoardWatcher struct {
	b *Board
	w *board.Watcher
}

// WatchKeys watches keys for revisions past afterRev.
func (b *Board) WatchKeys(afterRev uint64, keys ...string) (*BoardWatcher, error) {
	for _, k := range keys {
		if err := board.CheckKey(k); err != nil {
			return nil, boardError(b.name, fmt.Errorf("watch %q: %w", k, err))
		}
	}
	return b.newWatcher(afterRev, keys, "", false), nil
}

// WatchPrefix watches every key starting with prefix ("" for all keys),
// present or future, for revisions past afterRev.
func (b *Board) WatchPrefix(afterRev uint64, prefix string) *BoardWatcher {
	return b.newWatcher(afterRev, nil, prefix, true)
}

func (b *Board) newWatcher(after uint64, keys []string, prefix string, all bool) *BoardWatcher {
	return &BoardWatcher{b: b, w: b.b.NewWatcher(after, keys, prefix, all)}
}

// Next blocks until a watched key has a revision past the last one Next
// returned for it (at first: the watcher's afterRev), and returns every
// such key's latest entry, in revision order.
func (w *BoardWatcher) Next(ctx context.Context) ([]BoardEntry, error) {
	b := w.b
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var unregister func() bool
	defer func() {
		if unregister != nil {
			unregister()
		}
	}()
	stop := func() error {
		if b.closed.Load() {
			return boardError(b.name, ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if unregister == nil && ctx.Done() != nil {
			unregister = context.AfterFunc(ctx, func() {
				if b.enter() == nil {
					segment.Guard(func() error { return b.b.Doorbell().Kick() })
					b.exit()
				}
			})
		}
		return nil
	}
	var deadline time.Time
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	var es []BoardEntry
	err := segment.Guard(func() error {
		var e error
		es, e = w.w.Next(stop, deadline)
		return e
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, context.DeadlineExceeded // the only deadline is ctx's
	case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	case err != nil:
		return nil, boardError(b.name, fmt.Errorf("watch: %w", err))
	}
	return es, nil
}

// Close detaches from the board: blocked watches of this process return
// ErrClosed and the segment is unmapped. The board stays (see RemoveBoard).
func (b *Board) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if b.calls.Add(closingBit) == closingBit {
		b.drainOnce.Do(func() { close(b.drained) })
	}
	segment.Guard(func() error { return b.b.Doorbell().Kick() })
	<-b.drained
	return b.m.Close()
}

// Remove closes b and deletes the board: its file and, in sem mode, its
// semaphore set.
func (b *Board) Remove() error {
	path, set, anon := b.m.Path(), b.sems, b.m.Anonymous()
	err := b.Close()
	if set != nil {
		err = errors.Join(err, set.Remove())
	}
	if anon {
		return err
	}
	return errors.Join(err, segment.Remove(path))
}

// RemoveBoard deletes the board called name in dir ("" for the default):
// its file and, in sem mode, its semaphore set (if it still carries the
// board's cookie). A board too damaged to read is removed all the same.
func RemoveBoard(dir, name string) error {
	if err := segment.ValidateName(name); err != nil {
		return opError("remove", "board", name, err)
	}
	path := segment.BoardPath(dir, name)
	var semErr error
	if m, h, _, err := segment.OpenBoard(path, time.Millisecond); err == nil {
		if h.WakeMode == layout.WakeSem {
			if set, err := attachSems(int(h.SemID), 0, h.SemCookie); err == nil {
				semErr = set.Remove()
			}
		}
		m.Close()
	}
	if err := segment.Remove(path); err != nil {
		return opError("remove", "board", name, err)
	}
	if semErr != nil {
		return &Error{Op: "remove", Kind: "board", Name: name, Err: fmt.Errorf("semaphore set: %w", semErr)}
	}
	return nil
}

// CheckBoard opens the board called name in dir ("" for the default) and
// checks it: the header against the file, then every cell (states, keys,
// where each key sits, revisions, the copies they name). It returns nil
// for a consistent board, or an error wrapping ErrCorrupt that names the
// first fault. Writes in progress are not faults.
func CheckBoard(dir, name string) error {
	b, err := openBoard(name, &OpenOptions{Dir: dir, Wait: time.Millisecond})
	if err != nil {
		return opError("check", "board", name, err)
	}
	defer b.Close()
	return b.Check()
}

// ListBoards returns the names of the boards in dir ("" for the default).
func ListBoards(dir string) ([]string, error) {
	return segment.ListBoards(dir)
}
