package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/failpoint"
)

// afterSend fires once a message is on the bus, before the route records
// or acknowledges anything (tests kill the bridge there).
var afterSend = &failpoint.Point{}

// A stream->bus route.
//
// A durable pull consumer (AckExplicit) is read through an iterator that
// pulls at most FetchSize bytes ahead; each message is sent to the bus,
// and acknowledged only after Send returned. Send blocks while the bus's lane is full, and nothing is
// fetched meanwhile: the route holds at most one batch (plus the chunks of
// one message being reassembled), never a growing buffer. Messages are
// sent in stream order, so the order within each priority is the order
// the stream stored them in.
//
// The route's cursor is a state file beside the bus (cursor.go): the
// stream sequence of the last message sent and, written before each
// message is published, the message in flight with the lane position of
// its record. JetStream redelivers a message whose acknowledgement it did
// not get only after AckWait, by which time later ones have gone to the
// bus; so at start the route finds out from the bus whether the message
// in flight got there (cursor.landed), compares the result with the
// consumer's acknowledgement floor and, if anything was delivered and not
// acknowledged, makes the consumer again from the first sequence not on
// the bus. Messages at or below that sequence are acknowledged and not
// sent again. The same remaking happens when a delivery goes missing (the
// consumer sequence skips one: a message dropped on the way, which
// JetStream would redeliver only after AckWait, out of order). So a crash
// neither loses nor doubles a message, with two exceptions written in
// docs/bridge.md: a message larger than one record (recorded after Send),
// and a lane on which another producer's dead claim was recovered while
// the bridge was down (the route cannot tell, and sends again).
//
// A message the route cannot deliver (no or bad shmbus headers, a priority
// the bus does not have, a size beyond the bus's MaxMessage, a checksum
// that does not match, chunks that do not follow each other) is published
// to the dead-letter subject with Shmbus-Error saying why, acknowledged,
// counted and logged.

type deliverer struct {
	r     Route
	cfg   *Config
	m     *Metrics
	nc    *nats.Conn
	js    jetstream.JetStream
	bus   *shmbus.Bus
	prod  *shmbus.Producer
	prios []string

	stream, durable string
	cons            jetstream.Consumer
	dlJS            jetstream.JetStream // nil: dead letters go out as core NATS messages
	state           *os.File
	floor           uint64 // stream sequence of the last message sent to the bus
	cseq            uint64 // consumer sequence of the last delivery
	part            *partial

	// The message being sent, for note (made once: no closure per message).
	created     uint64 // the bus's creation time, for the state file
	sending     uint64
	sendingPrio int
	noteFn      func(pos, recovered uint64) error
}

// partial is a chunked message being reassembled.
type partial struct {
	f       frame
	buf     []byte
	next    int
	msgs    []jetstream.Msg
	touched time.Time // when JetStream was last told the chunks are in progress
}

func openDeliverer(r Route, cfg *Config, m *Metrics, nc *nats.Conn) (*deliverer, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	b, err := shmbus.Open(r.Bus, &shmbus.OpenOptions{Dir: cfg.Dir})
	if err != nil {
		return nil, err
	}
	p, err := b.NewProducer()
	if err != nil {
		b.Close()
		return nil, err
	}
	d := &deliverer{r: r, cfg: cfg, m: m, nc: nc, js: js, bus: b, prod: p, durable: durableName(r)}
	for i := 0; i < b.Priorities(); i++ {
		d.prios = append(d.prios, strconv.Itoa(i))
	}
	path := filepath.Join(busDir(cfg.Dir), "shmbus-bridge."+d.durable+".state")
	if d.state, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		d.Close()
		return nil, fmt.Errorf("state file: %w", err)
	}
	var w [cursorSize + 1]byte
	n, _ := d.state.ReadAt(w[:], 0)
	c, err := parseCursor(w[:n])
	if err != nil {
		d.m.Errors.WithLabelValues(r.Text, "state").Inc()
		cfg.Logf("route %s: state file %s: %v; resuming from the consumer's acknowledgements", r.Text, path, err)
	}
	d.floor = c.floor
	if c.seq != 0 {
		landed, sure, why := c.landed(b)
		if !sure {
			d.m.Errors.WithLabelValues(r.Text, "uncertain").Inc()
			cfg.Logf("route %s: cannot tell whether stream sequence %d reached bus %q (%s): sending it again", r.Text, c.seq, r.Bus, why)
		}
		if landed {
			d.floor = c.seq
		}
	}
	d.noteFn, d.created = d.note, uint64(b.Config().Created.UnixNano())
	if err := d.persist(d.floor); err != nil {
		d.Close()
		return nil, fmt.Errorf("state file: %w", err)
	}
	return d, nil
}

