//go:build linux

package daemon

// Subscriptions of fan-out buses for peers that do not map the segment:
// SUB_OPEN, SUB_RECV, SUB_ACK and SUB_CLOSE (docs/daemon-protocol.md). The
// daemon holds the subscription for the connection, takes messages with
// Subscription.TryTake/Take and releases them on SUB_ACK (or, with
// SUB_RECV's ACK flag, once the reply is written): a connection that ends
// with messages not acknowledged leaves them to the subscription's next
// holder, which receives them again.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/shmbus/shmbus"
)

// Frame types of subscriptions.
const (
	TypeSubOpen  uint16 = 0x0011
	TypeSubRecv  uint16 = 0x0012
	TypeSubAck   uint16 = 0x0013
	TypeSubClose uint16 = 0x0014

	TypeSubscription uint16 = 0x8011 // SUB_OPEN
	TypeBatch        uint16 = 0x8012 // SUB_RECV
)

// CodeLagged is the ERROR of a SUB_RECV on a lossy subscription that was
// overrun: the payload carries, after the message, how many messages of
// each priority it missed.
const CodeLagged Code = 25

// Flags of SUB_OPEN.
const (
	SubLossy     = 1 << 0
	SubOldest    = 1 << 1
	SubEvents    = 1 << 2
	SubEphemeral = 1 << 3
)

// Flags of the SUBSCRIPTION reply.
const (
	SubIsLossy   = 1 << 0
	SubIsDurable = 1 << 1
)

// Flags of SUB_RECV (bit 0 is FlagNoWait) and SUB_CLOSE.
const (
	SubRecvAck     = 1 << 1 // release what the reply carries once it is written
	SubCloseRemove = 1 << 0 // unsubscribe after closing
)

// Item kinds of a BATCH.
const (
	ItemMessage = 0
	ItemEvent   = 1
)

func init() {
	typeNames[TypeSubOpen] = "sub_open"
	typeNames[TypeSubRecv] = "sub_recv"
	typeNames[TypeSubAck] = "sub_ack"
	typeNames[TypeSubClose] = "sub_close"
}

// SubOpen is the SUB_OPEN request.
type SubOpen struct {
	Bus, Subscription string
	Flags             uint8
}

func (m SubOpen) encode() []byte {
	var e enc
	e.str(m.Bus)
	e.str(m.Subscription)
	e.u8(m.Flags)
	return e.b
}

func decodeSubOpen(p []byte) (m SubOpen, err error) {
	d := dec{b: p}
	m.Bus, m.Subscription, m.Flags = d.str(), d.str(), d.u8()
	return m, d.done()
}

// SubInfo is the SUBSCRIPTION reply.
type SubInfo struct {
	Subscription string
	Flags        uint8
	Priorities   uint16
}

func (m SubInfo) encode() []byte {
	var e enc
	e.str(m.Subscription)
	e.u8(m.Flags)
	e.u16(m.Priorities)
	return e.b
}

func decodeSubInfo(p []byte) (m SubInfo, err error) {
	d := dec{b: p}
	m.Subscription, m.Flags, m.Priorities = d.str(), d.u8(), d.u16()
	return m, d.err
}

// SubRecv is the SUB_RECV request.
type SubRecv struct {
	Bus, Subscription string
	Flags             uint8
	Max               uint16 // most items in the reply; 0 = 1
	TimeoutMS         uint32
}

func (m SubRecv) encode() []byte {
	var e enc
	e.str(m.Bus)
	e.str(m.Subscription)
	e.u8(m.Flags)
	e.u16(m.Max)
	e.u32(m.TimeoutMS)
	return e.b
}

func decodeSubRecv(p []byte) (m SubRecv, err error) {
	d := dec{b: p}
	m.Bus, m.Subscription, m.Flags, m.Max, m.TimeoutMS = d.str(), d.str(), d.u8(), d.u16(), d.u32()
	return m, d.done()
}

// SubAck is the SUB_ACK request.
type SubAck struct {
	Bus, Subscription string
	Priority          uint8
	Position          uint64
}

