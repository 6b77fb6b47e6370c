//go:build linux

package daemon

// What one client can make the daemon hold, and for how long.
//
// Memory. Every frame buffer the daemon holds for a connection — the
// payload of a request being read or executed, and the reply to a RECV of a
// large message — is reserved from one budget (Config.MaxMemory) before it
// is allocated, and given back when the request is done. One user may hold
// at most Config.MaxMemoryPerUID of it, and an eighth of it is kept for
// requests holding at most smallHold bytes, so that large ones cannot crowd
// out a HELLO or a short message. A payload is read
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
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the limits.
const (
	DefaultMaxMemory      = 256 << 20 // and half of it per user
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
// connection. One user may hold at most perUID of it, and buffers larger
// than smallHold may not take the last reserve bytes: however large
// requests fill it, small ones (a HELLO, a short SEND or RECV) still fit.
type budget struct {
	max, perUID, reserve int64

	mu    sync.Mutex
	byUID map[uint32]int64
	used  atomic.Int64 // written under mu; read by the metrics without it
}

// smallHold is the largest holding of one request that may use the
// reserve: a RECV's own buffer, or a frame of up to 64 KiB.
const smallHold = smallMessage + 64

func newBudget(max, perUID int64) *budget {
	return &budget{max: max, perUID: perUID, reserve: max / 8, byUID: map[uint32]int64{}}
}

// take reserves n more bytes for a request of uid that will then hold
// total. A small request is bounded by the whole budget only (and, through
// the connection limits, by how many there can be); a larger one leaves the
// reserve alone and stays within its user's share. The error, wrapping
// errOverBudget, says which bound it met.
func (b *budget) take(uid uint32, n, total int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	used, mine := b.used.Load(), b.byUID[uid]
	switch {
	case total <= smallHold && used+int64(n) > b.max:
		return fmt.Errorf("%w: %d of its %d bytes are held (--max-memory)", errOverBudget, used, b.max)
	case total > smallHold && used+int64(n) > b.max-b.reserve:
		return fmt.Errorf("%w: %d of the %d bytes large requests may hold are held (--max-memory less an eighth kept for small ones)",
			errOverBudget, used, b.max-b.reserve)
	case total > smallHold && mine+int64(n) > b.perUID:
		return fmt.Errorf("%w: uid %d holds %d of the %d bytes one user may (--max-memory-per-uid)", errOverBudget, uid, mine, b.perUID)
	}
	b.byUID[uid] = mine + int64(n)
	b.used.Add(int64(n))
	return nil
}

// largest is the most one request can ever hold.
func (b *budget) largest() int64 { return min(b.perUID, b.max-b.reserve) }

func (b *budget) give(uid uint32, n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byUID[uid] -= int64(n); b.byUID[uid] <= 0 {
		delete(b.byUID, uid)
	}
	b.used.Add(-int64(n))
}

// take and give are the connection's side of the budget.
func (c *conn) take(n, total int) error { return c.s.mem.take(c.cred.uid, n, total) }
func (c *conn) give(n int)              { c.s.mem.give(c.cred.uid, n) }

// Errors of reading a frame, beyond those of ReadFrame.
var (
	// errOverBudget means the memory budget had no room for a request.
	errOverBudget = errors.New("no room in the daemon's memory budget")
	errNoHello    = errors.New("no HELLO in time")
	errStalled    = errors.New("a frame stalled")
	errIdle       = errors.New("idle for too long")
)

// request is a frame read by a connection, with the budget it holds, or
// the refusal to answer in its place.
type request struct {
	Frame
	held    int
	refused error // wraps errOverBudget: answer OVERLOADED
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
	p, held, err := readPayload(n, read, c.take)
	if errors.Is(err, errOverBudget) {
		c.give(held)
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
		return request{Frame: Frame{Type: typ, ID: id}, refused: err, length: n}, nil
	}
	if err != nil {
		c.give(held)
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