func (d *deliverer) Close() error {
	var errs []error
	if d.state != nil {
		errs = append(errs, d.state.Close())
	}
	errs = append(errs, d.prod.Close(), d.bus.Close())
	return errors.Join(errs...)
}

// durableName is the JetStream consumer of a route: the same for the same
// route, so a restarted bridge resumes where it was.
func durableName(r Route) string {
	n := strings.NewReplacer(".", "_", "*", "_", ">", "_").Replace(r.Bus)
	return fmt.Sprintf("shmbus-%s-%08x", n, crc32.ChecksumIEEE([]byte(r.Subject)))
}

func busDir(dir string) string {
	if dir != "" {
		return dir
	}
	if d := os.Getenv("SHMBUS_DIR"); d != "" {
		return d
	}
	return "/dev/shm"
}

// setup finds the stream and makes (or remakes) the durable consumer so
// that its next delivery is the first message not yet sent to the bus.
func (d *deliverer) setup(ctx context.Context, remake bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if d.dlJS = nil; deadLetterStored(ctx, d.js, d.cfg.DeadLetter) {
		d.dlJS = d.js
	}
	if d.stream, err = d.js.StreamNameBySubject(ctx, d.r.Subject); err != nil {
		return fmt.Errorf("stream for %q: %w", d.r.Subject, err)
	}
	st, err := d.js.Stream(ctx, d.stream)
	if err != nil {
		return err
	}
	if last := st.CachedInfo().State.LastSeq; d.floor > last {
		d.cfg.Logf("route %s: state file says sequence %d, stream %s ends at %d: starting over", d.r.Text, d.floor, d.stream, last)
		d.floor = 0
		if err := d.persist(0); err != nil {
			return err
		}
	}
	start := d.floor
	c, err := st.Consumer(ctx, d.durable)
	if err == nil {
		info := c.CachedInfo()
		start = max(start, info.AckFloor.Stream)
		if !remake && info.NumAckPending == 0 && info.Delivered.Stream <= start {
			d.cons = c
			return nil
		}
		// Delivered and not acknowledged: those would come back after
		// AckWait, behind later messages. Start again in order.
		if err := st.DeleteConsumer(ctx, d.durable); err != nil {
			return err
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       d.durable,
		FilterSubject: d.r.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.AckWait,
		MaxAckPending: 4096 + d.bus.MaxMessage()/chunkSize(d.nc),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if start > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start+1
	}
	d.cons, err = st.CreateOrUpdateConsumer(ctx, cc)
	d.cseq, d.part = 0, nil
	return err
}

// errGap is a delivery that went missing.
var errGap = errors.New("a delivery went missing")

// run fetches and delivers until ctx is done. The iterator pulls ahead
// at most FetchSize bytes (at least twice the server's max_payload) and
// pulls more only as messages are taken from it: while Send waits for room
// in the bus, nothing more comes.
func (d *deliverer) run(ctx context.Context) error {
	for ctx.Err() == nil {
		size := max(d.cfg.FetchSize, 2*int(d.nc.MaxPayload()))
		it, err := d.cons.Messages(jetstream.PullMaxBytes(size))
		if err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for err == nil {
			var msg jetstream.Msg
			if msg, err = it.Next(); err == nil {
				err = d.handle(ctx, msg)
			}
		}
		stop()
		it.Stop()
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errGap) {
			return err
		}
		d.m.Errors.WithLabelValues(d.r.Text, "gap").Inc()
		d.cfg.Logf("route %s: %v; resuming after stream sequence %d", d.r.Text, err, d.floor)
		if err := d.setup(ctx, true); err != nil {
			return err
		}
	}
	return nil
}

