package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shmbus/shmbus"
)

// A bus->stream route.
//
// One goroutine owns the source. It takes a message, copies it, publishes
// it asynchronously (in chunks if it does not fit the server's
// max_payload) and goes on while the acknowledgements are outstanding, up
// to Window messages and WindowSize bytes. Acknowledgements are collected
// oldest first; when the last chunk of a message is acknowledged and
// everything before it in the window is too, the message is released from
// the bus. So releases happen in order per priority, and only after
// JetStream has stored the message.
//
// Every NATS message carries Nats-Msg-Id = IDENTITY.PRIORITY.POSITION (and
// .CHUNK for chunks), where IDENTITY is the bus's name and creation time
// and POSITION the message's place in its lane. A bridge that dies with
// messages published and not released takes them again after a restart at
// the same positions and publishes them under the same ids: JetStream's
// duplicate window drops them.
//
// A failed publish or acknowledgement (server gone, timeout) stops new
// publishing: the route waits for every outstanding acknowledgement to
// settle, backs off, and publishes again, in order, every message of the
// window not yet acknowledged. The connection buffers nothing while
// disconnected (ReconnectBufSize -1), so nothing published after a loss
// can overtake it.

type pending struct {
	msg   nats.Msg
	fut   jetstream.PubAckFuture
	state int // 0 waiting, 1 acknowledged, 2 failed
	err   error
	prio  int
	pos   uint64
	size  int  // bytes of the bus message (on its last chunk), for the window
	last  bool // the message's last chunk: release it when acknowledged
	tries int
	id    [1]string // the value of Nats-Msg-Id, kept here so the header map needs no slice of its own
}

const (
	waiting = iota
	acked
	failed
)

type forwarder struct {
	r        Route
	cfg      *Config
	m        *Metrics
	nc       *nats.Conn
	js       jetstream.JetStream
	src      Source
	subjects []string
	prios    []string // priority labels

	window   []*pending // oldest first
	winArr   []*pending // the window's array, reused once the window is empty
	free     []*pending // reaped, for reuse (with their header maps)
	bytes    int        // bytes of the messages in the window
	scratch  []byte
	slab     []byte // small messages are taken into this, one after another (see take)
	idBuf    []byte
	identity string // the source's, which prefixes every message id
	stall    jetstream.PublishOpt

	// Per priority: the label value as a header value, the counters, and
	// what a reap has acknowledged and not yet released.
	prioHdr  [][]string
	msgs     []prometheus.Counter
	msgBytes []prometheus.Counter
	toFree   []release
	acks     prometheus.Counter
	chunks   prometheus.Counter
	dups     prometheus.Counter

	producer    [2]int // the SLOT/PID last formatted into producerHdr
	producerHdr []string
	chunk       int // payload bytes per NATS message
	maxMsg      int // the stream's max_msg_size (<= 0: none)
	backoff     backoff
	resend      bool
}

func newForwarder(r Route, cfg *Config, m *Metrics, nc *nats.Conn, src Source) (*forwarder, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.Window+1),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, err
	}
	f := &forwarder{r: r, cfg: cfg, m: m, nc: nc, js: js, src: src, scratch: make([]byte, 64<<10),
		stall: jetstream.WithStallWait(cfg.AckTimeout), producer: [2]int{-1, -1}, identity: src.Identity(),
		acks: m.Acks.WithLabelValues(r.Text), chunks: m.Chunks.WithLabelValues(r.Text),
		dups: m.Duplicates.WithLabelValues(r.Text)}
	for p := 0; p < src.Priorities(); p++ {
		f.subjects = append(f.subjects, expand(r.Subject, src.Name(), p))
		f.prios = append(f.prios, strconv.Itoa(p))
		f.prioHdr = append(f.prioHdr, []string{f.prios[p]})
		f.msgs = append(f.msgs, m.Messages.WithLabelValues(r.Text, f.prios[p]))
		f.msgBytes = append(f.msgBytes, m.Bytes.WithLabelValues(r.Text, f.prios[p]))
		f.toFree = append(f.toFree, release{})
	}
	return f, nil
}

