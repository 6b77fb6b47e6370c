//go:build linux && (amd64 || arm64)

package mq

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Queue is an open POSIX message queue.
type Queue struct {
	fd   int
	name string
	size int
}

type mqAttr struct {
	flags, maxmsg, msgsize, curmsgs int64
	_                               [4]int64
}

// Create makes a new queue called name (no slash; it is added) and opens
// it for reading and writing. An existing queue of that name is an error.
func Create(name string, a Attr) (*Queue, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	attr := mqAttr{maxmsg: int64(a.MaxMsg), msgsize: int64(a.MsgSize)}
	fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)),
		uintptr(unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC), 0o600, uintptr(unsafe.Pointer(&attr)), 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("mq_open %q: %w", name, errno)
	}
	return &Queue{fd: int(fd), name: name, size: a.MsgSize}, nil
}

// Open opens the existing queue called name for reading and writing.
func Open(name string) (*Queue, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	fd, _, errno := unix.Syscall(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), uintptr(unix.O_RDWR|unix.O_CLOEXEC), 0)
	if errno != 0 {
		return nil, fmt.Errorf("mq_open %q: %w", name, errno)
	}
	var attr mqAttr
	if _, _, errno := unix.Syscall(unix.SYS_MQ_GETSETATTR, fd, 0, uintptr(unsafe.Pointer(&attr))); errno != 0 {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mq_getsetattr %q: %w", name, errno)
	}
	return &Queue{fd: int(fd), name: name, size: int(attr.msgsize)}, nil
}

// Close closes the descriptor; the queue remains until Unlink.
func (q *Queue) Close() error { return unix.Close(q.fd) }

// Unlink removes the queue's name.
func (q *Queue) Unlink() error { return Unlink(q.name) }

// Unlink removes the queue called name.
func Unlink(name string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if _, _, errno := unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0); errno != 0 {
		return fmt.Errorf("mq_unlink %q: %w", name, errno)
	}
	return nil
}

func timespec(deadline time.Time) *unix.Timespec {
	if deadline.IsZero() {
		return nil
	}
	ts := unix.NsecToTimespec(deadline.UnixNano())
	return &ts
}

// Send sends msg with priority prio (0 is least urgent), waiting until
// deadline (zero = forever) if the queue is full; os.ErrDeadlineExceeded
// when it passes.
func (q *Queue) Send(msg []byte, prio uint, deadline time.Time) error {
	var p unsafe.Pointer
	if len(msg) > 0 {
		p = unsafe.Pointer(&msg[0])
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_MQ_TIMEDSEND, uintptr(q.fd), uintptr(p), uintptr(len(msg)),
			uintptr(prio), uintptr(unsafe.Pointer(timespec(deadline))), 0)
		switch {
		case errno == 0:
			return nil
		case errno == unix.EINTR:
			continue
		case errno == unix.ETIMEDOUT:
			return os.ErrDeadlineExceeded
		}
		return fmt.Errorf("mq_timedsend: %w", errno)
	}
}

// Receive receives the oldest message of the highest priority into buf
// (which must hold the queue's message size) and returns its length and
// priority, waiting until deadline (zero = forever).
func (q *Queue) Receive(buf []byte, deadline time.Time) (int, uint, error) {
	if len(buf) < q.size {
		return 0, 0, errors.New("mq receive buffer smaller than the queue's message size")
	}
	var prio uint32
	for {
		n, _, errno := unix.Syscall6(unix.SYS_MQ_TIMEDRECEIVE, uintptr(q.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			uintptr(unsafe.Pointer(&prio)), uintptr(unsafe.Pointer(timespec(deadline))), 0)
		switch {
		case errno == 0:
			return int(n), uint(prio), nil
		case errno == unix.EINTR:
			continue
		case errno == unix.ETIMEDOUT:
			return 0, 0, os.ErrDeadlineExceeded
		}
		return 0, 0, fmt.Errorf("mq_timedreceive: %w", errno)
	}
}
