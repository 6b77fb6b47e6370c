package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel methods that move bytes through file descriptors: pipes,
// FIFOs, UNIX-domain and TCP sockets, and eventfd. Every descriptor is in
// blocking mode and driven by golang.org/x/sys/unix Read and Write, one
// system call per send and per receive (more only when a stream returns
// part of a message): the plain calls, without the runtime's netpoller,
// which would add an epoll round trip to every receive that has to wait.

var streamProps = Properties{Reliable: true, FlowControl: true}

var pipeMethod = &method{
	name:    "pipe",
	desc:    "anonymous pipes, one each way",
	api:     "pipe2; read/write (x/sys/unix) on blocking fds",
	payload: "bytes",
	props:   streamProps,
	fixed:   -1,
	setup: func(c *cell) error {
		var ping, pong [2]int
		if err := unix.Pipe2(ping[:], unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("pipe2: %w", err)
		}
		if err := unix.Pipe2(pong[:], unix.O_CLOEXEC); err != nil {
			unix.Close(ping[0])
			unix.Close(ping[1])
			return fmt.Errorf("pipe2: %w", err)
		}
		// Measuring side: writes ping, reads pong; the peer the reverse.
		c.addFiles([]int{ping[1], pong[0]}, []int{ping[0], pong[1]}, "pipe")
		return nil
	},
	open: func(s *side) (endpoint, error) {
		if s.parent {
			return &fdStream{s: s, w: s.fd(0), r: s.fd(1)}, nil
		}
		return &fdStream{s: s, r: s.fd(0), w: s.fd(1)}, nil
	},
}

var fifoMethod = &method{
	name:    "fifo",
	desc:    "named pipes (mkfifo), one each way",
	api:     "mkfifo, open; read/write (x/sys/unix) on blocking fds",
	payload: "bytes",
	props:   streamProps,
	fixed:   -1,
	setup: func(c *cell) error {
		dir, err := os.MkdirTemp("", "shmbus-bench-fifo-")
		if err != nil {
			return err
		}
		c.cleanups = append(c.cleanups, func() error { return os.RemoveAll(dir) })
		for _, n := range []string{"ping", "pong"} {
			p := filepath.Join(dir, n)
			if err := unix.Mkfifo(p, 0o600); err != nil {
				return fmt.Errorf("mkfifo %s: %w", p, err)
			}
			c.names[n] = p
		}
		return nil
	},
	open: openFIFO,
}

