//go:build linux

package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/segment"
)

// conn is one client connection: its credentials, what the daemon holds
// for it, and its subscriptions.
type conn struct {
	s     *Server
	c     *net.UnixConn
	cred  creds
	pidfd int // -1 if the kernel has no pidfds
	label string

	wmu sync.Mutex // one frame at a time on the socket
	w   *bufio.Writer

	mu     sync.Mutex
	hello  bool
	prods  map[*entry]*shmbus.Producer
	cons   map[*entry]*shmbus.Consumer
	leases map[*entry]bool    // buses whose descriptor the client has
	subs   map[string]bool    // "" is every bus
	fans   map[subKey]*fanSub // subscriptions of fan-out buses held for the client (fanout.go)
	events chan Event         // to the event writer, once subscribed
	rbuf   []byte             // RECV's buffer for small messages (requests run one at a time)

	afterReply func(werr error) // set by a request to learn whether its reply was written
	done       chan struct{}    // closed when the connection ends

	helloBy time.Time // when HELLO must have come
}

func newConn(s *Server, c *net.UnixConn, cred creds) *conn {
	cn := &conn{s: s, c: c, cred: cred, pidfd: -1, w: bufio.NewWriterSize(c, 16<<10),
		prods: map[*entry]*shmbus.Producer{}, cons: map[*entry]*shmbus.Consumer{},
		leases: map[*entry]bool{}, subs: map[string]bool{}, fans: map[subKey]*fanSub{}, done: make(chan struct{}),
		label:   fmt.Sprintf("client pid %d uid %d", cred.pid, cred.uid),
		helloBy: time.Now().Add(s.cfg.HelloTimeout)}
	if fd, err := unix.PidfdOpen(int(cred.pid), 0); err == nil {
		cn.pidfd = fd
	}
	return cn
}

// serve reads and answers requests until the connection ends, then ends
// the client's leases.
func (c *conn) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	reqs := make(chan request)
	go func() {
		defer close(reqs)
		// Reads run here so that a client that goes away cancels a
		// request waiting on its behalf.
		defer cancel()
		r := bufio.NewReaderSize(c.c, 16<<10)
		for {
			hello := c.helloDone()
			limit := c.s.cfg.MaxPayload
			if !hello {
				limit = HelloMaxPayload
			}
			req, err := c.readRequest(r, limit, hello)
			if err != nil {
				c.readFailed(req.Frame, err)
				return
			}
			if !hello {
				// Until HELLO is answered, one frame at a time: what
				// follows it is read under the limits of a greeted
				// connection.
				c.handle(ctx, req)
				continue
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				c.give(req.held)
				return
			}
		}
	}()
	for req := range reqs {
		if ctx.Err() != nil {
			c.give(req.held)
			break
		}
		c.handle(ctx, req)
	}
	cancel()
	c.c.Close()
	close(c.done)
	c.endLeases()
	c.give(len(c.rbuf))
	c.rbuf = nil
}

func (c *conn) helloDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hello
}

// readFailed answers a frame that could not be read, when there is
// something to say, before the connection is closed.
func (c *conn) readFailed(f Frame, err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return
	case errors.Is(err, ErrTooLarge):
		c.s.metrics.frameErrors.WithLabelValues("too_large").Inc()
		c.farewell(f.ID, CodeTooLarge, err.Error()+"; closing the connection")
	case errors.Is(err, ErrFrame):
		c.s.metrics.frameErrors.WithLabelValues("bad_frame").Inc()
		c.farewell(f.ID, CodeBadFrame, err.Error()+"; closing the connection")
	case errors.Is(err, errNoHello), errors.Is(err, errStalled), errors.Is(err, errIdle):
		kind := "idle"
		if errors.Is(err, errNoHello) {
			kind = "hello"
		} else if errors.Is(err, errStalled) {
			kind = "frame"
		}
		c.s.metrics.timeouts.WithLabelValues(kind).Inc()
		c.farewell(0, CodeTimeout, err.Error()+"; closing the connection")
	default:
		c.s.metrics.frameErrors.WithLabelValues("truncated").Inc()
	}
	c.s.cfg.Logf("%s: closing the connection: %v", c.label, err)
}

