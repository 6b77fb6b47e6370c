//go:build linux && (amd64 || arm64)

package sem

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	ipcPrivate = 0
	ipcCreat   = 0o1000
	ipcExcl    = 0o2000
	ipcNowait  = 0o4000
	ipcRmid    = 0
	ipcStat    = 2
	getncnt    = 14
	getval     = 12
	setval     = 16
)

// sembuf is struct sembuf from <sys/sem.h>.
type sembuf struct {
	num uint16
	op  int16
	flg int16
}

func semctl(id, num, cmd int, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), arg, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// semtimedop is used for every operation: linux/arm64 has no semop system call.
// A nil ts means no timeout.
func semtimedop(id int, op *sembuf, ts *unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_SEMTIMEDOP, uintptr(id), uintptr(unsafe.Pointer(op)), 1,
		uintptr(unsafe.Pointer(ts)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Create makes a new private set (IPC_PRIVATE, IPC_CREAT|IPC_EXCL, permission bits from mode)
// of n semaphores, all 0.
func Create(n int, mode os.FileMode) (*Set, error) {
	if n <= 0 {
		return nil, fmt.Errorf("semget: invalid set size %d", n)
	}
	r, _, errno := unix.Syscall(unix.SYS_SEMGET, ipcPrivate, uintptr(n),
		uintptr(ipcCreat|ipcExcl|int(mode.Perm())))
	if errno != 0 {
		return nil, fmt.Errorf("semget: %w", errno)
	}
	return &Set{id: int(r), n: n}, nil
}

// CreateKey makes a new set of n semaphores, all 0, under key (which must
// not be 0, IPC_PRIVATE), so that it can be found again with Lookup by a
// process that knows only the key. A set already holding key gives an
// error wrapping os.ErrExist.
func CreateKey(key int32, n int, mode os.FileMode) (*Set, error) {
	if n <= 0 || key == ipcPrivate {
		return nil, fmt.Errorf("semget: invalid key %#x or set size %d", key, n)
	}
	r, _, errno := unix.Syscall(unix.SYS_SEMGET, uintptr(uint32(key)), uintptr(n),
		uintptr(ipcCreat|ipcExcl|int(mode.Perm())))
	if errno == unix.EEXIST {
		return nil, fmt.Errorf("semget key %#x: %w", key, os.ErrExist)
	}
	if errno != 0 {
		return nil, fmt.Errorf("semget key %#x: %w", key, errno)
	}
	return &Set{id: int(r), n: n}, nil
}

// Info is what the kernel says about a set (IPC_STAT).
type Info struct {
	Key       int32
	UID, CUID uint32 // owner and creator
	Len       int    // semaphores in the set
}

// Lookup finds the set holding key. No set under key gives an error
// wrapping os.ErrNotExist. The set it returns has the size the kernel
// reports; what it is for, the caller checks.
func Lookup(key int32) (*Set, Info, error) {
	if key == ipcPrivate {
		return nil, Info{}, fmt.Errorf("semget: key 0 (IPC_PRIVATE) names no set: %w", os.ErrNotExist)
	}
	r, _, errno := unix.Syscall(unix.SYS_SEMGET, uintptr(uint32(key)), 0, 0)
	if errno == unix.ENOENT {
		return nil, Info{}, fmt.Errorf("semget key %#x: %w", key, os.ErrNotExist)
	}
	if errno != 0 {
		return nil, Info{}, fmt.Errorf("semget key %#x: %w", key, errno)
	}
	id := int(r)
	info, err := Stat(id)
	if err != nil {
		return nil, Info{}, err
	}
	if info.Len <= 0 || info.Len > 1<<16 {
		return nil, Info{}, fmt.Errorf("sem: set %d has %d semaphores: %w", id, info.Len, ErrMismatch)
	}
	return &Set{id: id, n: info.Len}, info, nil
}

// Stat says what the kernel knows about the set id (IPC_STAT); a set that
// does not exist gives an error wrapping ErrRemoved.
func Stat(id int) (Info, error) {
	if id < 0 {
		return Info{}, fmt.Errorf("semctl IPC_STAT: invalid id %d: %w", id, ErrRemoved)
	}
	var ds semid64DS
	if _, err := semctl(id, 0, ipcStat, uintptr(unsafe.Pointer(&ds))); err != nil {
		return Info{}, wrap("semctl IPC_STAT", err)
	}
	return Info{Key: ds.perm.key, UID: ds.perm.uid, CUID: ds.perm.cuid, Len: int(ds.nsems)}, nil
}

// Attach opens the existing set id and checks (IPC_STAT) that it has exactly n semaphores;
// otherwise it returns an error wrapping ErrMismatch. A nonexistent id gives ErrRemoved.
func Attach(id, n int) (*Set, error) {
	if id < 0 {
		return nil, fmt.Errorf("semctl IPC_STAT: invalid id %d: %w", id, ErrRemoved)
	}
	// No IPC_64 (0x100) flag: the native semctl of 64-bit Linux always uses semid64_ds and
	// rejects cmd|IPC_64 with EINVAL (only old_semctl parses the version bit).
	var ds semid64DS
	if _, err := semctl(id, 0, ipcStat, uintptr(unsafe.Pointer(&ds))); err != nil {
		return nil, wrap("semctl IPC_STAT", err)
	}
	if int(ds.nsems) != n {
		return nil, fmt.Errorf("sem: set %d has %d semaphores, want %d: %w", id, ds.nsems, n, ErrMismatch)
	}
	return &Set{id: id, n: n}, nil
}

// Wait returns nil at once if word != nil and word.Load() != expected. Otherwise it decrements
// semaphore num by one, sleeping until that is possible or the deadline passes (zero deadline:
// no deadline). It returns os.ErrDeadlineExceeded on timeout and an error wrapping ErrRemoved if
// the set is removed. EINTR is retried with the remaining time recomputed.
func (s *Set) Wait(num int, word *atomic.Uint32, expected uint32, deadline time.Time) error {
	if err := s.checkNum(num); err != nil {
		return err
	}
	if skipWait(word, expected) {
		return nil
	}
	for {
		op := sembuf{num: uint16(num), op: -1}
		var tsp *unix.Timespec
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				// Deadline passed: still take a token that is already there.
				op.flg = ipcNowait
			} else {
				ts := unix.NsecToTimespec(int64(d))
				tsp = &ts
			}
		}
		err := semtimedop(s.id, &op, tsp)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if op.flg&ipcNowait != 0 {
				return os.ErrDeadlineExceeded
			}
			// Timed out: loop so that os.ErrDeadlineExceeded is only returned once
			// time.Until agrees the deadline has passed.
			continue
		default:
			return wrap("semtimedop", err)
		}
	}
}

// post adds delta (> 0, so it never blocks) to semaphore num.
func post(id, num, delta int) error {
	op := sembuf{num: uint16(num), op: int16(delta)}
	for {
		err := semtimedop(id, &op, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return wrap("semtimedop", err)
		}
		return nil
	}
}

// setValue is SETVAL.
func setValue(id, num, v int) error {
	_, err := semctl(id, num, setval, uintptr(v))
	return err
}