// openFIFO opens the FIFOs without ever blocking the measuring side: it
// opens pong for reading without waiting, then ping for writing as soon as
// the peer has it open for reading, which the peer does after opening pong
// for writing; then both descriptors go back to blocking mode. The peer
// opens pong, then ping, blocking.
func openFIFO(s *side) (endpoint, error) {
	open := func(name string, flags int) (int, error) {
		for {
			fd, err := unix.Open(s.names[name], flags|unix.O_CLOEXEC, 0)
			if err == nil {
				return fd, nil
			}
			if err == unix.EINTR {
				continue
			}
			if err == unix.ENXIO && s.abort != nil && !s.abort.Load() {
				time.Sleep(100 * time.Microsecond) // no reader yet
				continue
			}
			return -1, fmt.Errorf("open %s: %w", s.names[name], err)
		}
	}
	if !s.parent {
		w, err := open("pong", unix.O_WRONLY)
		if err != nil {
			return nil, err
		}
		r, err := open("ping", unix.O_RDONLY)
		if err != nil {
			unix.Close(w)
			return nil, err
		}
		return &fdStream{s: s, r: r, w: w, owned: true}, nil
	}
	r, err := open("pong", unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w, err := open("ping", unix.O_WRONLY|unix.O_NONBLOCK)
	if err == nil {
		if err = unix.SetNonblock(r, false); err == nil {
			err = unix.SetNonblock(w, false)
		}
		if err != nil {
			unix.Close(w)
		}
	}
	if err != nil {
		unix.Close(r)
		return nil, err
	}
	return &fdStream{s: s, r: r, w: w, owned: true}, nil
}

var unixStreamMethod = &method{
	name:    "unix-stream",
	desc:    "UNIX-domain stream socket pair",
	api:     "socketpair(AF_UNIX, SOCK_STREAM); read/write (x/sys/unix) on blocking fds",
	payload: "bytes",
	props:   streamProps,
	fixed:   -1,
	setup:   socketPairSetup(unix.SOCK_STREAM),
	open: func(s *side) (endpoint, error) {
		return &fdStream{s: s, r: s.fd(0), w: s.fd(0), socket: true}, nil
	},
}

var unixDgramMethod = &method{
	name:    "unix-dgram",
	desc:    "UNIX-domain datagram socket pair",
	api:     "socketpair(AF_UNIX, SOCK_DGRAM), SO_SNDBUF = net.core.wmem_max; read/write (x/sys/unix) on blocking fds",
	payload: "bytes",
	props:   Properties{Connectionless: true, Reliable: true, FlowControl: true, Records: true},
	notes:   "Linux never drops UNIX datagrams: a sender blocks while its SO_SNDBUF is full (and, unlike the socket pair here, while an unconnected receiver's queue holds net.unix.max_dgram_qlen datagrams).",
	fixed:   -1,
	limit:   dgramLimit,
	setup:   socketPairSetup(unix.SOCK_DGRAM),
	open: func(s *side) (endpoint, error) {
		return &fdRecord{s: s, fd: s.fd(0)}, nil
	},
}

var unixSeqpacketMethod = &method{
	name:    "unix-seqpacket",
	desc:    "UNIX-domain sequenced-packet socket pair",
	api:     "socketpair(AF_UNIX, SOCK_SEQPACKET), SO_SNDBUF = net.core.wmem_max; read/write (x/sys/unix) on blocking fds",
	payload: "bytes",
	props:   Properties{Reliable: true, FlowControl: true, Records: true},
	fixed:   -1,
	limit:   dgramLimit,
	setup:   socketPairSetup(unix.SOCK_SEQPACKET),
	open: func(s *side) (endpoint, error) {
		return &fdRecord{s: s, fd: s.fd(0)}, nil
	},
}

// dgramLimit is the largest UNIX datagram or packet: the kernel refuses
// one larger than the socket's send buffer less 32 bytes, and the send
// buffer is twice the SO_SNDBUF asked for, which an unprivileged process
// may set up to net.core.wmem_max.
func dgramLimit() (int, string) {
	wmax, err := readProcInt("/proc/sys/net/core/wmem_max")
	if err != nil {
		return 0, ""
	}
	return 2*wmax - 32, "2 x net.core.wmem_max - 32"
}

func socketPairSetup(typ int) func(c *cell) error {
	return func(c *cell) error {
		fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socketpair: %w", err)
		}
		if typ != unix.SOCK_STREAM {
			if wmax, err := readProcInt("/proc/sys/net/core/wmem_max"); err == nil {
				for _, fd := range fds {
					if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, wmax); err != nil {
						unix.Close(fds[0])
						unix.Close(fds[1])
						return fmt.Errorf("SO_SNDBUF: %w", err)
					}
				}
			}
		}
		c.addFiles(fds[:1], fds[1:], "socket")
		return nil
	}
}

var tcpMethod = &method{
	name:    "tcp",
	desc:    "TCP over loopback (127.0.0.1), TCP_NODELAY",
	api:     "socket, bind, listen, accept4 / connect, TCP_NODELAY; read/write (x/sys/unix) on blocking fds",
	payload: "bytes",
	props:   streamProps,
	notes:   "Out-of-band data (one urgent byte) is not a priority scheme.",
	fixed:   -1,
	setup: func(c *cell) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		c.addFiles([]int{fd}, nil, "listener")
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.Listen(fd, 1); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return fmt.Errorf("getsockname: %w", err)
		}
		c.names["port"] = strconv.Itoa(sa.(*unix.SockaddrInet4).Port)
		// Shutting the listener down wakes a blocked accept.
		c.abortOpens = append(c.abortOpens, func() { unix.Shutdown(fd, unix.SHUT_RDWR) })
		return nil
	},
	open: func(s *side) (endpoint, error) {
		var fd int
		var err error
		if s.parent {
			for {
				fd, _, err = unix.Accept4(s.fd(0), unix.SOCK_CLOEXEC)
				if err != unix.EINTR {
					break
				}
			}
			if err != nil {
				return nil, fmt.Errorf("accept: %w", err)
			}
		} else {
			port, _ := strconv.Atoi(s.names["port"])
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("socket: %w", err)
			}
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("connect: %w", err)
			}
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("TCP_NODELAY: %w", err)
		}
		return &fdStream{s: s, r: fd, w: fd, owned: true, socket: true}, nil
	},
}

// fdStream carries messages over a byte stream: a send writes all of it,
// a receive reads exactly one message's worth.
type fdStream struct {
	s      *side
	r, w   int
	owned  bool // close r and w (else they belong to the cell's files)
	socket bool
}

func (e *fdStream) send(msg []byte) error {
	for len(msg) > 0 {
		n, err := unix.Write(e.w, msg)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return e.s.gone(fmt.Errorf("write: %w", err))
		}
		msg = msg[n:]
	}
	return nil
}