// farewell writes the ERROR that ends the connection, after what is
// buffered, waiting at most a second for the client to take it.
func (c *conn) farewell(id uint32, code Code, msg string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.c.SetWriteDeadline(time.Now().Add(time.Second))
	if c.w.Flush() == nil {
		farewell(c.c, id, code, msg)
	}
}

// reply writes one frame (with a descriptor, if fd >= 0).
func (c *conn) reply(id uint32, typ uint16, payload []byte) error {
	return c.replyFD(id, typ, payload, -1)
}

func (c *conn) replyFD(id uint32, typ uint16, payload []byte, fd int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// The header goes through the buffer; a large payload mostly past it,
	// so that it is not copied again.
	head := AppendFrame(make([]byte, 0, headerLen), typ, id, nil)
	binary.LittleEndian.PutUint32(head, uint32(8+len(payload)))
	c.c.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if fd >= 0 {
		// The descriptor rides on the frame's first byte.
		if err := c.w.Flush(); err != nil {
			return err
		}
		if _, _, err := c.c.WriteMsgUnix(head[:1], unix.UnixRights(fd), nil); err != nil {
			return err
		}
		head = head[1:]
	}
	if _, err := c.w.Write(head); err != nil {
		return err
	}
	// The deadline is for progress: a large reply to a client that keeps
	// reading takes as long as it takes.
	for len(payload) > 0 {
		k := min(len(payload), writeChunk)
		if _, err := c.w.Write(payload[:k]); err != nil {
			return err
		}
		payload = payload[k:]
		c.c.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	}
	return c.w.Flush()
}

// writeChunk is how much of a reply is written under one write deadline.
const writeChunk = 256 << 10

// handle executes one request and answers it. The budget its frame held
// is given back once it has executed, before the reply is written: no reply
// refers to a request's payload.
func (c *conn) handle(ctx context.Context, req request) {
	f := req.Frame
	name := typeNames[f.Type]
	if name == "" {
		name = "unknown"
	}
	start := time.Now()
	var (
		typ     uint16
		payload []byte
		fd      *os.File
		err     error
	)
	if req.refused != nil {
		err = &Error{CodeOverloaded, fmt.Sprintf("%s of %d bytes refused: %v; try again later", name, req.length, req.refused)}
	} else {
		typ, payload, fd, err = c.dispatch(ctx, f)
	}
	c.give(req.held)
	if fd != nil {
		defer fd.Close()
	}
	if err != nil {
		code, payload := errorPayload(err)
		c.s.metrics.request(name, code.String(), time.Since(start))
		if werr := c.reply(f.ID, TypeError, payload); werr != nil {
			c.writeFailed(werr)
		}
		return
	}
	c.s.metrics.request(name, "OK", time.Since(start))
	fdn := -1
	if fd != nil {
		fdn = int(fd.Fd())
	}
	werr := c.replyFD(f.ID, typ, payload, fdn)
	if after := c.afterReply; after != nil {
		c.afterReply = nil
		after(werr)
	}
	if werr != nil {
		c.writeFailed(werr)
	}
}

// writeFailed ends a connection whose reply could not be written whole:
// the frame may have been cut, and nothing after it could be read.
func (c *conn) writeFailed(err error) {
	if !errors.Is(err, net.ErrClosed) {
		c.s.cfg.Logf("%s: closing the connection: reply not written: %v", c.label, err)
	}
	c.c.Close()
}

