package shmbus

// Fan-out buses and their subscriptions.
//
// A bus created with Options.Subscriptions = N is a fan-out bus: it has N
// subscription slots and no queue consumer. Producers are unchanged. Every
// message is written once and read in place by every subscription, each
// with its own cursor per lane; the ring and clean protocols are in package
// ring (subscribe.go, clean.go), the segment words in docs/layout.md.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// Errors of fan-out buses.
var (
	ErrFanOut    = errors.New("fan-out bus: it has subscriptions, not a queue consumer") // NewConsumer on a fan-out bus
	ErrNotFanOut = errors.New("queue bus: it has no subscriptions")                      // Subscribe on a queue bus
	ErrLagged    = errors.New("subscription lagged: messages were overrun")              // a lossy subscription missed messages (see LaggedError)
	ErrNoSubSlot = errors.New("no free subscription slot")
)

// LaggedError is what a lossy subscription's receive returns when
// producers overran it: how many messages of each priority (index =
// priority) it missed. It wraps ErrLagged. The subscription has moved on
// to the oldest message still on the bus: the next receive returns it.
type LaggedError struct {
	Bus, Subscription string
	Missed            []uint64
}

func (e *LaggedError) Error() string {
	var total uint64
	for _, n := range e.Missed {
		total += n
	}
	s := fmt.Sprintf("bus %q: subscription %q: %v: %d missed", e.Bus, e.Subscription, ErrLagged, total)
	for p, n := range e.Missed {
		if n != 0 {
			s += fmt.Sprintf(", %d of priority %d", n, p)
		}
	}
	return s
}

func (e *LaggedError) Unwrap() error { return ErrLagged }

// From says where a new subscription starts.
type From int

const (
	FromLatest From = iota // at the next message published (the default)
	FromOldest             // at the oldest message still in the lanes
)

// SubscribeOptions configure Subscribe. The zero value (or nil) is a
// blocking subscription from the latest message, durable if named, without
// peer events.
type SubscribeOptions struct {
	// Lossy subscriptions never hold producers back: one that falls a whole
	// lane behind is overrun, and its next receive returns a *LaggedError
	// saying how many messages of which priority it missed. Blocking ones
	// (the default) lose nothing: producers wait for them when a lane is
	// full. Fixed when the subscription is made.
	Lossy bool
	// From is where a new subscription starts; ignored when attaching to an
	// existing one, which resumes at its cursor.
	From From
	// Ephemeral subscriptions are removed when their holder closes them or
	// is proven dead, so they stop holding producers back. Unnamed ones are
	// always ephemeral; named ones are durable unless this is set: a
	// durable subscription keeps its place, and holds producers back (if
	// blocking), until Unsubscribe.
	Ephemeral bool
	// Events delivers the bus's peer lifecycle events (attached, detached,
	// died) in order with the messages, as Message.Event (Receive and
	// TryReceive only; Poll skips them).
	Events bool
}

// Message is what a subscription's receive returns: a message of N bytes
// at priority Prio copied into the caller's buffer, or, if Event is not
// nil, a peer lifecycle event (N and Prio are then zero).
type Message struct {
	N     int
	Prio  int
	Event *PeerEvent
}

// Subscription is one holder's attachment to a subscription of a fan-out
// bus: it receives every message published after its cursor, highest
// priority first and FIFO within a priority (as POSIX mq_receive orders
// them). One process holds a subscription at a time. It is not safe for
// concurrent use.
//
// A blocking subscription's cursor lives in the segment and moves on
// release (after each Receive, after each Poll batch), so a holder that
// crashes is succeeded by the next Subscribe of the same name where it
// left off: messages taken and not released are delivered again (at least
// once across a crash, exactly once otherwise). Large messages are
// reassembled in memory: a holder killed in the middle of one loses that
// message (its successor drops the rest of its fragments).
type Subscription struct {
	b      *Bus
	name   string
	slot   int // peer slot
	idx    int // subscription entry
	gen    uint32
	lossy  bool
	eph    bool
	lanes  []*ring.SubReader
	spin   ring.Spinner
	closed atomic.Bool

	scratch []byte           // lossy: the copy of the record being read
	parts   map[[2]int]*part // reassembly per (lane, producer slot)
	spare   []*part
	lag     []uint64    // missed messages not yet reported, per lane
	holds   [][]subHold // per lane, taken by TryTake/Take and not acknowledged (subscription_take.go)
	held    int
	events  *PeerWatcher // nil without Events
	pending []PeerEvent  // events not yet delivered
	ev      PeerEvent    // the event Message.Event points at

	delivering [][]byte // Deliver's batch, kept to save allocations

	lastRecover time.Time
	lastEvents  time.Time
	errEmpty    error
}

