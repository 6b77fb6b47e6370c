// Package segment owns the file and the mapping of a shmbus segment: naming,
// creating, opening, validating the header, unlinking and listing. It knows
// nothing about rings; the format itself is package layout.
//
// Guarantees:
//
//   - No partial files. Create makes the file with O_EXCL, sets its mode
//     exactly (the umask has no say), reserves every page up front (on Linux
//     with fallocate, so a full /dev/shm fails in Create with ErrNoSpace
//     rather than later as SIGBUS) and maps it. If any step fails the file is
//     unmapped, closed and unlinked before Create returns.
//   - Nothing is trusted from the file. Open never follows a symbolic link,
//     accepts only regular files, reads the header through atomic loads until
//     the creator's ready word is set, then decodes a private copy of it and
//     validates it (layout.Header.Validate) against the real file size from
//     fstat. Every offset a caller uses comes from the recomputed Geometry.
//     Open never panics on any file content and never waits longer than it
//     was told to.
//   - No SIGBUS crash when guarded. A peer may ftruncate a shared file under
//     every mapping of it; touching a page past the new end raises SIGBUS.
//     Reads and writes of a mapping done inside Guard turn that fault into an
//     error wrapping ErrTruncated (and layout.ErrCorrupt). Open and Create
//     guard their own accesses.
//
// The package never prints, logs or exits.
package segment

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/internal/failpoint"
	"github.com/shmbus/shmbus/layout"
)

// Prefix is the start of every segment file name.
const Prefix = "shmbus."

// DefaultDir is where segments live unless $SHMBUS_DIR says otherwise.
const DefaultDir = "/dev/shm"

// MaxNameLen is the longest valid bus name.
const MaxNameLen = 200

// DefaultWait is how long Open waits for a creator to finish when it is
// given a wait of zero.
const DefaultWait = time.Second

// Errors. The re-exported os errors are what errors.Is matches for existing,
// missing and forbidden files.
var (
	ErrBadName = errors.New("invalid bus name")
	// ErrTruncated means the file is smaller than its mapping (a peer
	// truncated it); it wraps layout.ErrCorrupt.
	ErrTruncated = fmt.Errorf("segment truncated: %w", layout.ErrCorrupt)
	// ErrNoSpace means the file system could not reserve the segment's pages.
	ErrNoSpace = errors.New("no space for segment")
	// ErrNotRegular means the path names something other than a regular file
	// (a directory, a FIFO, a device, a symbolic link, ...).
	ErrNotRegular = errors.New("not a regular file")

	ErrExist      = os.ErrExist
	ErrNotExist   = os.ErrNotExist
	ErrPermission = os.ErrPermission
)

// Dir is the directory buses live in: $SHMBUS_DIR if set and non-empty,
// else /dev/shm.
func Dir() string {
	if d := os.Getenv("SHMBUS_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

// ValidateName checks a bus name: 1..MaxNameLen characters from
// [A-Za-z0-9._-] that start with a letter, a digit or "_", and no ".."
// anywhere. A leading "-" would read as an option on a command line, and a
// leading "." hides the file from ls(1).
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrBadName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q is %d bytes, at most %d allowed", ErrBadName, name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q: byte %#x at %d is not one of [A-Za-z0-9._-]", ErrBadName, name, c, i)
		}
	}
	if c := name[0]; c == '-' || c == '.' {
		return fmt.Errorf("%w: %q starts with %q (a name must start with a letter, a digit or \"_\")", ErrBadName, name, c)
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("%w: %q: \"..\" is not allowed", ErrBadName, name)
	}
	return nil
}

// Path is the segment file for name in dir ("" means Dir()). It does not
// validate name; call ValidateName first.
func Path(dir, name string) string {
	if dir == "" {
		dir = Dir()
	}
	return filepath.Join(dir, Prefix+name)
}

// Mapping is a mapped segment file. The file stays open until Close.
type Mapping struct {
	mu     sync.Mutex
	mm     mmap.MMap // as returned by mmap; the only slice ever unmapped
	file   *os.File
	path   string
	anon   bool // a memfd: path is a label, not a file name
	closed bool
}

// Bytes is the whole mapping; its length is the file size at mapping time.
// It is nil after Close.
func (m *Mapping) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mm
}

