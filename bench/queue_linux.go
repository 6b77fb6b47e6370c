package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/shmbus/shmbus/internal/mq"
	"golang.org/x/sys/unix"
)

// The kernel's message queues: POSIX (mq_open) and System V (msgget).

var posixMQMethod = &method{
	name:    "posix-mq",
	desc:    "POSIX message queues, one each way",
	api:     "mq_open, mq_timedsend, mq_timedreceive (raw syscalls, internal/mq)",
	payload: "bytes",
	props:   Properties{Reliable: true, FlowControl: true, Records: true, Priorities: true},
	notes: "Queue depth fs.mqueue.msg_max (10 by default), fewer for messages so large that two queues would pass " +
		"RLIMIT_MSGQUEUE. Without CAP_SYS_RESOURCE a message is at most fs.mqueue.msgsize_max; with it, RLIMIT_MSGQUEUE bounds both queues together.",
	fixed: -1,
	limit: mqLimit,
	setup: func(c *cell) error {
		depth, err := mqDepth(c.size)
		if err != nil {
			return err
		}
		for _, n := range []string{"ping", "pong"} {
			name := "shmbus-" + c.name + "-" + n
			q, err := mq.Create(name, mq.Attr{MaxMsg: depth, MsgSize: c.size})
			if err != nil {
				return fmt.Errorf("%w (queue depth %d, message size %d)", err, depth, c.size)
			}
			c.cleanups = append(c.cleanups, func() error { return errors.Join(q.Close(), q.Unlink()) })
			c.names[n] = name
			c.shared = append(sliceOf[*mq.Queue](c.shared), q)
		}
		return nil
	},
	open: func(s *side) (endpoint, error) {
		if s.parent {
			qs := sliceOf[*mq.Queue](s.shared)
			return &posixMQParent{s: s, ping: qs[0], pong: qs[1], scratch: make([]byte, s.size)}, nil
		}
		r, err := mq.Open(s.names["ping"])
		if err != nil {
			return nil, err
		}
		w, err := mq.Open(s.names["pong"])
		if err != nil {
			r.Close()
			return nil, err
		}
		return &posixMQPeer{r: r, w: w}, nil
	},
}

func sliceOf[T any](v any) []T {
	s, _ := v.([]T)
	return s
}

// mqLimit is the largest POSIX queue message possible here.
func mqLimit() (int, string) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &rl); err != nil {
		return 0, ""
	}
	// Two queues of one message each must fit the user's RLIMIT_MSGQUEUE
	// (each message costs its size plus the kernel's bookkeeping).
	byRlimit := int(rl.Cur/2) - mqOverhead
	if hasCapability(unix.CAP_SYS_RESOURCE) {
		return min(byRlimit, 16<<20), fmt.Sprintf("RLIMIT_MSGQUEUE %d B for two queues", rl.Cur)
	}
	max, err := readProcInt("/proc/sys/fs/mqueue/msgsize_max")
	if err != nil {
		return 0, ""
	}
	if byRlimit < max {
		return byRlimit, fmt.Sprintf("RLIMIT_MSGQUEUE %d B for two queues", rl.Cur)
	}
	return max, "fs.mqueue.msgsize_max"
}

// mqOverhead is a generous bound of what the kernel charges per queued
// message beyond its bytes (struct msg_msg and a priority tree node).
const mqOverhead = 128

// mqDepth is the queue depth for messages of size bytes: fs.mqueue.msg_max,
// or fewer if two such queues would pass RLIMIT_MSGQUEUE.
func mqDepth(size int) (int, error) {
	depth, err := readProcInt("/proc/sys/fs/mqueue/msg_max")
	if err != nil {
		depth = 10
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &rl); err == nil {
		depth = min(depth, int(rl.Cur)/2/(size+mqOverhead))
	}
	if depth < 1 {
		return 0, fmt.Errorf("messages of %d bytes do not fit RLIMIT_MSGQUEUE", size)
	}
	return depth, nil
}

// hasCapability reports whether cap is in this process's effective set.
func hasCapability(cap int) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && bits&(1<<cap) != 0
		}
	}
	return false
}

// posixMQParent is the measuring side, through internal/mq. Its calls
// block without a deadline; abort wakes them by putting a message in the
// queue it reads and taking one from the queue it writes.
type posixMQParent struct {
	s          *side
	ping, pong *mq.Queue
	scratch    []byte
}

func (e *posixMQParent) send(msg []byte) error {
	if err := e.ping.Send(msg, 0, time.Time{}); err != nil {
		return e.s.gone(err)
	}
	if e.s.abort.Load() {
		return errAborted
	}
	return nil
}