// part is a large message being reassembled.
type part struct {
	buf    []byte
	total  uint64
	filled uint64
}

// fanState is a Bus's process-local fan-out state.
type fanState struct {
	lastDead atomic.Int64 // Unix nanoseconds of the last removeDead
}

// attachFanOut makes the views of a fan-out bus's subscription table.
func (b *Bus) attachFanOut() {
	b.subs = ring.NewSubTable(b.seg, &b.g, b.lanes, b.peers)
	b.subscriptions = map[*Subscription]struct{}{}
	b.peers.onTake = func(slot int) { b.subs.Repair(slot) }
}

// FanOut reports whether b is a fan-out bus, and its number of
// subscription slots.
func (b *Bus) FanOut() (bool, int) { return b.subs != nil, b.g.Subscriptions }

// validSubName checks a subscription name: the rules of bus names, at most
// layout.SubNameMax bytes.
func validSubName(name string) error {
	if err := segment.ValidateName(name); err != nil {
		return err
	}
	if len(name) > layout.SubNameMax {
		return fmt.Errorf("%w: subscription name %q is %d bytes, at most %d allowed", ErrBadName, name, len(name), layout.SubNameMax)
	}
	return nil
}

// Subscribe attaches to the subscription called name, making it if it does
// not exist (with opts; see SubscribeOptions), and returns it held by this
// process. An empty name makes a new ephemeral subscription with a
// generated name. It fails with an error wrapping ErrBusy while another
// live process holds the subscription; if its holder is provably dead it
// takes it over, resuming at its cursor. On a queue bus it fails with
// ErrNotFanOut; with every slot taken, ErrNoSubSlot. ctx bounds the wait
// for the lanes' clean locks while a new subscription is made.
func (b *Bus) Subscribe(ctx context.Context, name string, opts *SubscribeOptions) (*Subscription, error) {
	s, err := b.subscribe(ctx, name, opts)
	if err != nil {
		if name == "" {
			return nil, fmt.Errorf("bus %q: subscribe: %w", b.name, err)
		}
		return nil, fmt.Errorf("bus %q: subscribe %q: %w", b.name, name, err)
	}
	return s, nil
}