// Path is the path the segment was created or opened at ("memfd:" and a
// label for a memfd, "fd:" and the descriptor's number for a segment opened
// from a descriptor whose name is unknown).
func (m *Mapping) Path() string { return m.path }

// Anonymous says whether the segment has no name in any directory (a memfd,
// or a descriptor received from another process): nothing can be placed
// beside it.
func (m *Mapping) Anonymous() bool { return m.anon }

// File is the open segment file (for fd passing and locking). It is closed
// by Close.
func (m *Mapping) File() *os.File { return m.file }

// Close unmaps the segment and closes the file. It returns both errors
// joined; calls after the first return nil. Slices obtained from Bytes must
// not be used afterwards.
func (m *Mapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var uerr error
	if m.mm != nil {
		uerr = m.mm.Unmap()
		if uerr != nil {
			uerr = fmt.Errorf("unmap segment %q: %w", m.path, uerr)
		}
	}
	cerr := m.file.Close()
	return errors.Join(uerr, cerr)
}

// SizeOK checks with fstat that the file still has the size it was mapped
// with. A different size yields an error wrapping ErrTruncated.
func (m *Mapping) SizeOK() error {
	m.mu.Lock()
	n := int64(len(m.mm))
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return fmt.Errorf("segment %q: %w", m.path, os.ErrClosed)
	}
	fi, err := m.file.Stat()
	if err != nil {
		return fmt.Errorf("segment %q: %w", m.path, err)
	}
	if fi.Size() != n {
		return fmt.Errorf("segment %q: %w: file is %d bytes, mapped %d", m.path, ErrTruncated, fi.Size(), n)
	}
	return nil
}

// Guard runs f with debug.SetPanicOnFault(true) on the calling goroutine
// (the previous setting is restored afterwards) and turns a memory fault in
// f — what touching a page of a mapping past the end of a truncated file
// raises — into an error wrapping ErrTruncated. Any other panic is
// propagated. Only accesses made by f on the calling goroutine are covered.
func Guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	done := false
	defer func() {
		if done {
			return
		}
		r := recover()
		if r == nil {
			return // runtime.Goexit: let it proceed
		}
		if re, ok := r.(runtime.Error); ok {
			if a, ok := re.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%w: memory fault at %#x: %v", ErrTruncated, a.Addr(), re)
				return
			}
		}
		panic(r)
	}()
	err = f()
	done = true
	return err
}

// Create makes a new segment file of exactly size bytes at path with
// permissions exactly mode (0 means 0600; only permission bits are allowed),
// reserves its pages and maps it read-write shared, every page prefaulted.
// The content is all zero; the caller writes the header and stores the ready
// word last. An existing path (a symbolic link included) yields an error
// wrapping ErrExist; a file system without room for size bytes, one wrapping
// ErrNoSpace. On any failure no file is left behind.
func Create(path string, size int64, mode os.FileMode) (*Mapping, error) {
	return CreateContext(context.Background(), path, size, mode)
}

// CreateContext is Create that gives up when ctx is done while it reserves
// and prefaults the pages (it looks every createChunk bytes): the error
// then wraps ctx.Err(), and, as on any failure, no file is left behind.
// A segment of many gigabytes takes seconds to reserve; this is how an
// interrupted create stops.
func CreateContext(ctx context.Context, path string, size int64, mode os.FileMode) (*Mapping, error) {
	m, err := create(ctx, path, size, mode)
	if err != nil {
		return nil, fmt.Errorf("create segment %q: %w", path, err)
	}
	return m, nil
}

// createChunk is how much of a new segment is reserved, or prefaulted,
// between two looks at the context (a multiple of every page size).
const createChunk = 16 << 20

