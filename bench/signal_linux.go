package bench

import (
	"bufio"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The signal method: a round trip of SIGUSR1 between two threads, each
// on a goroutine locked to its OS thread with SIGUSR1 and SIGUSR2 blocked,
// waiting in rt_sigtimedwait. tgkill aims each signal at the waiting
// thread, so the runtime's handler (which runs on whatever thread has the
// signal unblocked) never sees it. SIGUSR2 ends the peer.

const (
	pingSignal = unix.SIGUSR1
	endSignal  = unix.SIGUSR2
	siTKILL    = -6 // si_code of a signal sent by tkill/tgkill
)

var signalMethod = &method{
	name:         "signal",
	desc:         "SIGUSR1 between two threads (tgkill, rt_sigtimedwait)",
	api:          "tgkill; rt_sigtimedwait on a LockOSThread'd goroutine with the signal blocked (x/sys/unix, raw syscall)",
	payload:      "none",
	props:        Properties{Connectionless: true},
	notes:        "A standard signal carries no data and pending ones of one number merge, so it is not reliable and has no flow control; real-time signals queue (up to RLIMIT_SIGPENDING, then the sender gets EAGAIN) and carry one int (sigqueue). Notification only: no throughput.",
	fixed:        0,
	noThroughput: "n/a: notification only",
	lockThread:   true,
	setup: func(c *cell) error {
		old, err := blockSignals()
		if err != nil {
			return err
		}
		c.names["tid"] = strconv.Itoa(unix.Gettid())
		c.cleanups = append(c.cleanups, func() error {
			// Take whatever is still pending, then unblock.
			set := signalSet()
			var zero unix.Timespec
			for sigtimedwait(&set, nil, &zero) > 0 {
			}
			return unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		})
		return nil
	},
	open: func(s *side) (endpoint, error) {
		if s.parent {
			// The peer sends its thread id on the result pipe.
			line, err := bufio.NewReader(s.res).ReadString('\n')
			if err != nil {
				return nil, s.gone(fmt.Errorf("peer's thread id: %w", err))
			}
			tid, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				return nil, fmt.Errorf("peer's thread id %q", line)
			}
			return &signalEP{s: s, pid: s.peer, tid: tid}, nil
		}
		runtime.LockOSThread() // for the rest of the peer's life
		if _, err := blockSignals(); err != nil {
			return nil, err
		}
		tid, _ := strconv.Atoi(s.names["tid"])
		if _, err := fmt.Fprintf(s.res, "%d\n", unix.Gettid()); err != nil {
			return nil, err
		}
		return &signalEP{s: s, pid: s.peer, tid: tid}, nil
	},
}

func signalSet() unix.Sigset_t {
	var set unix.Sigset_t
	for _, sig := range []unix.Signal{pingSignal, endSignal} {
		set.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	}
	return set
}

// blockSignals blocks the method's signals on this thread.
func blockSignals() (old unix.Sigset_t, err error) {
	set := signalSet()
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return old, fmt.Errorf("sigprocmask: %w", err)
	}
	return old, nil
}

// siginfo is the start of the kernel's siginfo_t on 64-bit Linux, with
// the sender's pid of a kill/tgkill.
type siginfo struct {
	signo, errno, code, _ int32
	pid, uid              int32
	_                     [104]byte
}

// sigtimedwait waits (for at most *ts, forever if ts is nil) for a signal
// of set and returns it, or -errno.
func sigtimedwait(set *unix.Sigset_t, info *siginfo, ts *unix.Timespec) int {
	r, _, errno := unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(set)), uintptr(unsafe.Pointer(info)),
		uintptr(unsafe.Pointer(ts)), 8, 0, 0)
	if errno != 0 {
		return -int(errno)
	}
	return int(r)
}

type signalEP struct {
	s        *side
	pid, tid int // the other side's waiting thread
}

func (e *signalEP) send([]byte) error {
	if err := unix.Tgkill(e.pid, e.tid, pingSignal); err != nil {
		return e.s.gone(fmt.Errorf("tgkill: %w", err))
	}
	return nil
}

func (e *signalEP) sendEnd() error {
	if err := unix.Tgkill(e.pid, e.tid, endSignal); err != nil {
		return fmt.Errorf("tgkill: %w", err)
	}
	return nil
}

// recv waits for the next signal; the measuring side looks at the abort
// flag every 50ms.
func (e *signalEP) recv([]byte) (int, error) {
	set := signalSet()
	var ts *unix.Timespec
	if e.s.parent {
		ts = &unix.Timespec{Nsec: 50e6}
	}
	for {
		var info siginfo
		sig := sigtimedwait(&set, &info, ts)
		switch {
		case sig == -int(unix.EINTR):
			continue
		case sig == -int(unix.EAGAIN):
			if e.s.abort.Load() {
				return 0, errAborted
			}
			continue
		case sig < 0:
			return 0, fmt.Errorf("rt_sigtimedwait: %w", unix.Errno(-sig))
		case info.code != siTKILL || int(info.pid) != e.pid:
			return 0, fmt.Errorf("signal %d from pid %d (code %d), want one from the peer %d", sig, info.pid, info.code, e.pid)
		case unix.Signal(sig) == endSignal:
			return 0, errEnd
		}
		return 0, nil
	}
}

func (e *signalEP) close() error { return nil }