// ensureStream finds the stream that stores the route's subjects, or
// makes one (file storage, the configured duplicate window).
func (f *forwarder) ensureStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if name, err := f.js.StreamNameBySubject(ctx, f.subjects[0]); err == nil {
		st, err := f.js.Stream(ctx, name)
		if err != nil {
			return err
		}
		// Chunks fit the stream's own limit too, so that the stream never
		// refuses a message for its size.
		f.maxMsg = int(st.CachedInfo().Config.MaxMsgSize)
		if f.maxMsg > 0 && f.maxMsg <= 2*streamHeadroom {
			return fmt.Errorf("stream %s: max_msg_size %d leaves no room for a chunk", name, f.maxMsg)
		}
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	if f.cfg.NoCreate {
		return fmt.Errorf("no stream stores subject %q", f.subjects[0])
	}
	subj := expand(f.r.Subject, f.src.Name(), 0)
	if len(f.subjects) > 1 {
		subj = expandWild(f.r.Subject, f.src.Name())
	}
	_, err := f.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       streamName(f.src.Name()),
		Subjects:   []string{subj},
		Storage:    jetstream.FileStorage,
		Duplicates: f.cfg.Duplicates,
	})
	if err == nil {
		f.cfg.Logf("route %s: created stream %s for %s", f.r.Text, streamName(f.src.Name()), subj)
	}
	return err
}

// run forwards until ctx is done, then drains: it waits (up to AckTimeout)
// for the outstanding acknowledgements and releases what they cover.
func (f *forwarder) run(ctx context.Context) error {
	for {
		if err := f.reap(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return f.drain()
		}
		if f.resend {
			if err := f.recover(ctx); err != nil {
				return err
			}
			continue
		}
		if len(f.window) >= f.cfg.Window || f.bytes >= f.cfg.WindowSize {
			f.waitOldest(ctx)
			continue
		}
		buf := f.buffer()
		t, err := f.src.TryTake(buf)
		if errors.Is(err, shmbus.ErrEmpty) || errors.Is(err, shmbus.ErrHeld) {
			if len(f.window) > 0 {
				f.waitOldest(ctx)
				continue
			}
			if errors.Is(err, shmbus.ErrHeld) {
				return fmt.Errorf("bus %q held with nothing in flight", f.src.Name())
			}
			t, err = f.src.Take(ctx, buf)
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				continue // the bus's own timer may see the deadline first
			}
		}
		var sb *shmbus.ShortBufferError
		if errors.As(err, &sb) {
			f.scratch = make([]byte, sb.Need)
			continue
		}
		if err != nil {
			f.m.Errors.WithLabelValues(f.r.Text, "bus").Inc()
			return err
		}
		f.publish(t, f.keep(buf, t.N))
	}
}

// slabSize is the size of the buffers small messages are taken into: a
// message is kept (for a resend) until JetStream acknowledged it, and
// taking it straight into a shared slab spares a copy and an allocation
// per message. A slab is let go when the last message in it is.
const (
	slabSize = 1 << 20
	slabMin  = 64 << 10 // a slab with less room left is replaced
)

// buffer is where the next message is taken: the rest of the slab, or
// the scratch buffer when that is larger (a message a slab cannot hold
// was announced by a ShortBufferError).
func (f *forwarder) buffer() []byte {
	if len(f.scratch) > slabMin {
		return f.scratch
	}
	if len(f.slab) < slabMin {
		f.slab = make([]byte, slabSize)
	}
	return f.slab
}

// keep returns the n bytes taken into buf as the message's own: the
// slab's first n bytes (the slab moves past them, to 8-byte alignment),
// or the scratch buffer, which is then the message's and not reused.
func (f *forwarder) keep(buf []byte, n int) []byte {
	data := buf[:n:n]
	if len(buf) > 0 && len(f.scratch) > 0 && &buf[0] == &f.scratch[0] {
		f.scratch = make([]byte, 64<<10)
		return data
	}
	f.slab = f.slab[min(len(f.slab), (n+7)&^7):]
	return data
}

// newPending returns a pending NATS message with an empty header map,
// reusing one reaped before.
func (f *forwarder) newPending() *pending {
	if n := len(f.free); n > 0 {
		p := f.free[n-1]
		f.free = f.free[:n-1]
		h := p.msg.Header
		clear(h)
		*p = pending{msg: nats.Msg{Header: h}}
		return p
	}
	return &pending{msg: nats.Msg{Header: make(nats.Header, 8)}}
}