func (d *deliverer) handle(ctx context.Context, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		d.m.Errors.WithLabelValues(d.r.Text, "metadata").Inc()
		return nil
	}
	seq := meta.Sequence.Stream
	if d.cseq != 0 && meta.Sequence.Consumer != d.cseq+1 {
		return fmt.Errorf("%w: consumer sequence %d after %d", errGap, meta.Sequence.Consumer, d.cseq)
	}
	d.cseq = meta.Sequence.Consumer
	if meta.NumDelivered > 1 {
		d.m.Redelivered.WithLabelValues(d.r.Text).Inc()
	}
	if seq <= d.floor {
		d.ack(msg) // sent before a restart; its acknowledgement was lost
		return nil
	}
	f, err := parseFrame(msg.Headers(), len(msg.Data()), d.bus.Priorities())
	if err != nil {
		return d.deadLetter(ctx, []jetstream.Msg{msg}, "headers", err)
	}
	if f.size > d.bus.MaxMessage() {
		if f.index == 0 {
			d.m.Refused.WithLabelValues(d.r.Text).Inc() // a message, not each chunk
		}
		return d.deadLetter(ctx, []jetstream.Msg{msg}, "too-large",
			fmt.Errorf("message of %d bytes, bus %q takes at most %d", f.size, d.bus.Name(), d.bus.MaxMessage()))
	}
	if f.count == 1 {
		return d.deliver(ctx, f, msg.Data(), []jetstream.Msg{msg}, seq)
	}
	if p := d.part; p != nil && p.f.message == f.message && f.index < p.next {
		return nil // a chunk delivered again while the message is held: the first delivery is acknowledged with it
	}
	if p := d.part; p != nil && (p.f.message != f.message || f.index != p.next) {
		d.part = nil
		if err := d.deadLetter(ctx, p.msgs, "incomplete", fmt.Errorf("chunks %d of %d of message %s, then another message", p.next, p.f.count, p.f.message)); err != nil {
			return err
		}
	}
	if d.part == nil {
		if f.index != 0 {
			return d.deadLetter(ctx, []jetstream.Msg{msg}, "incomplete", fmt.Errorf("chunk %d of %d of message %s without its first", f.index, f.count, f.message))
		}
		d.part = &partial{f: f, buf: make([]byte, 0, f.size), touched: time.Now()}
	}
	p := d.part
	if len(p.buf)+len(msg.Data()) > p.f.size || f.count != p.f.count || f.size != p.f.size {
		d.part = nil
		return d.deadLetter(ctx, append(p.msgs, msg), "incomplete", fmt.Errorf("chunks of message %s do not add up to %d bytes", f.message, p.f.size))
	}
	p.buf = append(p.buf, msg.Data()...)
	p.msgs = append(p.msgs, msg)
	p.next++
	if p.next < p.f.count {
		if time.Since(p.touched) > d.cfg.AckWait/4 {
			// Held chunks are acknowledged with the whole message; keep
			// JetStream from redelivering them meanwhile.
			for _, m := range p.msgs {
				m.InProgress()
			}
			p.touched = time.Now()
		}
		return nil
	}
	d.part = nil
	if len(p.buf) != p.f.size {
		return d.deadLetter(ctx, p.msgs, "incomplete", fmt.Errorf("message %s: %d bytes of %d", f.message, len(p.buf), p.f.size))
	}
	d.m.Chunks.WithLabelValues(d.r.Text).Add(float64(len(p.msgs)))
	return d.deliver(ctx, p.f, p.buf, p.msgs, seq)
}