func (m SubAck) encode() []byte {
	var e enc
	e.str(m.Bus)
	e.str(m.Subscription)
	e.u8(m.Priority)
	e.u64(m.Position)
	return e.b
}

func decodeSubAck(p []byte) (m SubAck, err error) {
	d := dec{b: p}
	m.Bus, m.Subscription, m.Priority, m.Position = d.str(), d.str(), d.u8(), d.u64()
	return m, d.done()
}

// SubClose is the SUB_CLOSE request.
type SubClose struct {
	Bus, Subscription string
	Flags             uint8
}

func (m SubClose) encode() []byte {
	var e enc
	e.str(m.Bus)
	e.str(m.Subscription)
	e.u8(m.Flags)
	return e.b
}

func decodeSubClose(p []byte) (m SubClose, err error) {
	d := dec{b: p}
	m.Bus, m.Subscription, m.Flags = d.str(), d.str(), d.u8()
	return m, d.done()
}

// Item is one item of a BATCH: a message (Kind ItemMessage) or a peer
// event (ItemEvent, Event set).
type Item struct {
	Kind     uint8
	Priority uint8
	Position uint64
	Data     []byte
	Event    Event
}

// decodeBatch decodes a BATCH reply.
func decodeBatch(p []byte) ([]Item, error) {
	d := dec{b: p}
	n := d.u16()
	if uint64(n) > uint64(len(p)) {
		return nil, errDecode
	}
	items := make([]Item, 0, n)
	for i := uint16(0); i < n && d.err == nil; i++ {
		var it Item
		it.Kind = d.u8()
		switch it.Kind {
		case ItemMessage:
			it.Priority, it.Position, it.Data = d.u8(), d.u64(), d.bytes()
		case ItemEvent:
			ev := d.bytes()
			if d.err == nil {
				var err error
				if it.Event, err = decodeEvent(ev); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("%w: item kind %d", errDecode, it.Kind)
		}
		items = append(items, it)
	}
	return items, d.err
}

// LaggedMissed returns the per-priority counts of a LAGGED error's payload
// (after its code and message), or nil.
func LaggedMissed(p []byte) []uint64 {
	d := dec{b: p}
	d.u16()
	d.str()
	n := d.u16()
	if d.err != nil || uint64(n)*8 > uint64(len(d.b)) {
		return nil
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = d.u64()
	}
	return out
}

// errorPayload is the ERROR payload of err: its code and message, and for
// a lagged subscription the counts it missed per priority.
func errorPayload(err error) (Code, []byte) {
	code, msg := errorCode(err)
	p := encodeError(code, msg)
	var lag *shmbus.LaggedError
	if code == CodeLagged && errors.As(err, &lag) {
		e := enc{b: p}
		e.u16(uint16(len(lag.Missed)))
		for _, n := range lag.Missed {
			e.u64(n)
		}
		p = e.b
	}
	return code, p
}

// fanCode maps the errors of fan-out buses, or returns false.
func fanCode(err error) (Code, bool) {
	switch {
	case errors.Is(err, shmbus.ErrLagged):
		return CodeLagged, true
	case errors.Is(err, shmbus.ErrNoSubSlot):
		return CodeNoSlot, true
	case errors.Is(err, shmbus.ErrFanOut), errors.Is(err, shmbus.ErrNotFanOut):
		return CodeBadArgument, true
	case errors.Is(err, shmbus.ErrHeld):
		return CodeBusy, true
	}
	return 0, false
}

// subKey names a subscription a connection holds.
type subKey struct {
	e    *entry
	name string
}

// fanSub is a subscription the daemon holds for a connection.
type fanSub struct {
	sub *shmbus.Subscription
	lag error // an overrun found while filling a batch, for the next SUB_RECV
}

func (c *conn) doSubOpen(ctx context.Context, p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeSubOpen(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Flags&^(SubLossy|SubOldest|SubEvents|SubEphemeral) != 0 {
		return 0, nil, nil, &Error{CodeBadArgument, fmt.Sprintf("subscribe to %q: bad flags %#x", m.Bus, m.Flags)}
	}
	e, err := c.bus(m.Bus, permRead, "subscribe to")
	if err != nil {
		return 0, nil, nil, err
	}
	opts := &shmbus.SubscribeOptions{Lossy: m.Flags&SubLossy != 0, Events: m.Flags&SubEvents != 0,
		Ephemeral: m.Flags&SubEphemeral != 0}
	if m.Flags&SubOldest != 0 {
		opts.From = shmbus.FromOldest
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s, err := e.bus.Subscribe(sctx, m.Subscription, opts)
	cancel()
	if err != nil {
		return 0, nil, nil, err
	}
	e.mu.Lock()
	e.proxied[s.Slot()] = int(c.cred.pid)
	e.mu.Unlock()
	c.mu.Lock()
	c.fans[subKey{e, s.Name()}] = &fanSub{sub: s}
	c.mu.Unlock()
	info := SubInfo{Subscription: s.Name(), Priorities: uint16(e.bus.Priorities())}
	if s.Lossy() {
		info.Flags |= SubIsLossy
	}
	if s.Durable() {
		info.Flags |= SubIsDurable
	}
	return TypeSubscription, info.encode(), nil, nil
}

// fan finds the subscription the connection holds on bus called sub.
func (c *conn) fan(bus, sub string) (*entry, *fanSub, error) {
	e, err := c.s.lookup(bus)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	f := c.fans[subKey{e, sub}]
	c.mu.Unlock()
	if f == nil {
		return nil, nil, &Error{CodeNotFound, fmt.Sprintf("bus %q: this connection holds no subscription %q (SUB_OPEN it first)", bus, sub)}
	}
	return e, f, nil
}

// itemHeader is the bytes of a message item before its data: kind,
// priority, position, length.
const itemHeader = 1 + 1 + 8 + 4

func (c *conn) doSubRecv(ctx context.Context, p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeSubRecv(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Flags&^(FlagNoWait|SubRecvAck) != 0 {
		return 0, nil, nil, &Error{CodeBadArgument, fmt.Sprintf("receive from %q: bad flags %#x", m.Subscription, m.Flags)}
	}
	e, f, err := c.fan(m.Bus, m.Subscription)
	if err != nil {
		return 0, nil, nil, err
	}
	if f.lag != nil {
		err, f.lag = f.lag, nil
		c.countLag(err)
		return 0, nil, nil, err
	}
	limit := max(int(m.Max), 1)
	if c.rbuf == nil {
		if err := c.take(smallMessage+5, smallMessage+5); err != nil {
			return 0, nil, nil, c.overloaded("receive from", m.Subscription, smallMessage+5, err)
		}
		c.rbuf = make([]byte, smallMessage+5)
	}
	s := f.sub
	buf, held := c.rbuf, 0
	out := 2 // the count goes first
	var evbuf enc
	var last [256]struct {
		pos uint64
		ok  bool
	}
	count, bytes := 0, 0
	// put appends one taken item to buf at out (room checks it fits).
	put := func(t shmbus.SubTaken) {
		if t.Event != nil {
			ev := c.event(e, t.Event)
			evbuf.b = ev.encode()
			buf[out] = ItemEvent
			binary.LittleEndian.PutUint32(buf[out+1:], uint32(len(evbuf.b)))
			out += 5 + copy(buf[out+5:], evbuf.b)
			return
		}
		buf[out] = ItemMessage
		buf[out+1] = uint8(t.Prio)
		binary.LittleEndian.PutUint64(buf[out+2:], t.Position)
		binary.LittleEndian.PutUint32(buf[out+10:], uint32(t.N))
		out += itemHeader + t.N
		last[t.Prio] = struct {
			pos uint64
			ok  bool
		}{t.Position, true}
		bytes += t.N
	}
	// room is where the next message goes, if buf has room for an item
	// header and for an event item (a take may hand over either).
	eventItem := 5 + 26 + len(e.name)
	room := func() []byte {
		if len(buf)-out < max(itemHeader, eventItem) {
			return nil
		}
		return buf[out+itemHeader:]
	}
	// The first item: waited for (unless NOWAIT), in a buffer of its own
	// from the budget if it is larger than the connection's.
	var t shmbus.SubTaken
	if m.Flags&FlagNoWait != 0 {
		t, err = s.TryTake(room())
	} else {
		rctx, cancel := ctxFor(ctx, m.TimeoutMS)
		t, err = s.Take(rctx, room())
		cancel()
	}
	var short *shmbus.ShortBufferError
	if errors.As(err, &short) {
		need := short.Need + itemHeader + 2
		if int64(need) > c.s.mem.largest() {
			return 0, nil, nil, &Error{CodeTooLarge, fmt.Sprintf("receive from %q: a message of %d bytes is larger than the daemon's memory budget lets one request hold (%d bytes); map the bus to receive it",
				m.Subscription, short.Need, c.s.mem.largest())}
		}
		if err := c.take(need, need); err != nil {
			return 0, nil, nil, c.overloaded("receive from", m.Subscription, need, err)
		}
		held, buf = need, make([]byte, need)
		t, err = s.TryTake(room())
	}
	if err != nil {
		c.give(held)
		c.countLag(err)
		return 0, nil, nil, err
	}
	put(t)
	count++
	// More, while they are there, fit, and limit allows.
	for count < limit {
		r := room()
		if r == nil {
			break
		}
		t, err := s.TryTake(r)
		if err != nil {
			if errors.Is(err, shmbus.ErrLagged) {
				f.lag = err // for the next SUB_RECV, after these
			}
			break // or empty, or too large for what is left: for the next SUB_RECV
		}
		put(t)
		count++
	}
	binary.LittleEndian.PutUint16(buf, uint16(count))
	ack := m.Flags&SubRecvAck != 0
	c.afterReply = func(werr error) {
		defer c.give(held)
		if werr != nil {
			c.s.cfg.Logf("%s: reply to SUB_RECV on %q/%q not written (%v): its messages stay on the bus", c.label, m.Bus, m.Subscription, werr)
			return
		}
		c.s.metrics.relayedSub(count, bytes)
		if !ack {
			return
		}
		for prio, l := range last[:e.bus.Priorities()] {
			if l.ok {
				if err := s.AckThrough(prio, l.pos); err != nil {
					c.s.cfg.Logf("%s: release delivered messages of %q/%q: %v", c.label, m.Bus, m.Subscription, err)
				}
			}
		}
	}
	return TypeBatch, buf[:out], nil, nil
}

func (c *conn) countLag(err error) {
	var lag *shmbus.LaggedError
	if errors.As(err, &lag) {
		c.s.metrics.lagged(lag)
	}
}

// event is the EVENT of a subscription's peer event on e.
func (c *conn) event(e *entry, pe *shmbus.PeerEvent) Event {
	ev := Event{Kind: uint8(pe.Kind), Bus: e.name, PID: uint32(pe.PID), Slot: uint16(pe.Slot), Role: roleCode(pe.Role),
		Time: uint64(time.Now().UnixNano())}
	e.mu.Lock()
	if pid, ok := e.proxied[pe.Slot]; ok {
		ev.Client = uint32(pid)
	}
	e.mu.Unlock()
	return ev
}

func (c *conn) doSubAck(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeSubAck(p)
	if err != nil {
		return 0, nil, nil, err
	}
	_, f, err := c.fan(m.Bus, m.Subscription)
	if err != nil {
		return 0, nil, nil, err
	}
	if err := f.sub.AckThrough(int(m.Priority), m.Position); err != nil {
		if errors.Is(err, shmbus.ErrPriority) {
			return 0, nil, nil, err
		}
		return 0, nil, nil, &Error{CodeBadArgument, err.Error()}
	}
	return TypeOK, nil, nil, nil
}

func (c *conn) doSubClose(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeSubClose(p)
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Flags&^SubCloseRemove != 0 {
		return 0, nil, nil, &Error{CodeBadArgument, fmt.Sprintf("close %q: bad flags %#x", m.Subscription, m.Flags)}
	}
	e, err := c.s.lookup(m.Bus)
	if err != nil {
		return 0, nil, nil, err
	}
	c.mu.Lock()
	f := c.fans[subKey{e, m.Subscription}]
	delete(c.fans, subKey{e, m.Subscription})
	c.mu.Unlock()
	if f != nil {
		c.closeFan(e, f)
	}
	if m.Flags&SubCloseRemove != 0 {
		if _, err := c.bus(m.Bus, permWrite, "unsubscribe from"); err != nil {
			return 0, nil, nil, err
		}
		if err := e.bus.Unsubscribe(m.Subscription); err != nil && (f == nil || !errors.Is(err, shmbus.ErrNotExist)) {
			return 0, nil, nil, err
		}
	} else if f == nil {
		return 0, nil, nil, &Error{CodeNotFound, fmt.Sprintf("bus %q: this connection holds no subscription %q", m.Bus, m.Subscription)}
	}
	return TypeOK, nil, nil, nil
}

// closeFan gives back a subscription the daemon held for the connection:
// what was taken and not acknowledged stays for the next holder.
func (c *conn) closeFan(e *entry, f *fanSub) {
	f.sub.Close()
	c.s.poke()
}

// closeFans closes every subscription the connection holds (on bus e only,
// if not nil).
func (c *conn) closeFans(e *entry) {
	c.mu.Lock()
	var fs []subKey
	for k := range c.fans {
		if e == nil || k.e == e {
			fs = append(fs, k)
		}
	}
	gone := make([]*fanSub, 0, len(fs))
	for _, k := range fs {
		gone = append(gone, c.fans[k])
		delete(c.fans, k)
	}
	c.mu.Unlock()
	for i, f := range gone {
		c.closeFan(fs[i].e, f)
	}
}

// Client side.

// SubOpen attaches to (or makes) subscription sub of bus through the
// daemon and returns its name (generated for "") and flags.
func (c *Client) SubOpen(bus, sub string, flags uint8) (SubInfo, error) {
	f, err := c.Do(TypeSubOpen, SubOpen{Bus: bus, Subscription: sub, Flags: flags}.encode())
	if err != nil {
		return SubInfo{}, err
	}
	return decodeSubInfo(f.Payload)
}

// SubRecv receives up to max items of the subscription.
func (c *Client) SubRecv(bus, sub string, flags uint8, max int, timeout time.Duration) ([]Item, error) {
	f, err := c.Do(TypeSubRecv, SubRecv{Bus: bus, Subscription: sub, Flags: flags, Max: uint16(max), TimeoutMS: millis(timeout)}.encode())
	if err != nil {
		var de *Error
		if errors.As(err, &de) && de.Code == CodeLagged {
			return nil, &LaggedError{Err: de, Missed: LaggedMissed(f.Payload)}
		}
		return nil, err
	}
	return decodeBatch(f.Payload)
}

// LaggedError is a LAGGED reply: how many messages of each priority the
// subscription missed.
type LaggedError struct {
	Err    *Error
	Missed []uint64
}

func (e *LaggedError) Error() string { return e.Err.Error() }
func (e *LaggedError) Unwrap() error { return e.Err }

// SubAck releases the subscription's taken messages of prio through pos.
func (c *Client) SubAck(bus, sub string, prio int, pos uint64) error {
	_, err := c.Do(TypeSubAck, SubAck{Bus: bus, Subscription: sub, Priority: uint8(prio), Position: pos}.encode())
	return err
}

// SubClose gives the subscription back (and with remove, unsubscribes it).
func (c *Client) SubClose(bus, sub string, remove bool) error {
	m := SubClose{Bus: bus, Subscription: sub}
	if remove {
		m.Flags = SubCloseRemove
	}
	_, err := c.Do(TypeSubClose, m.encode())
	return err
}