func (c *conn) dispatch(ctx context.Context, f Frame) (uint16, []byte, *os.File, error) {
	c.mu.Lock()
	hello := c.hello
	c.mu.Unlock()
	if !hello && f.Type != TypeHello {
		if typeNames[f.Type] == "" {
			return 0, nil, nil, &Error{CodeUnknownType, fmt.Sprintf("unknown request type %#04x", f.Type)}
		}
		return 0, nil, nil, &Error{CodeHelloRequired, "send HELLO first"}
	}
	switch f.Type {
	case TypeHello:
		return c.doHello(f.Payload)
	case TypeCreate:
		return c.doCreate(f.Payload)
	case TypeOpen:
		return c.doOpen(f.Payload)
	case TypeSend:
		return c.doSend(ctx, f.Payload)
	case TypeRecv:
		return c.doRecv(ctx, f.Payload)
	case TypeRelease:
		return c.doRelease(f.Payload)
	case TypeStat:
		return c.doStat(f.Payload)
	case TypeList:
		return c.doList(f.Payload)
	case TypeSubscribe:
		return c.doSubscribe(f.Payload)
	case TypeUnsubscribe:
		return c.doUnsubscribe(f.Payload)
	case TypeRemove:
		return c.doRemove(f.Payload)
	case TypeBoardGet:
		return c.doBoardGet(f.Payload)
	case TypeBoardPut:
		return c.doBoardPut(f.Payload, false)
	case TypeBoardCAS:
		return c.doBoardPut(f.Payload, true)
	case TypeBoardDelete:
		return c.doBoardDelete(f.Payload)
	case TypeBoardWatch:
		return c.doBoardWatch(ctx, f.Payload)
	case TypeSubOpen:
		return c.doSubOpen(ctx, f.Payload)
	case TypeSubRecv:
		return c.doSubRecv(ctx, f.Payload)
	case TypeSubAck:
		return c.doSubAck(f.Payload)
	case TypeSubClose:
		return c.doSubClose(f.Payload)
	}
	return 0, nil, nil, &Error{CodeUnknownType, fmt.Sprintf("unknown request type %#04x", f.Type)}
}

// errorCode maps an error to its code and message.
func errorCode(err error) (Code, string) {
	var de *Error
	if code, ok := fanCode(err); ok && !errors.As(err, &de) {
		return code, err.Error()
	}
	switch {
	case errors.As(err, &de):
		return de.Code, de.Message
	case errors.Is(err, errDecode):
		return CodeBadFrame, err.Error()
	case errors.Is(err, shmbus.ErrBadName):
		return CodeBadName, err.Error()
	case errors.Is(err, shmbus.ErrNotFound):
		return CodeNoKey, err.Error()
	case errors.Is(err, shmbus.ErrRevision):
		return CodeRevision, err.Error()
	case errors.Is(err, shmbus.ErrBadKey):
		return CodeBadKey, err.Error()
	case errors.Is(err, shmbus.ErrNotExist):
		return CodeNotFound, err.Error()
	case errors.Is(err, shmbus.ErrExist):
		return CodeExists, err.Error()
	case errors.Is(err, shmbus.ErrPermission):
		return CodePermission, err.Error()
	case errors.Is(err, shmbus.ErrBusy):
		return CodeBusy, err.Error()
	case errors.Is(err, shmbus.ErrFull):
		return CodeFull, err.Error()
	case errors.Is(err, shmbus.ErrEmpty):
		return CodeEmpty, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout, "timed out"
	case errors.Is(err, context.Canceled), errors.Is(err, shmbus.ErrClosed):
		return CodeShutdown, err.Error()
	case errors.Is(err, shmbus.ErrTooLarge):
		return CodeTooLarge, err.Error()
	case errors.Is(err, shmbus.ErrPriority), errors.Is(err, shmbus.ErrConfig):
		return CodeBadArgument, err.Error()
	case errors.Is(err, shmbus.ErrNoSlot):
		return CodeNoSlot, err.Error()
	case errors.Is(err, shmbus.ErrCorrupt), errors.Is(err, shmbus.ErrVersion), errors.Is(err, shmbus.ErrNotReady):
		return CodeCorrupt, err.Error()
	case errors.Is(err, shmbus.ErrUnsupported):
		return CodeUnsupported, err.Error()
	}
	return CodeInternal, err.Error()
}