func create(ctx context.Context, path string, size int64, mode os.FileMode) (_ *Mapping, err error) {
	if mode == 0 {
		mode = 0o600
	}
	if mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("%w: mode %v has bits other than permissions", os.ErrInvalid, mode)
	}
	if size <= 0 || uint64(size) > math.MaxInt {
		return nil, fmt.Errorf("%w: size %d", os.ErrInvalid, size)
	}
	fd, err := openFD(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	var mm mmap.MMap
	defer func() {
		if err == nil {
			return
		}
		if mm != nil {
			_ = mm.Unmap()
		}
		// Unlink only if path still names the file we made.
		if fi, serr := f.Stat(); serr == nil {
			if li, lerr := os.Lstat(path); lerr == nil && os.SameFile(fi, li) {
				_ = unix.Unlink(path)
			}
		}
		_ = f.Close()
	}()
	if err := f.Chmod(mode); err != nil {
		return nil, err
	}
	step := func() error {
		failpoint.CreateStep.Fire()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("creation given up: %w", err)
		}
		return nil
	}
	if err := step(); err != nil {
		return nil, err
	}
	if err := allocate(f, size, step); err != nil {
		return nil, err
	}
	mm, err = mmap.MapRegion(f, int(size), mmap.RDWR, 0, 0)
	if err != nil {
		mm = nil
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	for off := 0; off < len(mm); off += createChunk {
		if err := step(); err != nil {
			return nil, err
		}
		if err := prefault(mm[off:min(off+createChunk, len(mm))], true); err != nil {
			return nil, err
		}
	}
	return &Mapping{mm: mm, file: f, path: path}, nil
}

// Open maps the existing segment at path and validates its header against
// the real file size. A segment whose creator has not finished (file too
// small, magic or ready word not yet written) is re-checked with short sleeps
// for up to wait (0 means DefaultWait, negative means check once) and then
// yields an error wrapping layout.ErrNotReady. A malformed segment yields
// layout.ErrCorrupt, another format version layout.ErrVersion, a missing file
// ErrNotExist, a forbidden one ErrPermission, and anything but a regular file
// (symbolic links are not followed) ErrNotRegular.
func Open(path string, wait time.Duration) (*Mapping, layout.Header, layout.Geometry, error) {
	m, h, g, err := open(path, wait)
	if err != nil {
		return nil, layout.Header{}, layout.Geometry{}, fmt.Errorf("open segment %q: %w", path, err)
	}
	return m, h, g, nil
}

func open(path string, wait time.Duration) (*Mapping, layout.Header, layout.Geometry, error) {
	f, err := openPath(path)
	if err != nil {
		return nil, layout.Header{}, layout.Geometry{}, err
	}
	mm, h, g, err := attach(f, wait)
	if err != nil {
		f.Close()
		return nil, layout.Header{}, layout.Geometry{}, err
	}
	return &Mapping{mm: mm, file: f, path: path}, h, g, nil
}

// openPath opens the existing segment file at path read-write, never
// following a symbolic link and never blocking on a FIFO.
func openPath(path string) (*os.File, error) {
	fd, err := openFD(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if err == unix.EISDIR {
			return nil, fmt.Errorf("%w: is a directory", ErrNotRegular)
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) {
			// O_NOFOLLOW fails with ELOOP (Linux, macOS), EMLINK (FreeBSD)
			// or EFTYPE (NetBSD): say what it means.
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
				return nil, fmt.Errorf("%w: is a symbolic link, which is never followed", ErrNotRegular)
			}
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	// O_NONBLOCK only kept a FIFO from blocking the open; a regular file gets
	// ordinary blocking mode back before it becomes an *os.File.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("clear O_NONBLOCK: %w", err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenFD maps the segment open in f — a descriptor inherited or received
// from another process (a memfd from the daemon, for instance) — and
// validates its header against the file's real size exactly as Open does.
// f is not kept: the mapping holds a duplicate of the descriptor, so the
// caller closes f when it likes. label names the segment in errors and is
// its Path (use "" for "fd:N").
func OpenFD(f *os.File, label string, wait time.Duration) (*Mapping, layout.Header, layout.Geometry, error) {
	if label == "" {
		label = fmt.Sprintf("fd:%d", f.Fd())
	}
	m, h, g, err := openDescriptor(f, label, wait)
	if err != nil {
		return nil, layout.Header{}, layout.Geometry{}, fmt.Errorf("open segment %q: %w", label, err)
	}
	return m, h, g, nil
}

func openDescriptor(f *os.File, label string, wait time.Duration) (*Mapping, layout.Header, layout.Geometry, error) {
	dup, err := dupDescriptor(f, label)
	if err != nil {
		return nil, layout.Header{}, layout.Geometry{}, err
	}
	mm, h, g, err := attach(dup, wait)
	if err != nil {
		dup.Close()
		return nil, layout.Header{}, layout.Geometry{}, err
	}
	return &Mapping{mm: mm, file: dup, path: label, anon: true}, h, g, nil
}

// dupDescriptor duplicates f, which must be open for reading and writing.
func dupDescriptor(f *os.File, label string) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup descriptor: %w", err)
	}
	acc, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil && acc&unix.O_ACCMODE != unix.O_RDWR {
		err = fmt.Errorf("%w: descriptor is not open for reading and writing", os.ErrPermission)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), label), nil
}

