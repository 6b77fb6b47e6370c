package shmbus

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/internal/segment"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
	"github.com/shmbus/shmbus/sem"
)

// sleeper is the wake primitive of doorbell num: semaphore 0 of the bus's
// set is the data doorbell, 1+i the space doorbell of lane i, and the last
// one holds the bus's cookie; with futexes every doorbell sleeps on its own
// word.
func (b *Bus) sleeper(num int) ring.Sleeper {
	if b.sems != nil {
		return b.sems.Sleeper(num)
	}
	return futex.Sleeper{}
}

// A sem-mode bus's set is made under a key derived from the segment file's
// device and inode, and its cookie (the value kept in its last semaphore)
// from them too. The header records the set's id as well, for attaching;
// but a segment truncated or damaged cannot be trusted to say which set is
// its own, and the key lets Remove find the set from the file alone:
// fstat, derive the key, semget, and check the cookie and creator. A key
// taken already (a collision, or a set leaked by an earlier bus whose inode
// the file reuses) moves on to the next of semKeyProbes; when all are
// taken the set is private (IPC_PRIVATE) and only the header finds it.
const semKeyProbes = 8

// fileIdentity is what a segment file's set key and cookie derive from.
type fileIdentity struct {
	dev, ino uint64
	uid      uint32
}

func identityOf(fi os.FileInfo) (fileIdentity, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileIdentity{}, false
	}
	return fileIdentity{dev: uint64(st.Dev), ino: uint64(st.Ino), uid: st.Uid}, true
}

func (id fileIdentity) hash(what string, probe int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(what))
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], id.dev)
	binary.LittleEndian.PutUint64(b[8:], id.ino)
	binary.LittleEndian.PutUint64(b[16:], uint64(probe))
	h.Write(b[:])
	return h.Sum64()
}

// semKey is the probe'th key for the set of the file id: positive, never 0
// (IPC_PRIVATE).
func (id fileIdentity) semKey(probe int) int32 {
	return int32(id.hash("shmbus sem key", probe)%(1<<31-1)) + 1
}

// semCookie is the cookie of the set of the file id: 1..32767.
func (id fileIdentity) semCookie() uint32 {
	return uint32(id.hash("shmbus sem cookie", 0)%32767) + 1
}

