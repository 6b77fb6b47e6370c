//go:build darwin || freebsd

package sem

// darwin and freebsd have semget/semop/semctl (numbers from x/sys/unix) but no semtimedop, so
// Wait polls semop with IPC_NOWAIT, sleeping between attempts with a backoff capped at 1 ms.
// Attach checks the set size by probing GETVAL on semaphores n-1 (must exist) and n (must not)
// instead of decoding the OS-specific struct semid_ds.

import (
	"errors"
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
	getncnt    = 3
	getval     = 5
	setval     = 8

	minPoll = 20 * time.Microsecond
	maxPoll = time.Millisecond
)

// sembuf is struct sembuf from <sys/sem.h>.
type sembuf struct {
	num uint16
	op  int16
	flg int16
}

func semop(id int, op *sembuf) error {
	_, _, errno := unix.Syscall(unix.SYS_SEMOP, uintptr(id), uintptr(unsafe.Pointer(op)), 1)
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
	s := &Set{id: int(r), n: n}
	// POSIX leaves the initial values unspecified; make them 0 as documented.
	for i := range n {
		if err := s.SetValue(i, 0); err != nil {
			_ = s.Remove()
			return nil, err
		}
	}
	return s, nil
}

// CreateKey is not used on this platform: sets are made with Create.
func CreateKey(key int32, n int, mode os.FileMode) (*Set, error) {
	return nil, fmt.Errorf("sem: keyed sets: %w", errors.ErrUnsupported)
}

// Info is what the kernel says about a set.
type Info struct {
	Key       int32
	UID, CUID uint32
	Len       int
}

// Stat is not supported on this platform.
func Stat(id int) (Info, error) {
	return Info{}, fmt.Errorf("sem: IPC_STAT: %w", errors.ErrUnsupported)
}

// Lookup is not supported on this platform.
func Lookup(key int32) (*Set, Info, error) {
	return nil, Info{}, fmt.Errorf("sem: keyed sets: %w", errors.ErrUnsupported)
}

// Attach opens the existing set id and checks that it has exactly n semaphores; otherwise it
// returns an error wrapping ErrMismatch. A nonexistent id gives ErrRemoved.
func Attach(id, n int) (*Set, error) {
	if id < 0 {
		return nil, fmt.Errorf("semctl: invalid id %d: %w", id, ErrRemoved)
	}
	if n <= 0 {
		return nil, fmt.Errorf("sem: set %d: invalid size %d: %w", id, n, ErrMismatch)
	}
	if _, err := semctl(id, n-1, getval, 0); err != nil {
		if errors.Is(err, unix.EINVAL) {
			// Either the set is gone or it has fewer than n semaphores.
			if _, err0 := semctl(id, 0, getval, 0); err0 == nil {
				return nil, fmt.Errorf("sem: set %d has fewer than %d semaphores: %w", id, n, ErrMismatch)
			}
		}
		return nil, wrap("semctl GETVAL", err)
	}
	if _, err := semctl(id, n, getval, 0); err == nil {
		return nil, fmt.Errorf("sem: set %d has more than %d semaphores: %w", id, n, ErrMismatch)
	} else if !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("semctl GETVAL: %w", err)
	}
	return &Set{id: id, n: n}, nil
}

// Wait returns nil at once if word != nil and word.Load() != expected. Otherwise it decrements
// semaphore num by one, waiting until that is possible or the deadline passes (zero deadline:
// no deadline). It returns os.ErrDeadlineExceeded on timeout and an error wrapping ErrRemoved if
// the set is removed. Waiting is done by polling (see the file comment).
func (s *Set) Wait(num int, word *atomic.Uint32, expected uint32, deadline time.Time) error {
	if err := s.checkNum(num); err != nil {
		return err
	}
	if skipWait(word, expected) {
		return nil
	}
	pause := minPoll
	for {
		op := sembuf{num: uint16(num), op: -1, flg: ipcNowait}
		err := semop(s.id, &op)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			return wrap("semop", err)
		}
		d := pause
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			d = min(d, left)
		}
		time.Sleep(d)
		pause = min(2*pause, maxPoll)
	}
}

// post adds delta (> 0, so it never blocks) to semaphore num.
func post(id, num, delta int) error {
	op := sembuf{num: uint16(num), op: int16(delta)}
	for {
		err := semop(id, &op)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return wrap("semop", err)
		}
		return nil
	}
}

// setValue is SETVAL (its argument is passed differently on each system).
func setValue(id, num, v int) error { return semctlSetval(id, num, v) }