// publish sends message t (data) as one NATS message or as chunks.
func (f *forwarder) publish(t shmbus.Taken, data []byte) {
	f.idBuf = append(f.idBuf[:0], f.identity...)
	f.idBuf = append(f.idBuf, '.')
	f.idBuf = append(f.idBuf, f.prios[t.Priority]...)
	f.idBuf = append(f.idBuf, '.')
	f.idBuf = strconv.AppendUint(f.idBuf, t.Position, 16)
	id := string(f.idBuf)
	subj := f.subjects[t.Priority]
	f.chunk = chunkSize(f.nc)
	if f.maxMsg > 0 {
		f.chunk = min(f.chunk, f.maxMsg-streamHeadroom)
	}
	n := 1
	if len(data) > f.chunk {
		n = (len(data) + f.chunk - 1) / f.chunk
	}
	// Headers are stored with every message: small messages carry only
	// what the far side needs (the stream has its own checksums; chunks
	// carry the whole message's, checked after reassembly).
	if f.producer != [2]int{t.Producer, t.ProducerPID} {
		f.producer = [2]int{t.Producer, t.ProducerPID}
		f.producerHdr = []string{strconv.Itoa(t.Producer) + "/" + strconv.Itoa(t.ProducerPID)}
	}
	crc := ""
	if n > 1 {
		crc = fmt.Sprintf("%08x", checksum(data))
	}
	for k := 0; k < n; k++ {
		p := f.newPending()
		p.prio, p.pos, p.last = t.Priority, t.Position, k == n-1
		h := p.msg.Header
		h[HdrPriority] = f.prioHdr[t.Priority]
		h[HdrProducer] = f.producerHdr
		p.msg.Subject = subj
		if n == 1 {
			p.id[0] = id
			h[HdrMsgID] = p.id[:]
			p.msg.Data = data
		} else {
			h.Set(HdrMsgID, id+"."+strconv.Itoa(k))
			h.Set(HdrMessage, id)
			h.Set(HdrBus, f.src.Name())
			h.Set(HdrCRC, crc)
			h.Set(HdrChunk, fmt.Sprintf("%d/%d", k, n))
			h.Set(HdrSize, strconv.Itoa(len(data)))
			end := min((k+1)*f.chunk, len(data))
			p.msg.Data = data[k*f.chunk : end]
		}
		if p.last {
			p.size = len(data)
			f.bytes += len(data)
		}
		f.window = append(f.window, p)
		if cap(f.window) > cap(f.winArr) {
			f.winArr = f.window[:0]
		}
		f.send(p)
	}
}

// send publishes p unless a failure is being recovered from.
func (f *forwarder) send(p *pending) {
	if f.resend {
		p.state, p.fut = failed, nil
		return
	}
	if p.tries > 0 {
		f.m.Redelivered.WithLabelValues(f.r.Text).Inc()
	}
	p.tries++
	fut, err := f.js.PublishMsgAsync(&p.msg, f.stall)
	if err != nil {
		p.state, p.err, p.fut = failed, err, nil
		f.fail(p.err)
		return
	}
	p.state, p.fut = waiting, fut
}

func (f *forwarder) fail(err error) {
	if !f.resend {
		f.m.Errors.WithLabelValues(f.r.Text, "publish").Inc()
		f.cfg.Logf("route %s: publish: %v (will publish again)", f.r.Text, err)
	}
	f.resend = true
}

// settle reads p's outcome if it is known (block: wait for it).
func (f *forwarder) settle(ctx context.Context, p *pending, block bool) {
	if p.state != waiting {
		return
	}
	if !block {
		select {
		case ack := <-p.fut.Ok():
			f.acked(p, ack)
		case err := <-p.fut.Err():
			f.failed(p, err)
		default:
		}
		return
	}
	select {
	case ack := <-p.fut.Ok():
		f.acked(p, ack)
	case err := <-p.fut.Err():
		f.failed(p, err)
	case <-ctx.Done():
	}
}

func (f *forwarder) acked(p *pending, ack *jetstream.PubAck) {
	p.state = acked
	f.acks.Inc()
	if ack.Duplicate {
		f.dups.Inc()
	}
}