// createSems makes the semaphore set of a bus with lanes lanes whose
// segment is f: one semaphore per doorbell plus one holding the cookie that
// the header records, so that an attacher can tell the bus's set from an
// unrelated one that reused its id after removal.
func createSems(f *os.File, lanes int, mode os.FileMode) (*sem.Set, uint32, error) {
	var set *sem.Set
	err := sem.ErrRemoved // no keyed set yet
	var r [2]byte
	rand.Read(r[:])
	cookie := uint32(binary.LittleEndian.Uint16(r[:]))%32767 + 1
	if fi, serr := f.Stat(); serr == nil {
		if id, ok := identityOf(fi); ok {
			cookie = id.semCookie()
			for p := 0; p < semKeyProbes; p++ {
				set, err = sem.CreateKey(id.semKey(p), lanes+2, mode)
				if !errors.Is(err, os.ErrExist) {
					break
				}
			}
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, errors.ErrUnsupported) && !errors.Is(err, sem.ErrRemoved) {
		return nil, 0, fmt.Errorf("semaphore set: %w", err)
	}
	if set == nil {
		if set, err = sem.Create(lanes+2, mode); err != nil {
			return nil, 0, fmt.Errorf("semaphore set: %w", err)
		}
	}
	if onSemCreate != nil {
		onSemCreate(set.ID())
	}
	if err := set.SetValue(lanes+1, int(cookie)); err != nil {
		set.Remove()
		return nil, 0, fmt.Errorf("semaphore set: %w", err)
	}
	return set, cookie, nil
}

// semLeftError says which semaphore set Remove left behind and why.
type semLeftError struct {
	id     int
	reason string
}

func (e *semLeftError) Error() string {
	return fmt.Sprintf("left semaphore set %d behind: %s; if it is the bus's, remove it with 'ipcrm -s %d'", e.id, e.reason, e.id)
}

// removeSems removes the semaphore set of the bus whose segment file is
// path, trusting nothing in the segment it cannot check with the kernel:
// the set the header names (if the header is readable, or, if not, the id
// and cookie at their places in what is left of it) when its cookie and
// creator match, and every set under the file's keys whose cookie and
// creator match. It returns what it could not remove, or left because it
// could not prove it the bus's.
func removeSems(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return nil // no file, no bus: nothing to find the set by
	}
	fid, haveID := identityOf(fi)
	removed := map[int]bool{}
	var errs []error
	remove := func(set *sem.Set) {
		if err := set.Remove(); err != nil && !errors.Is(err, sem.ErrRemoved) {
			errs = append(errs, &semLeftError{set.ID(), err.Error()})
			return
		}
		removed[set.ID()] = true
	}
	// What the header says: the id and cookie, read raw so that a header
	// damaged elsewhere still gives them.
	if id, cookie, ok := rawSemFields(path); ok && id >= 0 {
		info, err := sem.Stat(int(id))
		switch {
		case errors.Is(err, sem.ErrRemoved):
		case err != nil:
			errs = append(errs, &semLeftError{int(id), "the header names it, and it cannot be inspected: " + err.Error()})
		case info.Len < 3:
			// Too small to be a bus's: the id was reused by another set.
		default:
			set, err := sem.Attach(int(id), info.Len)
			v := -1
			if err == nil {
				v, err = set.Value(info.Len - 1)
			}
			switch {
			case err != nil:
				errs = append(errs, &semLeftError{int(id), "the header names it, and it cannot be inspected: " + err.Error()})
			case uint32(v) == cookie && (!haveID || info.CUID == fid.uid):
				remove(set)
			case haveID && fid.semKeyOf(info.Key):
				// Found again below, by its key.
			default:
				if fi.Size() < layout.HeaderSize || !validHeader(path) {
					errs = append(errs, &semLeftError{int(id), "the damaged header names it, but its cookie or creator does not match the header's"})
				}
				// Else a valid header naming a set that is not the bus's: its
				// own set was removed and the id reused.
			}
		}
	}
	if !haveID {
		return errors.Join(errs...)
	}
	for p := 0; p < semKeyProbes; p++ {
		set, info, err := sem.Lookup(fid.semKey(p))
		if err != nil || removed[set.ID()] {
			continue // no set under this key (or none can be looked up here)
		}
		v, verr := set.Value(info.Len - 1)
		switch {
		case info.Len < 3:
		case verr == nil && uint32(v) == fid.semCookie() && info.CUID == fid.uid:
			remove(set)
		default:
			errs = append(errs, &semLeftError{set.ID(), fmt.Sprintf("it has the bus's key %#x, but not its cookie or creator", info.Key)})
		}
	}
	return errors.Join(errs...)
}

// semKeyOf says whether key is one of the file's set keys.
func (id fileIdentity) semKeyOf(key int32) bool {
	for p := 0; p < semKeyProbes; p++ {
		if id.semKey(p) == key {
			return true
		}
	}
	return false
}

// rawSemFields reads the semaphore set id and cookie from their places in
// the header of the file at path, without validating anything: hints, to
// be checked with the kernel.
func rawSemFields(path string) (id int32, cookie uint32, ok bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], layout.OffSemID); err != nil {
		return 0, 0, false
	}
	return int32(binary.LittleEndian.Uint32(b[0:])), binary.LittleEndian.Uint32(b[4:]), true
}

// validHeader says whether the segment at path opens.
func validHeader(path string) bool {
	m, _, _, err := segment.Open(path, -1)
	if err != nil {
		return false
	}
	m.Close()
	return true
}

// onSemCreate, if set (by tests), is told every semaphore set created.
var onSemCreate func(id int)

func attachSems(id, lanes int, cookie uint32) (*sem.Set, error) {
	set, err := sem.Attach(id, lanes+2)
	if err != nil {
		return nil, fmt.Errorf("semaphore set %d: %w", id, err)
	}
	v, err := set.Value(lanes + 1)
	if err != nil {
		return nil, fmt.Errorf("semaphore set %d: %w", id, err)
	}
	if uint32(v) != cookie {
		return nil, fmt.Errorf("semaphore set %d: %w: cookie %d, header says %d (set removed and its id reused?)", id, layout.ErrCorrupt, v, cookie)
	}
	return set, nil
}

type unsupportedWake struct{ m layout.WakeMode }

func (e *unsupportedWake) Error() string {
	return fmt.Sprintf("wake mode %v not supported on this platform", e.m)
}

func (e *unsupportedWake) Unwrap() error { return ErrUnsupported }