// deliver sends a whole message to the bus, records it in the state file
// and acknowledges its NATS messages.
func (d *deliverer) deliver(ctx context.Context, f frame, data []byte, msgs []jetstream.Msg, seq uint64) error {
	if f.hasCRC && checksum(data) != f.crc {
		return d.deadLetter(ctx, msgs, "checksum", fmt.Errorf("CRC-32C %08x, header says %08x", checksum(data), f.crc))
	}
	// A message that fits one record is sent with its position noted in
	// the state file before it is published: after a crash there, the
	// restarted route finds out whether it reached the bus (exactly once).
	// A larger one (fragments) is recorded after Send returned.
	noted := len(data) <= d.bus.MaxRecordPayload()
	d.sending, d.sendingPrio = seq, f.prio
	var bo backoff
	for {
		var err error
		if noted {
			err = d.prod.SendNoted(ctx, data, f.prio, d.noteFn)
		} else {
			err = d.prod.Send(ctx, data, f.prio)
		}
		if errors.Is(err, shmbus.ErrFull) { // a fail-fast bus: wait for room here
			if !bo.sleep(ctx) {
				return ctx.Err()
			}
			continue
		}
		if errors.Is(err, shmbus.ErrTooLarge) {
			d.m.Refused.WithLabelValues(d.r.Text).Inc()
			return d.deadLetter(ctx, msgs, "too-large", err)
		}
		if err != nil {
			d.m.Errors.WithLabelValues(d.r.Text, "bus").Inc()
			return err
		}
		break
	}
	afterSend.Fire()
	d.floor = seq
	if !noted {
		if err := d.persist(seq); err != nil {
			return err
		}
	}
	for _, m := range msgs {
		d.ack(m)
	}
	d.m.Messages.WithLabelValues(d.r.Text, d.prios[f.prio]).Inc()
	d.m.Bytes.WithLabelValues(d.r.Text, d.prios[f.prio]).Add(float64(len(data)))
	return nil
}

// persist records floor with nothing in flight.
func (d *deliverer) persist(floor uint64) error {
	return d.writeCursor(cursor{floor: floor})
}

// note records the message being sent at lane position pos, before it is
// published (SendNoted calls it).
func (d *deliverer) note(pos, recovered uint64) error {
	return d.writeCursor(cursor{floor: d.floor, seq: d.sending, prio: d.sendingPrio, pos: pos,
		recovered: recovered, slot: d.prod.Slot(), created: d.created})
}

func (d *deliverer) writeCursor(c cursor) error {
	w := c.encode()
	if _, err := d.state.WriteAt(w[:], 0); err != nil {
		d.m.Errors.WithLabelValues(d.r.Text, "state").Inc()
		return err
	}
	return nil
}

func (d *deliverer) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		d.m.Errors.WithLabelValues(d.r.Text, "ack").Inc()
		return
	}
	d.m.Acks.WithLabelValues(d.r.Text).Inc()
}

// deadLetter publishes msgs to the dead-letter subject, saying why, and
// acknowledges them. It goes through JetStream when a stream stores the
// subject, else as a core NATS message.
func (d *deliverer) deadLetter(ctx context.Context, msgs []jetstream.Msg, reason string, why error) error {
	for _, m := range msgs {
		if err := publishDeadLetter(ctx, d.nc, d.dlJS, d.cfg.DeadLetter, d.r.Text, m.Headers(), m.Data(), why); err != nil {
			d.m.Errors.WithLabelValues(d.r.Text, "dead-letter").Inc()
			return fmt.Errorf("dead letter: %w", err)
		}
		d.ack(m)
		d.m.DeadLetters.WithLabelValues(d.r.Text, reason).Inc()
	}
	d.cfg.Logf("route %s: %d message(s) dead-lettered to %s: %v", d.r.Text, len(msgs), d.cfg.DeadLetter, why)
	return nil
}

// deadLetterStored says whether a stream stores the dead-letter subject:
// then dead letters are published through JetStream (and kept), else as
// core NATS messages (seen only by whoever subscribes at that moment).
func deadLetterStored(ctx context.Context, js jetstream.JetStream, subj string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := js.StreamNameBySubject(ctx, subj)
	return err == nil
}

func publishDeadLetter(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, subj, route string, h nats.Header, data []byte, why error) error {
	dl := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: data}
	for k, v := range h {
		if k != HdrMsgID { // a dead letter is not a duplicate of anything
			dl.Header[k] = v
		}
	}
	dl.Header.Set(HdrError, why.Error())
	dl.Header.Set(HdrRoute, route)
	if js == nil {
		return nc.PublishMsg(dl)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := js.PublishMsg(ctx, dl)
	return err
}