func (f *forwarder) failed(p *pending, err error) {
	p.state, p.err = failed, err
	var api *jetstream.APIError
	if errors.As(err, &api) {
		// The server refused this message (too large for the stream,
		// the stream full, ...): it stays on the bus, and is offered
		// again after each back-off until the limit changes.
		f.m.Refused.WithLabelValues(f.r.Text).Inc()
	}
	f.fail(err)
}

// release is what one reap has acknowledged in a lane and not yet
// released: through position pos, n messages of bytes bytes.
type release struct {
	pos      uint64
	n, bytes int
}

// reap collects the outcomes at the front of the window and releases the
// messages they complete: one ReleaseThrough per lane for all the
// messages of that lane acknowledged meanwhile.
func (f *forwarder) reap() error {
	any := false
	for len(f.window) > 0 {
		p := f.window[0]
		f.settle(context.Background(), p, false)
		if p.state != acked {
			break
		}
		f.window[0] = nil
		f.window = f.window[1:]
		if p.last {
			r := &f.toFree[p.prio]
			r.pos = p.pos
			r.n++
			r.bytes += p.size
			any = true
		} else {
			f.chunks.Inc()
		}
		p.msg.Data, p.fut, p.err = nil, nil, nil
		f.free = append(f.free, p)
	}
	if len(f.window) == 0 {
		f.window = f.winArr[:0] // start again at the front of the array
	}
	if !any {
		return nil
	}
	for prio := range f.toFree {
		r := &f.toFree[prio]
		if r.n == 0 {
			continue
		}
		if err := f.src.Release(prio, r.pos); err != nil {
			f.m.Errors.WithLabelValues(f.r.Text, "bus").Inc()
			return err
		}
		f.bytes -= r.bytes
		f.msgs[prio].Add(float64(r.n))
		f.msgBytes[prio].Add(float64(r.bytes))
		*r = release{}
	}
	f.backoff.reset()
	return nil
}

// waitOldest waits for the oldest outstanding acknowledgement.
func (f *forwarder) waitOldest(ctx context.Context) {
	if len(f.window) > 0 {
		f.settle(ctx, f.window[0], true)
	}
}

// recover runs after a failure: every outstanding publish settles (the
// acknowledgement timeout bounds that), then after a back-off the window's
// unacknowledged messages are published again, oldest first.
func (f *forwarder) recover(ctx context.Context) error {
	for _, p := range f.window {
		f.settle(ctx, p, true)
	}
	if err := f.reap(); err != nil {
		return err
	}
	if !f.backoff.sleep(ctx) {
		return nil // shutting down: run drains
	}
	if !f.nc.IsConnected() {
		return nil // try again after the next back-off
	}
	f.resend = false
	for _, p := range f.window {
		if p.state == failed {
			f.send(p)
			if f.resend {
				break
			}
		}
	}
	return nil
}

// drain waits a bounded time for outstanding acknowledgements and
// releases what they cover; whatever is left stays on the bus for the next
// bridge (and is published under the same ids).
func (f *forwarder) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.AckTimeout)
	defer cancel()
	for _, p := range f.window {
		if p.fut != nil {
			f.settle(ctx, p, true)
		}
	}
	err := f.reap()
	if n := len(f.window); n > 0 {
		f.cfg.Logf("route %s: %d NATS messages not acknowledged at shutdown; they stay on bus %q", f.r.Text, n, f.src.Name())
	}
	return err
}

// streamName is the name of the stream the bridge makes for a bus.
func streamName(bus string) string {
	b := []byte("SHMBUS_" + bus)
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

// expandWild is the subject template with {priority} as a wildcard.
func expandWild(tmpl, bus string) string {
	return expand(replaceAll(tmpl, "{priority}", "*"), bus, 0)
}

// headroom is what a chunk leaves of the server's max_payload for headers;
// streamHeadroom what it leaves of a stream's max_msg_size (the headers are
// a few hundred bytes).
const (
	headroom       = 4 << 10
	streamHeadroom = 1 << 10
)

// chunkSize is the payload of one NATS message: the server's max_payload
// less room for the headers (1 MiB's worth before the first connection).
func chunkSize(nc *nats.Conn) int {
	mp := int(nc.MaxPayload())
	if mp <= 2*headroom {
		mp = 1 << 20
	}
	return mp - headroom
}