func (e *fdStream) recv(buf []byte) (int, error) {
	for got := 0; got < len(buf); {
		n, err := unix.Read(e.r, buf[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return got, e.s.gone(fmt.Errorf("read: %w", err))
		}
		if n == 0 {
			return got, e.s.gone(io.ErrUnexpectedEOF)
		}
		got += n
	}
	return len(buf), nil
}

func (e *fdStream) abort() {
	if e.socket {
		unix.Shutdown(e.r, unix.SHUT_RDWR)
	}
}

func (e *fdStream) close() error {
	if !e.owned {
		return nil
	}
	err := unix.Close(e.r)
	if e.w != e.r {
		err = errors.Join(err, unix.Close(e.w))
	}
	return err
}

// fdRecord carries one message per datagram or packet.
type fdRecord struct {
	s  *side
	fd int
}

func (e *fdRecord) send(msg []byte) error {
	for {
		n, err := unix.Write(e.fd, msg)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return e.s.gone(fmt.Errorf("write: %w", err))
		}
		if n != len(msg) {
			return fmt.Errorf("short datagram write: %d of %d bytes", n, len(msg))
		}
		return nil
	}
}

func (e *fdRecord) recv(buf []byte) (int, error) {
	for {
		n, err := unix.Read(e.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, e.s.gone(fmt.Errorf("read: %w", err))
		}
		if n == 0 && len(buf) > 0 {
			return 0, e.s.gone(io.ErrUnexpectedEOF)
		}
		return n, nil
	}
}

func (e *fdRecord) abort()       { unix.Shutdown(e.fd, unix.SHUT_RDWR) }
func (e *fdRecord) close() error { return nil }

var eventfdMethod = &method{
	name:    "eventfd",
	desc:    "eventfd counters, one each way (an 8-byte counter, not a message)",
	api:     "eventfd(0, EFD_CLOEXEC); read/write of 8 bytes (x/sys/unix) on blocking fds",
	payload: "8-byte counter",
	props:   Properties{Reliable: true},
	notes:   "Writes add to a 64-bit counter and a read takes the sum and zeroes it: values coalesce, so it carries a count, not messages. Round trips send the sequence number as the value; throughput counts increments of 1 delivered (a read collects many).",
	fixed:   8,
	setup: func(c *cell) error {
		var fds []int
		for range 2 {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			if err != nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
				return fmt.Errorf("eventfd: %w", err)
			}
			fds = append(fds, fd)
		}
		dups := make([]int, 2)
		for i, fd := range fds {
			d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("dup: %w", err)
			}
			dups[i] = d
		}
		c.addFiles(fds, dups, "eventfd")
		return nil
	},
	open: func(s *side) (endpoint, error) {
		// files: ping (measuring side writes), pong (peer writes)
		if s.parent {
			return &eventFD{s: s, w: s.fd(0), r: s.fd(1)}, nil
		}
		return &eventFD{s: s, r: s.fd(0), w: s.fd(1)}, nil
	},
}

// eventFD passes 8-byte values; the end of one-way traffic is a value of
// eventEnd or more.
type eventFD struct {
	s    *side
	r, w int
}

const eventEnd = 1 << 40

func (e *eventFD) add(v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	for {
		_, err := unix.Write(e.w, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return e.s.gone(fmt.Errorf("write: %w", err))
		}
		return nil
	}
}

func (e *eventFD) take() (uint64, error) {
	var b [8]byte
	for {
		_, err := unix.Read(e.r, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, e.s.gone(fmt.Errorf("read: %w", err))
		}
		if e.s.abort != nil && e.s.abort.Load() {
			return 0, errAborted
		}
		return binary.LittleEndian.Uint64(b[:]), nil
	}
}

func (e *eventFD) send(msg []byte) error {
	if e.s.mode == modeLatency {
		return e.add(binary.LittleEndian.Uint64(msg))
	}
	return e.add(1)
}

func (e *eventFD) recv(buf []byte) (int, error) {
	v, err := e.take()
	if err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint64(buf, v)
	return 8, nil
}

func (e *eventFD) recvCount() (uint64, bool, error) {
	v, err := e.take()
	if v >= eventEnd {
		return v - eventEnd, true, err
	}
	return v, false, err
}

func (e *eventFD) sendEnd() error {
	if e.s.mode == modeLatency {
		return e.add(seqWord(0, endSeq))
	}
	return e.add(eventEnd)
}

// abort wakes the measuring side's read (by adding to the counter it
// reads); take then sees abort set.
func (e *eventFD) abort() {
	var b [8]byte
	b[0] = 1
	unix.Write(e.r, b[:])
}
func (e *eventFD) close() error { return nil }

// gone turns an error of a blocked call into errAborted when the other
// side is gone (the call failed because of that).
func (s *side) gone(err error) error {
	if s.abort != nil && s.abort.Load() {
		return fmt.Errorf("%w (%v)", errAborted, err)
	}
	return err
}

func readProcInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