// fileSize is the size of f, which must be a regular file.
func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("%w: mode %v", ErrNotRegular, fi.Mode())
	}
	return fi.Size(), nil
}

// attach waits for the bus segment in f to be ready, validates it and maps it.
func attach(f *os.File, wait time.Duration) (mmap.MMap, layout.Header, layout.Geometry, error) {
	var h layout.Header
	var g layout.Geometry
	mm, err := attachKind(f, wait, busKind, func(page []byte, size int64) (uint64, error) {
		var err error
		if h, err = layout.DecodeHeader(page); err != nil {
			return 0, err
		}
		if g, err = h.Validate(size); err != nil {
			return 0, err
		}
		return h.TotalSize, nil
	})
	if err != nil {
		return nil, layout.Header{}, layout.Geometry{}, err
	}
	return mm, h, g, nil
}

// kind is what attaching needs to know of a kind of segment.
type kind struct {
	magic   [8]byte
	version uint32
	name    string // "bus", "board"
	other   [8]byte
	otherIs string // what a segment with the other magic is
}

var (
	busKind   = kind{layout.Magic, layout.Version, "bus", layout.BoardMagic, "a board, not a bus"}
	boardKind = kind{layout.BoardMagic, layout.BoardVersion, "board", layout.Magic, "a bus, not a board"}
)

// attachKind waits for the segment of kind k in f to be ready, has its
// private copy of the header page decoded and validated by validate (which
// returns the size to map) and maps it.
func attachKind(f *os.File, wait time.Duration, k kind, validate func(page []byte, size int64) (uint64, error)) (mmap.MMap, error) {
	if wait == 0 {
		wait = DefaultWait
	}
	deadline := time.Now().Add(wait)
	delay := 500 * time.Microsecond

	var hdr mmap.MMap // the header page only, while waiting for the creator
	defer func() {
		if hdr != nil {
			_ = hdr.Unmap()
		}
	}()
	var page []byte // private copy of the header page once ready
	var size int64
	for {
		var err error
		size, err = fileSize(f)
		if err != nil {
			return nil, err
		}
		var notReady error
		var version uint32
		if size < layout.HeaderSize {
			notReady = fmt.Errorf("%w: file is %d bytes, header needs %d", layout.ErrNotReady, size, layout.HeaderSize)
		} else {
			if hdr == nil {
				hdr, err = mmap.MapRegion(f, layout.HeaderSize, mmap.RDONLY, 0, 0)
				if err != nil {
					hdr = nil
					return nil, fmt.Errorf("mmap header: %w", err)
				}
			}
			err = Guard(func() error {
				var e error
				page, version, e = readHeader(hdr, k)
				return e
			})
			if errors.Is(err, layout.ErrNotReady) {
				notReady, err = err, nil
			}
			if err != nil {
				return nil, err
			}
		}
		if notReady == nil {
			break
		}
		now := time.Now()
		if wait < 0 || !now.Before(deadline) {
			if version != 0 && version != k.version {
				// Probably a segment of another format whose ready word
				// is elsewhere: say so rather than "not ready".
				return nil, fmt.Errorf("%w: %s version %d, this build reads %d (and the ready word is not set)",
					layout.ErrVersion, k.name, version, k.version)
			}
			return nil, fmt.Errorf("%w (gave up after %v)", notReady, wait)
		}
		time.Sleep(min(delay, deadline.Sub(now)))
		delay = min(2*delay, 20*time.Millisecond)
	}

	total, err := validate(page, size)
	if err != nil {
		return nil, err
	}
	if total > math.MaxInt {
		return nil, fmt.Errorf("%w: total size %d does not fit in memory", layout.ErrCorrupt, total)
	}
	mm, err := mmap.MapRegion(f, int(total), mmap.RDWR, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", total, err)
	}
	fail := func(err error) (mmap.MMap, error) {
		_ = mm.Unmap()
		return nil, err
	}
	// The size was validated before mapping; make sure it did not change
	// between the two, so the whole mapping is backed by the file.
	if now, err := fileSize(f); err != nil {
		return fail(err)
	} else if now != int64(len(mm)) {
		return fail(fmt.Errorf("%w: file changed from %d to %d bytes while being opened", ErrTruncated, len(mm), now))
	}
	// No prefault here: opening costs the same for a 1 MiB and a 1 GiB
	// segment, and a page is faulted in where it is first used. Create
	// populated and reserved every page once; a file truncated since then
	// is caught by the size check above or, later, by Guard as
	// ErrTruncated.
	return mm, nil
}