func (b *Bus) subscribe(ctx context.Context, name string, opts *SubscribeOptions) (*Subscription, error) {
	if b.subs == nil {
		return nil, ErrNotFanOut
	}
	if opts == nil {
		opts = &SubscribeOptions{}
	}
	eph := opts.Ephemeral || name == ""
	if name == "" {
		var r [6]byte
		rand.Read(r[:])
		name = fmt.Sprintf("eph-%d-%s", os.Getpid(), hex.EncodeToString(r[:]))
	}
	if err := validSubName(name); err != nil {
		return nil, err
	}
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var s *Subscription
	err := segment.Guard(func() error {
		slot, err := b.peers.acquire(layout.RoleSubscriber, b.lanes)
		if err != nil {
			return err
		}
		s, err = b.hold(ctx, slot, name, opts, eph)
		if err != nil {
			b.peers.release(slot)
			if errors.Is(err, ring.ErrLocked) {
				err = fmt.Errorf("%w: %w", ErrBusy, err)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.subscriptions[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

// stopCtx is a stop function for waits that only ctx and Close end.
func (b *Bus) stopCtx(ctx context.Context) func() error {
	return func() error {
		if b.closed.Load() {
			return b.errClosed()
		}
		return ctx.Err()
	}
}

// hold finds or makes the entry called name and takes hold of it as slot.
func (b *Bus) hold(ctx context.Context, slot int, name string, opts *SubscribeOptions, eph bool) (*Subscription, error) {
	t := b.subs
	for attempt := 0; ; attempt++ {
		if err := b.stopCtx(ctx)(); err != nil {
			return nil, err
		}
		if i, st := b.findSub(name, -1); i >= 0 {
			e := &t.Entries[i]
			if st == layout.SubCreating || st == layout.SubRemoving {
				// Being made or removed: look again. One left so for
				// long was left by a process that died doing it.
				if attempt%200 == 199 {
					if alive, _ := b.holderAlive(e); !alive || st == layout.SubRemoving {
						if e.State.CompareAndSwap(st, layout.SubRemoving) {
							b.freeEntry(e)
						}
					}
				}
				time.Sleep(time.Millisecond)
				continue
			}
			if lossy := e.Flags.Load()&layout.SubLossy != 0; lossy != opts.Lossy {
				return nil, fmt.Errorf("%w: subscription exists as %s, asked for %s", ErrConfig, lossyWord(lossy), lossyWord(opts.Lossy))
			}
			if err := b.takeHold(e, slot); err != nil {
				if errors.Is(err, errRetry) {
					continue
				}
				return nil, err
			}
			return b.newSubscription(i, slot, name, opts)
		}
		i, err := b.makeSub(ctx, slot, name, opts, eph)
		if errors.Is(err, errRetry) {
			time.Sleep(time.Duration(attempt%8+1) * 100 * time.Microsecond)
			continue
		}
		if err != nil {
			return nil, err
		}
		return b.newSubscription(i, slot, name, opts)
	}
}

var errRetry = errors.New("retry")

func lossyWord(lossy bool) string {
	if lossy {
		return "lossy"
	}
	return "blocking"
}

// findSub is the index and state of the entry called name that is being
// made, active or being removed (not skip), or -1.
func (b *Bus) findSub(name string, skip int) (int, uint32) {
	for i := range b.subs.Entries {
		e := &b.subs.Entries[i]
		st := e.State.Load()
		if i == skip || st == layout.SubFree {
			continue
		}
		if nameIs(e, name) {
			return i, st
		}
	}
	return -1, 0
}

func nameIs(e *ring.SubEntry, name string) bool {
	return int(e.NameLen.Load()) == len(name) && string(e.Name[:len(name)]) == name
}

// holderState says whether entry e's holder is a live process: the slot
// it named still has the owner tag it had, and that process is not
// provably dead. It returns the holder's pid.
func (b *Bus) holderAlive(e *ring.SubEntry) (alive bool, pid int) {
	h := e.Holder.Load()
	if h == 0 || int(h) > b.g.PeerSlots {
		return false, 0
	}
	tag := e.HolderTag.Load()
	if tag == 0 || b.peers.owner(int(h)-1).Load() != tag {
		return false, int(tag >> 32)
	}
	if tag == b.peers.tag {
		return true, int(tag >> 32)
	}
	return tagState(tag) != ring.PeerDead, int(tag >> 32)
}

// takeHold makes slot the holder of the active entry e, unless a live
// process holds it (ErrBusy).
func (b *Bus) takeHold(e *ring.SubEntry, slot int) error {
	cur := e.Holder.Load()
	if alive, pid := b.holderAlive(e); alive {
		return fmt.Errorf("%w: the subscription is held by pid %d", ErrBusy, pid)
	}
	if !e.Holder.CompareAndSwap(cur, uint32(slot)+1) {
		return errRetry
	}
	e.HolderTag.Store(b.peers.tag)
	if e.State.Load() != layout.SubActive { // removed meanwhile
		e.Holder.CompareAndSwap(uint32(slot)+1, 0)
		return errRetry
	}
	return nil
}

// makeSub makes a new entry called name held by slot.
func (b *Bus) makeSub(ctx context.Context, slot int, name string, opts *SubscribeOptions, eph bool) (int, error) {
	t := b.subs
	for i := range t.Entries {
		e := &t.Entries[i]
		if !e.State.CompareAndSwap(layout.SubFree, layout.SubCreating) {
			continue
		}
		e.Holder.Store(uint32(slot) + 1)
		e.HolderTag.Store(b.peers.tag)
		flags := uint32(0)
		if opts.Lossy {
			flags |= layout.SubLossy
		}
		if !eph {
			flags |= layout.SubDurable
		}
		if opts.Events {
			flags |= layout.SubEvents
		}
		e.Flags.Store(flags)
		e.Gen.Add(1)
		e.Created.Store(uint64(time.Now().UnixNano()))
		clear(e.Name)
		copy(e.Name, name)
		e.NameLen.Store(uint32(len(name)))
		// Two makers of one name: each stored its name before looking for
		// the other's (sequentially consistent), so at least one sees the
		// other; whoever does gives way and tries again.
		if j, _ := b.findSub(name, i); j >= 0 {
			b.freeEntry(e)
			return -1, errRetry
		}
		if err := t.Start(i, slot, opts.From == FromOldest, b.stopCtx(ctx)); err != nil {
			b.freeEntry(e)
			return -1, err
		}
		return i, nil
	}
	return -1, fmt.Errorf("%w: all %d are in use", ErrNoSubSlot, len(t.Entries))
}

// freeEntry clears an entry this process made or is removing, and frees it.
func (b *Bus) freeEntry(e *ring.SubEntry) {
	e.State.Store(layout.SubRemoving)
	e.NameLen.Store(0)
	clear(e.Name)
	e.Flags.Store(0)
	e.Holder.Store(0)
	e.HolderTag.Store(0)
	e.State.Store(layout.SubFree)
}

func (b *Bus) newSubscription(i, slot int, name string, opts *SubscribeOptions) (*Subscription, error) {
	t := b.subs
	e := &t.Entries[i]
	s := &Subscription{b: b, name: name, slot: slot, idx: i, gen: e.Gen.Load(),
		lossy: e.Flags.Load()&layout.SubLossy != 0, eph: e.Flags.Load()&layout.SubDurable == 0,
		parts: map[[2]int]*part{}, lag: make([]uint64, len(b.lanes)),
		errEmpty: fmt.Errorf("bus %q: subscription %q: receive: %w", b.name, name, ErrEmpty)}
	for li := range b.lanes {
		r, err := t.Reader(i, li, slot)
		if err != nil {
			e.Holder.CompareAndSwap(uint32(slot)+1, 0)
			return nil, err
		}
		s.lanes = append(s.lanes, r)
	}
	if s.lossy {
		s.scratch = make([]byte, b.lanes[0].MaxPayload())
	}
	if opts.Events {
		s.events = b.newPeerWatcher()
	}
	return s, nil
}

// Name is the subscription's name (generated for an unnamed Subscribe).
func (s *Subscription) Name() string { return s.name }

// Lossy reports whether the subscription is lossy.
func (s *Subscription) Lossy() bool { return s.lossy }

// Durable reports whether the subscription outlives its holder.
func (s *Subscription) Durable() bool { return !s.eph }

// Slot is the subscriber's peer slot, as Stats().Peers shows it.
func (s *Subscription) Slot() int { return s.slot }

func (s *Subscription) check() error {
	if s.closed.Load() {
		return fmt.Errorf("bus %q: subscription %q: %w", s.b.name, s.name, ErrClosed)
	}
	return s.b.enter()
}

func (s *Subscription) wrap(err error) error {
	if err == nil {
		return nil
	}
	if err == ErrEmpty {
		return s.errEmpty
	}
	if _, ok := err.(*LaggedError); ok {
		return err
	}
	return fmt.Errorf("bus %q: subscription %q: receive: %w", s.b.name, s.name, err)
}

// TryReceive copies the next message into buf, or returns the next peer
// event (with Events), or ErrEmpty if there is none now. A buffer too small
// gets a *ShortBufferError and the message stays. A lossy subscription that
// was overrun gets a *LaggedError (wrapping ErrLagged) once, and then the
// oldest message still on the bus.
func (s *Subscription) TryReceive(buf []byte) (Message, error) {
	if err := s.check(); err != nil {
		return Message{}, err
	}
	defer s.b.exit()
	var m Message
	err := segment.Guard(func() error {
		var err error
		m, err = s.receive(buf)
		return err
	})
	return m, s.wrap(err)
}

// Receive is TryReceive that waits for a message (or event) until ctx is
// done (its error is returned) or the bus is closed (ErrClosed).
func (s *Subscription) Receive(ctx context.Context, buf []byte) (Message, error) {
	if err := s.check(); err != nil {
		return Message{}, err
	}
	defer s.b.exit()
	var m Message
	err := segment.Guard(func() error {
		for {
			var err error
			m, err = s.receive(buf)
			if err != ErrEmpty {
				return err
			}
			if err := s.wait(ctx); err != nil {
				return err
			}
		}
	})
	return m, s.wrap(err)
}

// receive delivers the next event or message.
func (s *Subscription) receive(buf []byte) (Message, error) {
	if s.held > 0 {
		return Message{}, fmt.Errorf("%w (%d)", ErrHeld, s.held)
	}
	if len(s.pending) > 0 {
		return s.popEvent(), nil
	}
	for i := len(s.lanes) - 1; i >= 0; i-- {
		p, x, err := s.next(i)
		if err == ErrEmpty {
			s.lanes[i].Release() // padding passed on the way
			continue
		}
		if err != nil {
			return Message{}, err
		}
		if len(p) > len(buf) {
			return Message{}, &ShortBufferError{Need: len(p), Have: len(buf)}
		}
		n := copy(buf, p)
		s.take(i, x)
		if err := s.lanes[i].Release(); err != nil {
			return Message{}, err
		}
		return Message{N: n, Prio: i}, nil
	}
	if s.events != nil {
		s.scanEvents(false)
		if len(s.pending) > 0 {
			return s.popEvent(), nil
		}
	}
	return Message{}, ErrEmpty
}

func (s *Subscription) popEvent() Message {
	s.ev = s.pending[0]
	s.pending = s.pending[1:]
	if len(s.pending) == 0 {
		s.pending = s.pending[:0:0]
	}
	ev := s.ev
	return Message{Event: &ev}
}

// scanEvents diffs the peer table; prove also looks for proof of death
// (reading /proc), done at most every eventProof.
func (s *Subscription) scanEvents(prove bool) {
	if !prove && time.Since(s.lastEvents) >= eventProof {
		prove = true
	}
	if prove {
		s.lastEvents = time.Now()
	}
	s.pending = s.events.scan(s.pending, prove, s.slot)
}

// eventProof is how often a subscriber with Events looks for proof that a
// peer died: "died" is delivered within about this long of the proof
// being possible, while the subscriber waits or polls.
const eventProof = 50 * time.Millisecond

// next returns the next complete message of lane i without taking its
// last record: a view of the ring (blocking), of the scratch copy (lossy),
// or of a reassembly buffer (x, not nil). Fragments on the way are
// absorbed and passed.
func (s *Subscription) next(i int) ([]byte, *part, error) {
	r := s.lanes[i]
	for {
		var rec layout.Record
		var p []byte
		var err error
		if s.lossy {
			var n int
			rec, n, err = r.PeekCopy(s.scratch)
			p = s.scratch[:n]
		} else {
			rec, p, err = r.Peek()
		}
		if err != nil {
			if o, ok := err.(*ring.Overrun); ok {
				return nil, nil, s.lagged(i, o.Missed)
			}
			return nil, nil, err
		}
		flags := rec.Flags & (layout.FragBegin | layout.FragEnd)
		if flags == layout.FragBegin|layout.FragEnd {
			if x := s.parts[[2]int{i, int(rec.Producer)}]; x != nil {
				s.dropPart(i, int(rec.Producer)) // its producer gave up on it
			}
			return p, nil, nil
		}
		key := [2]int{i, int(rec.Producer)}
		x := s.parts[key]
		switch flags {
		case layout.FragBegin:
			if x != nil {
				s.dropPart(i, int(rec.Producer))
			}
			if len(p) < 8 {
				return nil, nil, fmt.Errorf("lane %d at %d: %w: first fragment of %d bytes", i, r.Position(), ErrCorrupt, len(p))
			}
			total := binary.LittleEndian.Uint64(p)
			if total > s.b.hdr.MaxMessage || total < uint64(len(p)-8) {
				return nil, nil, fmt.Errorf("lane %d at %d: %w: message of %d bytes (limit %d)", i, r.Position(), ErrCorrupt, total, s.b.hdr.MaxMessage)
			}
			x = s.newPart(total)
			s.parts[key] = x
			x.filled = uint64(copy(x.buf, p[8:]))
		case 0:
			if x != nil {
				if uint64(len(p)) > x.total-x.filled {
					s.dropPart(i, int(rec.Producer))
				} else {
					x.filled += uint64(copy(x.buf[x.filled:], p))
				}
			}
		case layout.FragEnd:
			if x != nil {
				if x.total-x.filled != uint64(len(p)) {
					s.dropPart(i, int(rec.Producer))
				} else {
					// Copied now, taken on delivery: a short buffer leaves
					// it for the next receive, which copies it again.
					copy(x.buf[x.filled:], p)
					return x.buf[:x.total], x, nil
				}
			}
		}
		r.Next(rec) // orphans (their first fragment was never seen) are passed
	}
}

func (s *Subscription) newPart(total uint64) *part {
	for k, x := range s.spare {
		if uint64(cap(x.buf)) >= total {
			s.spare = append(s.spare[:k], s.spare[k+1:]...)
			x.buf, x.total, x.filled = x.buf[:total], total, 0
			return x
		}
	}
	return &part{buf: make([]byte, total), total: total}
}

func (s *Subscription) dropPart(i, producer int) {
	key := [2]int{i, producer}
	if x := s.parts[key]; x != nil {
		delete(s.parts, key)
		if len(s.spare) < 4 {
			s.spare = append(s.spare, x)
		}
	}
}

// take moves past the last record of the message next returned.
func (s *Subscription) take(i int, x *part) {
	r := s.lanes[i]
	if s.lossy {
		// PeekCopy again would copy again; the record is still at the
		// cursor (Peek-style): step over it by its header.
		r.Skip()
	} else {
		rec, _, _ := r.Peek()
		r.Next(rec)
	}
	if x != nil {
		for k, v := range s.parts {
			if v == x {
				s.dropPart(k[0], k[1])
				break
			}
		}
	}
}

// lagged turns an overrun of lane i into a *LaggedError: the messages
// begun in the lane that were cleaned before the subscription read them,
// plus those it was reassembling (their fragments are gone).
func (s *Subscription) lagged(i int, missed uint64) error {
	for k := range s.parts {
		if k[0] == i {
			s.dropPart(k[0], k[1])
			missed++
		}
	}
	e := &LaggedError{Bus: s.b.name, Subscription: s.name, Missed: make([]uint64, len(s.lanes))}
	e.Missed[i] = missed
	return e
}

// Poll hands every message published now (at most max if max > 0) to f,
// highest priority first, and releases them together. For a blocking
// subscription payload is a view of shared memory (zero-copy), for a lossy
// one a copy; either way it is valid only during the call. A lossy
// subscription that was overrun returns a *LaggedError after the messages
// handed over before it. Peer events are left for Receive.
func (s *Subscription) Poll(max int, f func(payload []byte, prio int)) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	defer s.b.exit()
	total := 0
	err := segment.Guard(func() error {
		if s.held > 0 {
			return fmt.Errorf("%w (%d)", ErrHeld, s.held)
		}
		for i := len(s.lanes) - 1; i >= 0; i-- {
			r := s.lanes[i]
			for max <= 0 || total < max {
				p, x, err := s.next(i)
				if err == ErrEmpty {
					break
				}
				if err != nil {
					r.Release()
					return err
				}
				f(p, i)
				total++
				s.take(i, x)
			}
			if err := r.Release(); err != nil {
				return err
			}
		}
		return nil
	})
	return total, s.wrap(err)
}

// Wait blocks until a message (or event) is ready, ctx is done or the bus
// closes.
func (s *Subscription) Wait(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	defer s.b.exit()
	return s.wrap(segment.Guard(func() error { return s.wait(ctx) }))
}

func (s *Subscription) ready() bool {
	if len(s.pending) > 0 {
		return true
	}
	for _, r := range s.lanes {
		if r.Ready() {
			return true
		}
	}
	return false
}

func (s *Subscription) wait(ctx context.Context) error {
	stop, cleanup := s.b.stopper(ctx, s.b.data)
	defer cleanup()
	backstop := time.Duration(0)
	if s.events != nil {
		backstop = eventProof
	}
	for _, r := range s.lanes {
		if r.InFlight() {
			backstop = inFlightBackstop
		}
	}
	help := func() {
		for _, r := range s.lanes {
			r.Help()
		}
	}
	help()
	wake := func() {
		help()
		s.recover()
		if s.events != nil && time.Since(s.lastEvents) >= eventProof {
			s.scanEvents(true)
		}
	}
	return ctxErr(ctx, s.b.data.Wait(s.ready, stop, deadlineOf(ctx), &s.spin, backstop, wake))
}

// recover pads dead producers' claims at the cursors, at most every
// inFlightBackstop (proof of death reads /proc).
func (s *Subscription) recover() {
	if time.Since(s.lastRecover) < inFlightBackstop {
		return
	}
	s.lastRecover = time.Now()
	for _, r := range s.lanes {
		if r.InFlight() {
			r.Recover(s.b.peers)
		}
	}
}

// abandon releases what was read; the bus calls it when it closes with
// the subscription still open, and Close.
func (s *Subscription) abandon() {
	s.untake()
	for _, r := range s.lanes {
		r.Release()
	}
	e := &s.b.subs.Entries[s.idx]
	if e.Holder.Load() == uint32(s.slot)+1 && e.Gen.Load() == s.gen {
		if s.eph {
			if e.State.CompareAndSwap(layout.SubActive, layout.SubRemoving) {
				s.b.freeEntry(e)
				// Free what it held back now, for producers that cannot
				// clean; the others are woken to look again.
				for li := range s.lanes {
					s.b.subs.Clean(li, s.slot, 0)
				}
				s.b.kickSpace()
			}
		} else {
			e.Holder.CompareAndSwap(uint32(s.slot)+1, 0)
		}
	}
	s.closed.Store(true)
}

// kickSpace wakes producers waiting for room, so that they clean past a
// subscription that went away.
func (b *Bus) kickSpace() {
	for _, l := range b.lanes {
		l.Space().Kick()
	}
}

// Close releases what was received and gives the subscription back: an
// ephemeral one is removed, a durable one stays, without a holder, for the
// next Subscribe of its name.
func (s *Subscription) Close() error {
	if s.closed.Load() {
		return nil
	}
	if err := s.b.enter(); err != nil {
		return nil // the bus closed first and released everything
	}
	defer s.b.exit()
	s.b.mu.Lock()
	delete(s.b.subscriptions, s)
	s.b.mu.Unlock()
	return segment.Guard(func() error {
		s.abandon()
		s.b.peers.release(s.slot)
		return nil
	})
}

// Unsubscribe removes the subscription called name, so that it no longer
// holds producers back. It refuses (ErrBusy) while a live process holds
// it; ErrNotExist if there is none.
func (b *Bus) Unsubscribe(name string) error {
	if err := b.unsubscribe(name); err != nil {
		return fmt.Errorf("bus %q: unsubscribe %q: %w", b.name, name, err)
	}
	return nil
}

func (b *Bus) unsubscribe(name string) error {
	if b.subs == nil {
		return ErrNotFanOut
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	return segment.Guard(func() error {
		i, st := b.findSub(name, -1)
		if i < 0 || st != layout.SubActive {
			return fmt.Errorf("%w: no subscription of that name", ErrNotExist)
		}
		return b.removeSub(&b.subs.Entries[i], true)
	})
}

// removeSub removes the active entry e unless a live process holds it.
func (b *Bus) removeSub(e *ring.SubEntry, report bool) error {
	if alive, pid := b.holderAlive(e); alive {
		if report {
			return fmt.Errorf("%w: the subscription is held by pid %d", ErrBusy, pid)
		}
		return nil
	}
	h := e.Holder.Load()
	if !e.State.CompareAndSwap(layout.SubActive, layout.SubRemoving) {
		return fmt.Errorf("%w: removed meanwhile", ErrNotExist)
	}
	// A new holder may have taken it between the look and the CAS: it
	// checks the state after taking hold, and we the holder after ours.
	if e.Holder.Load() != h {
		e.State.Store(layout.SubActive)
		return fmt.Errorf("%w: taken over meanwhile", ErrBusy)
	}
	b.freeEntry(e)
	b.cleanAll()
	return nil
}

// cleanAll cleans every lane after a subscription went away (for
// producers that cannot clean themselves), with a peer slot taken for it,
// and wakes the producers waiting for room.
func (b *Bus) cleanAll() {
	if slot, err := b.peers.acquire(0, b.lanes); err == nil {
		for li := range b.lanes {
			b.subs.CleanDead(li, slot, 0)
		}
		b.peers.release(slot)
	}
	b.kickSpace()
}

// removeDead removes the ephemeral subscriptions whose holders are proven
// dead (or gone), and reports how many it removed.
func (b *Bus) removeDead() int {
	n := 0
	for i := range b.subs.Entries {
		e := &b.subs.Entries[i]
		if e.State.Load() != layout.SubActive || e.Flags.Load()&layout.SubDurable != 0 {
			continue
		}
		if alive, _ := b.holderAlive(e); alive {
			continue
		}
		if b.removeSub(e, false) == nil {
			n++
		}
	}
	b.fan.lastDead.Store(time.Now().UnixNano())
	return n
}

// fanWaitRoom is waitRoom on a fan-out bus: room comes from cleaning, which
// the waiting producer does itself once the subscriptions have moved; at
// least every deadCheck it looks for ephemeral subscriptions whose holders
// died (they hold it back no longer once removed) and for a dead cleaner.
func (b *Bus) fanWaitRoom(ctx context.Context, l *ring.Producer, size int, spin *ring.Spinner) error {
	deadline, _ := ctx.Deadline()
	lane := l.Lane()
	li, self := lane.Index(), l.Slot()
	stop, cleanup := b.stopper(ctx, lane.Space())
	defer cleanup()
	ready := func() bool {
		if l.HasRoom(size) {
			return true
		}
		if b.subs.Releasable(li) {
			b.subs.Clean(li, self, uint64(size))
		}
		return l.HasRoom(size)
	}
	wake := func() {
		if time.Now().UnixNano()-b.fan.lastDead.Load() >= int64(deadCheck) {
			b.removeDead()
			b.subs.CleanDead(li, self, uint64(size))
		}
	}
	l.Flush()
	return ctxErr(ctx, lane.Space().Wait(ready, stop, deadline, spin, deadCheck, wake))
}

// deadCheck is how often a producer waiting for room looks for dead
// holders of the subscriptions that hold it back.
const deadCheck = 50 * time.Millisecond

// SubscriptionInfo describes one subscription of a fan-out bus.
type SubscriptionInfo struct {
	Name      string
	Lossy     bool
	Durable   bool
	Events    bool
	HolderPID int  // 0: nobody holds it
	Held      bool // a live process holds it
	Created   time.Time
	Lag       []SubscriptionLag // per priority: what lies between its cursor and the tail
	// HoldsBack is set when the subscription is blocking and, in some lane,
	// the slowest (its cursor is the least of the blocking ones) with
	// records after it: a producer that fills that lane waits for it.
	HoldsBack bool
}

// SubscriptionLag is how far a subscription is behind in one lane.
type SubscriptionLag struct {
	Messages uint64 // messages begun after its cursor
	Bytes    uint64 // ring bytes from its cursor to the tail
}

// Subscriptions lists the subscriptions of a fan-out bus (ErrNotFanOut on
// a queue bus).
func (b *Bus) Subscriptions() ([]SubscriptionInfo, error) {
	if b.subs == nil {
		return nil, fmt.Errorf("bus %q: subscriptions: %w", b.name, ErrNotFanOut)
	}
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var out []SubscriptionInfo
	err := segment.Guard(func() error {
		totals := make([]uint64, len(b.lanes))
		mins := make([]uint64, len(b.lanes))
		found := make([]bool, len(b.lanes))
		for li := range b.lanes {
			totals[li] = b.subs.Begun(li)
			mins[li], found[li], _ = b.subs.MinBlocking(li)
		}
		for i := range b.subs.Entries {
			e := &b.subs.Entries[i]
			if e.State.Load() != layout.SubActive {
				continue
			}
			f := e.Flags.Load()
			info := SubscriptionInfo{Name: e.NameString(), Lossy: f&layout.SubLossy != 0, Durable: f&layout.SubDurable != 0,
				Events: f&layout.SubEvents != 0, Created: time.Unix(0, int64(e.Created.Load()))}
			info.Held, info.HolderPID = b.holderAlive(e)
			if e.Holder.Load() == 0 {
				info.HolderPID = 0
			}
			for li, l := range b.lanes {
				st := l.Stats()
				c := e.Cursor[li].Load()
				lag := SubscriptionLag{}
				if !ahead(c, st.Tail) {
					lag.Bytes = st.Tail - c
				}
				if d := e.Delivered[li].Load(); totals[li]-d < 1<<62 {
					lag.Messages = totals[li] - d
				}
				info.Lag = append(info.Lag, lag)
				if !info.Lossy && found[li] && c == mins[li] && c != st.Tail {
					info.HoldsBack = true
				}
			}
			out = append(out, info)
		}
		return nil
	})
	return out, err
}

func ahead(a, b uint64) bool { return int64(a-b) > 0 }

// Deliver hands the messages published now, highest priority first, to
// write, in batches of one priority, as Consumer.Deliver does: write
// returns how many of them, from the first, it has finished with; those
// are released, the rest stay for the next receive. msgs are valid only
// during the call (views of shared memory for a blocking subscription,
// copies for a lossy one, which hands them over one at a time). A
// subscription that dies between write and release delivers that batch
// again to its successor: at least once. Peer events are left for
// Receive, TryReceive or TakeEvent.
func (s *Subscription) Deliver(max int, write func(msgs [][]byte, prio int) (int, error)) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	defer s.b.exit()
	total := 0
	var werr error
	err := segment.Guard(func() error {
		for i := len(s.lanes) - 1; i >= 0; i-- {
			for max <= 0 || total < max {
				limit := deliverBatch
				if max > 0 {
					limit = min(limit, max-total)
				}
				k, more, err := s.deliver(i, limit, write, &werr)
				total += k
				if err != nil || werr != nil {
					return err
				}
				if !more {
					break
				}
			}
		}
		return nil
	})
	if werr != nil {
		return total, werr
	}
	return total, s.wrap(err)
}

// deliver hands one batch of lane i to write.
func (s *Subscription) deliver(i, limit int, write func([][]byte, int) (int, error), werr *error) (int, bool, error) {
	r := s.lanes[i]
	mark := r.Mark()
	p, x, err := s.next(i)
	if err == ErrEmpty {
		return 0, false, r.Release()
	}
	if err != nil {
		return 0, false, err
	}
	batch := append(s.delivering[:0], p)
	defer func() { clear(batch); s.delivering = batch[:0] }() // keep no view of the ring
	if x != nil || s.lossy {
		k, err := write(batch, i)
		*werr = err
		if k < 1 {
			return 0, false, nil
		}
		s.take(i, x)
		return 1, err == nil, r.Release()
	}
	s.take(i, nil)
	size := len(p)
	for len(batch) < limit && size < deliverBytes {
		rec, q, err := r.Peek()
		if err != nil || rec.Flags&(layout.FragBegin|layout.FragEnd) != layout.FragBegin|layout.FragEnd {
			break
		}
		r.Next(rec)
		batch = append(batch, q)
		size += len(q)
	}
	k, err := write(batch, i)
	*werr = err
	k = min(max(k, 0), len(batch))
	if k < len(batch) {
		r.Reset(mark)
		for range k {
			rec, _, err := r.Peek()
			if err != nil {
				return 0, false, err
			}
			r.Next(rec)
		}
	}
	return k, k == len(batch) && *werr == nil, r.Release()
}

// TakeEvent returns the next peer event, if one is due, for a subscription
// made with Events that receives with Poll or Deliver (which leave events
// for it). It looks at the peer table (for proof of death at most every 50
// ms), so calling it whenever the subscription finds nothing to read, and
// after every Wait, delivers "died" within that long.
func (s *Subscription) TakeEvent() (*PeerEvent, bool) {
	if s.events == nil || s.check() != nil {
		return nil, false
	}
	defer s.b.exit()
	var m Message
	segment.Guard(func() error {
		if len(s.pending) == 0 {
			s.scanEvents(false)
		}
		if len(s.pending) > 0 {
			m = s.popEvent()
		}
		return nil
	})
	return m.Event, m.Event != nil
}