func (c *conn) doHello(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeHello(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Version != Version {
		return 0, nil, nil, &Error{CodeBadVersion, fmt.Sprintf("version %d asked, this daemon speaks %d", m.Version, Version)}
	}
	c.mu.Lock()
	c.hello = true
	if m.Client != "" {
		c.label = fmt.Sprintf("client %q pid %d uid %d", m.Client, c.cred.pid, c.cred.uid)
	}
	c.mu.Unlock()
	return TypeWelcome, Welcome{Version: Version, MaxPayload: uint32(c.s.cfg.MaxPayload), Server: c.s.cfg.Version,
		PID: c.cred.pid, UID: c.cred.uid, GID: c.cred.gid}.encode(), nil, nil
}

func (c *conn) doCreate(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeCreate(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Flags&^(FlagMemfd|FlagFailFast|FlagWantFD) != 0 || m.Producers > 1 || m.Wake > 2 || m.Mode&^0o777 != 0 {
		return 0, nil, nil, &Error{CodeBadArgument, fmt.Sprintf("create %q: bad flags %#x, producers %d, wake %d or mode %#o",
			m.Name, m.Flags, m.Producers, m.Wake, m.Mode)}
	}
	opts := &shmbus.Options{Priorities: int(m.Priorities), LaneCapacity: int(m.LaneCapacity), MaxMessage: int(m.MaxMessage),
		FailFast: m.Flags&FlagFailFast != 0, Mode: os.FileMode(m.Mode), Dir: c.s.cfg.Dir, Memfd: m.Flags&FlagMemfd != 0,
		Subscriptions: int(m.Subscriptions)}
	if m.Producers == 1 {
		opts.Producers = shmbus.SingleProducer
	}
	if m.Wake != 0 {
		opts.Wake = shmbus.WakeMode(m.Wake)
	}
	chown := os.Geteuid() == 0 && c.cred.uid != 0
	if chown && opts.Wake == shmbus.WakeSem {
		return 0, nil, nil, &Error{CodeUnsupported, fmt.Sprintf("create %q: the daemon cannot give a semaphore set to uid %d; use futex wake-ups, or create the bus as that user",
			m.Name, c.cred.uid)}
	}
	if !chown && os.Geteuid() != int(c.cred.uid) {
		return 0, nil, nil, &Error{CodePermission, fmt.Sprintf("create %q: the daemon runs as uid %d and cannot make a bus owned by uid %d",
			m.Name, os.Geteuid(), c.cred.uid)}
	}
	// One name means one bus: a memfd bus's name must be free in the
	// directory, and a file bus's among the daemon's memfd buses.
	if c.s.memfdNamed(m.Name) {
		return 0, nil, nil, &Error{CodeExists, fmt.Sprintf("create %q: a memfd bus of that name exists", m.Name)}
	}
	if opts.Memfd {
		if _, err := os.Stat(segment.Path(c.s.cfg.Dir, m.Name)); err == nil {
			return 0, nil, nil, &Error{CodeExists, fmt.Sprintf("create %q: a bus of that name exists in the directory", m.Name)}
		}
	}
	b, err := shmbus.Create(m.Name, opts)
	if err != nil {
		return 0, nil, nil, err
	}
	if chown {
		if err := b.File().Chown(int(c.cred.uid), int(c.cred.gid)); err != nil {
			b.Remove()
			return 0, nil, nil, fmt.Errorf("create %q: give it to uid %d: %w", m.Name, c.cred.uid, err)
		}
	}
	e, err := c.s.add(m.Name, b, opts.Memfd)
	if err != nil {
		b.Remove()
		return 0, nil, nil, err
	}
	c.s.cfg.Logf("%s created bus %q (memfd %v)", c.label, m.Name, opts.Memfd)
	return c.busReply(e, m.Flags&FlagWantFD != 0)
}

func (c *conn) doOpen(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeOpen(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Flags&^FlagWantFD != 0 {
		return 0, nil, nil, &Error{CodeBadArgument, fmt.Sprintf("open %q: unknown flags %#x", m.Name, m.Flags)}
	}
	want := uint32(permRead)
	if m.Flags&FlagWantFD != 0 {
		want |= permWrite
	}
	e, err := c.bus(m.Name, want, "open")
	if err != nil {
		return 0, nil, nil, err
	}
	return c.busReply(e, m.Flags&FlagWantFD != 0)
}

// busReply describes e and, with wantFD, passes its descriptor and starts
// the client's lease on it.
func (c *conn) busReply(e *entry, wantFD bool) (uint16, []byte, *os.File, error) {
	cfg := e.bus.Config()
	st, err := fileStat(e.bus)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bus %q: %w", e.name, err)
	}
	info := BusInfo{Name: e.name, Kind: KindFile, Wake: uint8(cfg.Wake), Priorities: uint16(cfg.Priorities),
		Mode: uint16(st.Mode & 0o777), UID: st.Uid, GID: st.Gid, Size: uint64(cfg.Size), MaxMessage: uint64(cfg.MaxMessage),
		MaxRecord: uint32(cfg.MaxRecordPayload)}
	if _, n := e.bus.FanOut(); n > 0 {
		info.Subscriptions = uint8(n)
	}
	if e.memfd {
		info.Kind = KindMemfd
	}
	if cfg.Producers == shmbus.SingleProducer {
		info.Producers = 1
	}
	if !wantFD {
		return TypeBus, info.encode(), nil, nil
	}
	// A duplicate, so that the reply can be written after a concurrent
	// REMOVE has closed the bus.
	fd, err := unix.FcntlInt(e.bus.File().Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bus %q: dup descriptor: %w", e.name, err)
	}
	info.FD = 1
	c.mu.Lock()
	c.leases[e] = true
	c.mu.Unlock()
	return TypeBus, info.encode(), os.NewFile(uintptr(fd), e.name), nil
}

// bus returns the bus called name if the client may do what with it.
func (c *conn) bus(name string, want uint32, what string) (*entry, error) {
	e, err := c.s.lookup(name)
	if err != nil {
		return nil, err
	}
	st, err := fileStat(e.bus)
	if err != nil {
		return nil, fmt.Errorf("bus %q: %w", name, err)
	}
	if missing := c.cred.missing(st, want); missing != "" {
		return nil, &Error{CodePermission, fmt.Sprintf("%s %q: uid %d gid %d lacks %s permission (bus owned by uid %d gid %d, mode %#o)",
			what, name, c.cred.uid, c.cred.gid, missing, st.Uid, st.Gid, st.Mode&0o777)}
	}
	return e, nil
}

func fileStat(b *shmbus.Bus) (*syscall.Stat_t, error) {
	fi, err := b.File().Stat()
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("no owner information for %s", b.Path())
	}
	return st, nil
}

// ctxFor is ctx bounded by a request's timeout (0 = none).
func ctxFor(ctx context.Context, ms uint32) (context.Context, context.CancelFunc) {
	if ms == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
}

func (c *conn) doSend(ctx context.Context, p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeSend(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.bus(m.Name, permWrite, "send to")
	if err != nil {
		return 0, nil, nil, err
	}
	c.mu.Lock()
	prod := c.prods[e]
	c.mu.Unlock()
	if prod == nil {
		if prod, err = e.bus.NewProducer(); err != nil {
			return 0, nil, nil, err
		}
		e.mu.Lock()
		e.proxied[prod.Slot()] = int(c.cred.pid)
		e.mu.Unlock()
		c.mu.Lock()
		c.prods[e] = prod
		c.mu.Unlock()
	}
	// TrySend waits, with no way out, for room for the rest of a message
	// larger than a record once its first fragment is in; such a message
	// goes through Send, bounded by the timeout and the connection.
	if m.Flags&FlagNoWait != 0 && len(m.Message) <= e.bus.MaxRecordPayload() {
		err = prod.TrySend(m.Message, int(m.Priority))
	} else {
		sctx, cancel := ctxFor(ctx, m.TimeoutMS)
		err = prod.Send(sctx, m.Message, int(m.Priority))
		cancel()
	}
	if err != nil {
		return 0, nil, nil, err
	}
	c.s.metrics.relayed("in", len(m.Message))
	return TypeOK, nil, nil, nil
}

func (c *conn) doRecv(ctx context.Context, p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeRecv(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.bus(m.Name, permRead, "receive from")
	if err != nil {
		return 0, nil, nil, err
	}
	c.mu.Lock()
	cons := c.cons[e]
	c.mu.Unlock()
	if cons == nil {
		e.mu.Lock()
		if e.consumer != nil {
			e.mu.Unlock()
			return 0, nil, nil, &Error{CodeBusy, fmt.Sprintf("receive from %q: another daemon client is its consumer", m.Name)}
		}
		cons, err = e.bus.NewConsumer()
		if err != nil {
			e.mu.Unlock()
			return 0, nil, nil, err
		}
		e.consumer = c
		e.proxied[cons.Slot()] = int(c.cred.pid)
		e.mu.Unlock()
		c.mu.Lock()
		c.cons[e] = cons
		c.mu.Unlock()
	}
	// The message is copied into the reply's payload (after its priority
	// and length) and taken off the bus only once the reply is written:
	// a client that goes away before it has the whole reply leaves the
	// message to the next consumer.
	if c.rbuf == nil {
		if err := c.take(smallMessage+5, smallMessage+5); err != nil {
			return 0, nil, nil, c.overloaded("receive from", m.Name, smallMessage+5, err)
		}
		c.rbuf = make([]byte, smallMessage+5)
	}
	buf, held := c.rbuf, 0
	var t shmbus.Taken
	if m.Flags&FlagNoWait != 0 {
		t, err = cons.TryTake(buf[5:])
	} else {
		rctx, cancel := ctxFor(ctx, m.TimeoutMS)
		t, err = cons.Take(rctx, buf[5:])
		cancel()
	}
	// A larger message gets a buffer of its own from the budget, for this
	// reply only; it waits on the bus meanwhile.
	var short *shmbus.ShortBufferError
	for errors.As(err, &short) {
		c.give(held)
		held = 0
		need := short.Need + 5
		if int64(need) > c.s.mem.largest() {
			return 0, nil, nil, &Error{CodeTooLarge, fmt.Sprintf("receive from %q: a message of %d bytes is larger than the daemon's memory budget lets one request hold (%d bytes); map the bus to receive it",
				m.Name, short.Need, c.s.mem.largest())}
		}
		if err := c.take(need, need); err != nil {
			return 0, nil, nil, c.overloaded("receive from", m.Name, need, err)
		}
		held, buf = need, make([]byte, need)
		t, err = cons.TryTake(buf[5:])
	}
	if err != nil {
		c.give(held)
		return 0, nil, nil, err
	}
	n := t.N
	buf[0] = uint8(t.Priority)
	binary.LittleEndian.PutUint32(buf[1:], uint32(n))
	c.afterReply = func(werr error) {
		defer c.give(held)
		if werr != nil {
			c.s.cfg.Logf("%s: reply to RECV on %q not written (%v): the message stays on the bus", c.label, m.Name, werr)
			return
		}
		if err := cons.ReleaseThrough(t.Priority, t.Position); err != nil {
			c.s.cfg.Logf("%s: release a delivered message of %q: %v", c.label, m.Name, err)
			return
		}
		c.s.metrics.relayed("out", n)
	}
	return TypeMessage, buf[:5+n], nil, nil
}

// overloaded is the refusal of a request the memory budget has no room for.
func (c *conn) overloaded(what, name string, n int, err error) error {
	c.s.metrics.overBudget.Inc()
	return &Error{CodeOverloaded, fmt.Sprintf("%s %q: %d bytes refused: %v; try again later", what, name, n, err)}
}

func (c *conn) doRelease(p []byte) (uint16, []byte, *os.File, error) {
	name, err := decodeNamed(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if err := segment.ValidateName(name); err != nil {
		return 0, nil, nil, err
	}
	c.mu.Lock()
	var found *entry
	for e := range c.prods {
		if e.name == name {
			found = e
		}
	}
	for e := range c.cons {
		if e.name == name {
			found = e
		}
	}
	for e := range c.leases {
		if e.name == name {
			found = e
		}
	}
	for k := range c.fans {
		if k.e.name == name {
			found = k.e
		}
	}
	c.mu.Unlock()
	if found != nil {
		c.releaseEntry(found)
	}
	return TypeOK, nil, nil, nil
}

// releaseEntry gives back what the daemon holds on e for this client.
func (c *conn) releaseEntry(e *entry) {
	c.closeFans(e)
	c.mu.Lock()
	prod, cons := c.prods[e], c.cons[e]
	delete(c.prods, e)
	delete(c.cons, e)
	delete(c.leases, e)
	c.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if prod != nil {
		prod.Abort() // an unfinished message is not published
		prod.Close()
	}
	if cons != nil {
		cons.Close()
		if e.consumer == c {
			e.consumer = nil
		}
	}
	c.s.poke()
}

func (c *conn) doStat(p []byte) (uint16, []byte, *os.File, error) {
	name, err := decodeNamed(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.bus(name, permRead, "stat")
	if err != nil {
		return 0, nil, nil, err
	}
	var js []byte
	if c.s.cfg.StatJSON != nil {
		js, err = c.s.cfg.StatJSON(e.bus)
	} else {
		js, err = minimalStat(e.bus)
	}
	if err != nil {
		return 0, nil, nil, err
	}
	var enc enc
	enc.bytes(js)
	return TypeStats, enc.b, nil, nil
}

func (c *conn) doList(p []byte) (uint16, []byte, *os.File, error) {
	if len(p) != 0 {
		return 0, nil, nil, fmt.Errorf("%w: LIST has no payload, got %d bytes", errDecode, len(p))
	}
	names, err := c.s.names()
	if err != nil {
		return 0, nil, nil, err
	}
	return TypeNames, encodeNames(names), nil, nil
}

func (c *conn) doSubscribe(p []byte) (uint16, []byte, *os.File, error) {
	name, err := decodeNamed(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if name != "" {
		if _, err := c.bus(name, permRead, "subscribe to"); err != nil {
			return 0, nil, nil, err
		}
	}
	c.mu.Lock()
	c.subs[name] = true
	start := c.events == nil
	if start {
		c.events = make(chan Event, 1024)
	}
	c.mu.Unlock()
	if start {
		go c.writeEvents()
	}
	c.s.poke()
	return TypeOK, nil, nil, nil
}

func (c *conn) doUnsubscribe(p []byte) (uint16, []byte, *os.File, error) {
	name, err := decodeNamed(p)
	if err != nil {
		return 0, nil, nil, err
	}
	c.mu.Lock()
	delete(c.subs, name)
	c.mu.Unlock()
	return TypeOK, nil, nil, nil
}

func (c *conn) doRemove(p []byte) (uint16, []byte, *os.File, error) {
	name, err := decodeNamed(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.s.lookup(name)
	if err != nil {
		return 0, nil, nil, err
	}
	st, err := fileStat(e.bus)
	if err != nil {
		return 0, nil, nil, err
	}
	if c.cred.uid != 0 && c.cred.uid != st.Uid {
		return 0, nil, nil, &Error{CodePermission, fmt.Sprintf("remove %q: only its owner (uid %d) or root may remove it", name, st.Uid)}
	}
	c.s.drop(e)
	e.mu.Lock()
	e.removed = true
	e.mu.Unlock()
	if err := e.bus.Remove(); err != nil {
		return 0, nil, nil, err
	}
	c.s.cfg.Logf("%s removed bus %q", c.label, name)
	return TypeOK, nil, nil, nil
}

// wants says whether the client subscribed to events of e and may read it.
func (c *conn) wants(e *entry) bool {
	c.mu.Lock()
	sub := c.events != nil && (c.subs[""] || c.subs[e.name])
	c.mu.Unlock()
	if !sub {
		return false
	}
	st, err := fileStat(e.bus)
	return err == nil && c.cred.missing(st, permRead) == ""
}

// notify queues an event for the client; a client too slow to take its
// events loses its connection rather than stalling the daemon.
func (c *conn) notify(ev Event) {
	select {
	case c.events <- ev:
	case <-c.done:
	default:
		c.s.cfg.Logf("%s: event queue full, closing the connection", c.label)
		c.c.Close()
	}
}

func (c *conn) writeEvents() {
	for {
		select {
		case ev := <-c.events:
			if err := c.reply(0, TypeEvent, ev.encode()); err != nil {
				c.c.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// endLeases runs when the connection has ended: what the daemon held for
// the client is closed at once; the slots the client took itself in
// segments it mapped are released once its process has exited.
func (c *conn) endLeases() {
	c.closeFans(nil)
	c.mu.Lock()
	var held []*entry
	for e := range c.prods {
		held = append(held, e)
	}
	for e := range c.cons {
		held = append(held, e)
	}
	mapped := len(c.leases) > 0
	c.mu.Unlock()
	for _, e := range held {
		c.releaseEntry(e)
	}
	if mapped && c.pidfd >= 0 {
		c.s.wg.Add(1)
		go func() {
			defer c.s.wg.Done()
			c.awaitExit()
		}()
		return
	}
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
	}
	c.s.poke()
}

// awaitExit waits for the client's process to exit (or the daemon to shut
// down), then has the peer tables scanned so its slots are released.
func (c *conn) awaitExit() {
	defer unix.Close(c.pidfd)
	for {
		fds := []unix.PollFd{{Fd: int32(c.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 200)
		if err != nil && err != unix.EINTR {
			break
		}
		if n > 0 {
			c.s.cfg.Logf("%s: process exited; releasing what it held", c.label)
			break
		}
		c.s.mu.Lock()
		closed := c.s.closed
		c.s.mu.Unlock()
		if closed {
			return
		}
	}
	c.s.poke()
}