// readHeader looks at the header page b of a segment that may still be
// being initialised by another process, using only atomic loads until the
// ready word says the rest has been written. It returns a private copy of
// the page once ready; an error wrapping layout.ErrNotReady while the magic
// is incomplete or the ready word unset (with the version word, if any, for
// the caller's diagnosis); and one wrapping layout.ErrCorrupt if the magic is
// wrong.
func readHeader(b []byte, k kind) ([]byte, uint32, error) {
	var magic [8]byte
	for i := 0; i < 8; i += 4 {
		w := layout.Word32(b, uint64(layout.OffMagic+i)).Load()
		magic[i], magic[i+1], magic[i+2], magic[i+3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
	}
	if magic != k.magic {
		if magic == k.other {
			return nil, 0, fmt.Errorf("%w: %s", layout.ErrCorrupt, k.otherIs)
		}
		// The creator may be in the middle of writing it: every byte
		// either still zero or already right.
		for i, c := range magic {
			if c != 0 && c != k.magic[i] {
				return nil, 0, fmt.Errorf("%w: bad magic % x", layout.ErrCorrupt, magic[:])
			}
		}
		return nil, 0, fmt.Errorf("%w: magic not written yet", layout.ErrNotReady)
	}
	version := layout.Word32(b, layout.OffVersion).Load()
	if r := layout.Word32(b, layout.OffReady).Load(); r != layout.ReadyValue {
		return nil, version, fmt.Errorf("%w: ready word %#x", layout.ErrNotReady, r)
	}
	// Ready was stored last: the rest of the header is complete.
	return slices.Clone(b[:layout.HeaderSize]), version, nil
}

// sink keeps the page-touching reads of touchPages from being optimised out.
var sink atomic.Uint64

// touchPages reads one byte of every page of b, faulting them in. It must
// run inside Guard.
func touchPages(b []byte) {
	ps := os.Getpagesize()
	var sum uint64
	for i := 0; i < len(b); i += ps {
		sum += uint64(b[i])
	}
	sink.Add(sum)
}

// Remove unlinks the segment file at path. A missing file yields an error
// wrapping ErrNotExist. Mappings of it stay valid until closed.
func Remove(path string) error {
	if err := unix.Unlink(path); err != nil {
		return fmt.Errorf("remove segment: %w", &os.PathError{Op: "unlink", Path: path, Err: err})
	}
	return nil
}

// List returns the names, without Prefix and sorted, of the segment files in
// dir ("" means Dir()): regular files whose name is Prefix followed by a
// valid bus name.
func List(dir string) ([]string, error) {
	if dir == "" {
		dir = Dir()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), Prefix)
		if !ok || ValidateName(name) != nil || !e.Type().IsRegular() {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// openFD is open(2), retried on EINTR.
func openFD(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// OpenFile maps an existing regular file of at least min bytes read-write,
// without interpreting its content: for the side files of a bus (the
// consumer's reassembly files), whose own headers their users validate.
// Symbolic links are refused. If accept is not nil it is shown the fstat of
// the opened descriptor — the very file that would be mapped, not whatever
// the name points to by then — and an error from it is returned (wrapped)
// before anything is mapped.
func OpenFile(path string, min int64, accept func(os.FileInfo) error) (*Mapping, error) {
	fd, err := openFD(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open %q: clear O_NONBLOCK: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if accept != nil {
		fi, err := f.Stat()
		if err == nil {
			err = accept(fi)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open %q: %w", path, err)
		}
	}
	size, err := fileSize(f)
	if err == nil && size < min {
		err = fmt.Errorf("%w: %d bytes, need at least %d", layout.ErrCorrupt, size, min)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	mm, err := mmap.MapRegion(f, int(size), mmap.RDWR, 0, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("map %q: %w", path, err)
	}
	return &Mapping{mm: mm, file: f, path: path}, nil
}
