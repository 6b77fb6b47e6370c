//go:build linux

package daemon

// What one client can make the daemon hold, and for how long.
//
// Memory. Every frame buffer the daemon holds for a connection — the
// payload of a request being read or executed, and the reply to a RECV of a
// large message — is reserved from one budget (Config.MaxMemory) before it
// is allocated, and given back when the request is done. A payload is read
// into a buffer that starts at firstChunk bytes and at most doubles as bytes
// arrive, so what a frame holds follows what its sender has sent, not the
// length it declared. A request the budget has no room for is refused with
// ERROR OVERLOADED (its remaining bytes are read and dropped, and the
// connection stays usable); a RECV refused so leaves its message on the bus.
// A connection holds at most two frames at a time (the request executing
// and the next one arriving), each of at most Config.MaxPayload bytes;
// before HELLO, at most one of HelloMaxPayload.
//
// Time. The whole HELLO frame must arrive within Config.HelloTimeout of the
// connection; once a frame has begun, every read must bring a byte within
// Config.FrameTimeout; between frames a connection may stay silent for
// Config.IdleTimeout (by default for ever: a connection is a lease). A
// connection that misses one is told ERROR TIMEOUT and closed. A reply
// whose client takes none of it for Config.WriteTimeout ends the connection
// (a RECV's message stays on the bus).
//
// Connections. At most Config.MaxConns at once, and Config.MaxConnsPerUID
// per user; one over a limit is told ERROR CONN_LIMIT and closed.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// Defaults of the limits.
const (
	DefaultMaxMemory      = 256 << 20
	DefaultMaxConns       = 1024
	DefaultMaxConnsPerUID = 128
	DefaultHelloTimeout   = 5 * time.Second
	DefaultFrameTimeout   = 10 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
)

// HelloMaxPayload is the largest frame payload accepted before HELLO.
const HelloMaxPayload = 4 << 10

// firstChunk is the most a payload's buffer holds before its bytes arrive;
// smallMessage is the largest RECV reply built in a connection's own buffer
// (larger ones are reserved from the budget, and dropped after the reply).
const (
	firstChunk   = 16 << 10
	smallMessage = 64 << 10
)

// RuntimeMemoryLimit is the Go runtime's soft memory limit that suits a
// daemon with a budget of maxMemory bytes (0: the default): the budget and
// as much again for garbage, plus 64 MiB for everything else. The daemon's
// command sets it (debug.SetMemoryLimit); the library never does.
func RuntimeMemoryLimit(maxMemory int64) int64 {
	if maxMemory <= 0 {
		maxMemory = DefaultMaxMemory
	}
	return 2*maxMemory + 64<<20
}

// budget is the memory the daemon may hold in frame buffers, shared by every
// connection.
type budget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, or says there is no room.
func (b *budget) take(n int) bool {
	for {
		u := b.used.Load()
		if u+int64(n) > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return true
		}
	}
}

func (b *budget) give(n int) {
	if n != 0 {
		b.used.Add(-int64(n))
	}
}

// Errors of reading a frame, beyond those of ReadFrame.
var (
	// errOverBudget means a frame's payload could not be held within the
	// memory budget; it was read and dropped.
	errOverBudget = errors.New("the daemon's memory budget is used up")
	errNoHello    = errors.New("no HELLO in time")
	errStalled    = errors.New("a frame stalled")
	errIdle       = errors.New("idle for too long")
)

// request is a frame read by a connection, with the budget it holds, or
// the refusal to answer in its place.
type request struct {
	Frame
	held    int
	refused error // errOverBudget: answer OVERLOADED
	length  int   // the payload length the header declared
}

// readRequest reads the next frame from r, of at most limit payload bytes,
// under the connection's deadlines and the daemon's budget. hello says
// whether HELLO has been answered. A frame over the budget is read to its
// end and dropped, and returned with refused set.
func (c *conn) readRequest(r *bufio.Reader, limit int, hello bool) (request, error) {
	started := false
	read := func(b []byte) (int, error) {
		if r.Buffered() == 0 {
			c.c.SetReadDeadline(c.readDeadline(hello, started))
		}
		n, err := r.Read(b)
		if n > 0 {
			started = true
		}
		return n, c.timeoutError(err, hello, started)
	}
	var h [headerLen]byte
	for got := 0; got < headerLen; {
		n, err := read(h[got:])
		got += n
		if err != nil {
			if got > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return request{}, err
		}
	}
	typ, id, n, err := ParseHeader(h[:], limit)
	if err != nil {
		return request{Frame: Frame{Type: typ, ID: id}}, err
	}
	if n > 0 && r.Buffered() == 0 {
		// Nothing is allocated for the payload before its first byte.
		c.c.SetReadDeadline(c.readDeadline(hello, true))
		if _, err := r.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return request{}, c.timeoutError(err, hello, true)
		}
	}
	p, held, err := readPayload(n, read, c.s.mem.take)
	if err == errOverBudget {
		c.s.mem.give(held)
		c.s.metrics.overBudget.Inc()
		for rest := n - len(p); rest > 0; {
			if r.Buffered() == 0 {
				c.c.SetReadDeadline(c.readDeadline(hello, true))
			}
			k, err := r.Discard(min(rest, r.Size()))
			rest -= k
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return request{}, c.timeoutError(err, hello, true)
			}
		}
		return request{Frame: Frame{Type: typ, ID: id}, refused: errOverBudget, length: n}, nil
	}
	if err != nil {
		c.s.mem.give(held)
		return request{}, err
	}
	return request{Frame: Frame{Type: typ, ID: id, Payload: p}, held: held, length: n}, nil
}

// readDeadline is the deadline of the next read: HELLO's, a started frame's
// or an idle connection's.
func (c *conn) readDeadline(hello, started bool) time.Time {
	switch {
	case !hello:
		return c.helloBy
	case started:
		return time.Now().Add(c.s.cfg.FrameTimeout)
	case c.s.cfg.IdleTimeout > 0:
		return time.Now().Add(c.s.cfg.IdleTimeout)
	}
	return time.Time{}
}

// timeoutError says which deadline a timed-out read missed.
func (c *conn) timeoutError(err error, hello, started bool) error {
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	switch {
	case !hello:
		return fmt.Errorf("%w within %v of connecting (%w)", errNoHello, c.s.cfg.HelloTimeout, err)
	case started:
		return fmt.Errorf("%w: no byte for %v (%w)", errStalled, c.s.cfg.FrameTimeout, err)
	}
	return fmt.Errorf("%w: no request for %v (%w)", errIdle, c.s.cfg.IdleTimeout, err)
}