func (e *posixMQParent) recv(buf []byte) (int, error) {
	n, _, err := e.pong.Receive(buf, time.Time{})
	if err != nil {
		return 0, e.s.gone(err)
	}
	if e.s.abort.Load() {
		return 0, errAborted
	}
	return n, nil
}

func (e *posixMQParent) abort() {
	soon := time.Now().Add(10 * time.Millisecond)
	e.pong.Send(make([]byte, 8), 0, soon)
	e.ping.Receive(e.scratch, soon)
}

func (e *posixMQParent) close() error { return nil }

// posixMQPeer is the peer's side: the same calls, on the queues the
// measuring side created, opened by name.
type posixMQPeer struct{ r, w *mq.Queue }

func (e *posixMQPeer) send(msg []byte) error { return e.w.Send(msg, 0, time.Time{}) }

func (e *posixMQPeer) recv(buf []byte) (int, error) {
	n, _, err := e.r.Receive(buf, time.Time{})
	return n, err
}

func (e *posixMQPeer) close() error { return errors.Join(e.r.Close(), e.w.Close()) }

var sysvMsgqMethod = &method{
	name:    "sysv-msgq",
	desc:    "System V message queues, one each way",
	api:     "msgget, msgsnd, msgrcv, msgctl (raw syscalls: x/sys/unix has no wrappers)",
	payload: "bytes",
	props:   Properties{Connectionless: true, Reliable: true, FlowControl: true, Records: true, Priorities: true},
	notes:   "Priorities are message types: msgrcv with a negative type takes the lowest type first. A queue holds kernel.msgmnb bytes; a message is at most kernel.msgmax, for root too.",
	fixed:   -1,
	limit: func() (int, string) {
		n, err := readProcInt("/proc/sys/kernel/msgmax")
		if err != nil {
			return 0, ""
		}
		return n, "kernel.msgmax"
	},
	setup: func(c *cell) error {
		for _, n := range []string{"ping", "pong"} {
			id, _, errno := unix.Syscall(unix.SYS_MSGGET, unix.IPC_PRIVATE, unix.IPC_CREAT|0o600, 0)
			if errno != 0 {
				return fmt.Errorf("msgget: %w", errno)
			}
			if onMsgget != nil {
				onMsgget(int(id))
			}
			c.cleanups = append(c.cleanups, func() error { return msgRemove(int(id)) })
			c.abortOpens = append(c.abortOpens, func() { msgRemove(int(id)) })
			c.names[n] = strconv.Itoa(int(id))
		}
		return nil
	},
	open: func(s *side) (endpoint, error) {
		ping, _ := strconv.Atoi(s.names["ping"])
		pong, _ := strconv.Atoi(s.names["pong"])
		e := &sysvMsgq{s: s, w: ping, r: pong, buf: make([]byte, 8+s.size)}
		if !s.parent {
			e.r, e.w = ping, pong
		}
		*(*int64)(unsafe.Pointer(&e.buf[0])) = 1 // mtype
		return e, nil
	},
}

// onMsgget, if set (by tests), is told every System V queue made.
var onMsgget func(id int)

// msgRemove removes a System V queue (waking its blocked callers with
// EIDRM); one already gone is not an error.
func msgRemove(id int) error {
	_, _, errno := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_RMID, 0)
	if errno != 0 && errno != unix.EINVAL && errno != unix.EIDRM {
		return fmt.Errorf("msgctl(%d, IPC_RMID): %w", id, errno)
	}
	return nil
}

// sysvMsgq sends and receives through a struct msgbuf: the mtype word,
// then the message.
type sysvMsgq struct {
	s    *side
	r, w int
	buf  []byte
}

func (e *sysvMsgq) send(msg []byte) error {
	n := copy(e.buf[8:], msg)
	for {
		_, _, errno := unix.Syscall6(unix.SYS_MSGSND, uintptr(e.w), uintptr(unsafe.Pointer(&e.buf[0])), uintptr(n), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return e.s.gone(fmt.Errorf("msgsnd: %w", errno))
		}
		return nil
	}
}

func (e *sysvMsgq) recv(buf []byte) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_MSGRCV, uintptr(e.r), uintptr(unsafe.Pointer(&e.buf[0])), uintptr(len(e.buf)-8), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, e.s.gone(fmt.Errorf("msgrcv: %w", errno))
		}
		return copy(buf, e.buf[8:8+n]), nil
	}
}

func (e *sysvMsgq) close() error { return nil }
