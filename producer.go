package shmbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// Producer sends messages on a bus. It holds a peer slot (and, on a
// single-producer bus, the producer role) until Close. It is not safe for
// concurrent use: give each goroutine its own.
type Producer struct {
	b      *Bus
	slot   int
	lanes  []*ring.Producer
	spin   ring.Spinner
	closed atomic.Bool // also set by Bus.Close from another goroutine
	gate   *gate       // the call gate of the producer's calls (gate.go)
}

// NewProducer attaches a producer. On a single-producer bus it fails with
// ErrBusy while another live process holds the producer role.
func (b *Bus) NewProducer() (*Producer, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var p *Producer
	err := segment.Guard(func() error {
		slot, err := b.peers.acquire(layout.RoleProducer, b.lanes)
		if err != nil {
			return err
		}
		if !b.lanes[0].Multi() {
			for i, l := range b.lanes {
				if err := b.peers.takeRole(l.SPSCOwner(), slot, layout.RoleProducer, "the producer role"); err != nil {
					for _, l := range b.lanes[:i] {
						b.peers.dropRole(l.SPSCOwner(), slot)
					}
					b.peers.release(slot)
					return err
				}
			}
		}
		p = &Producer{b: b, slot: slot}
		p.gate = newGate(&p.closed)
		for i, l := range b.lanes {
			p.lanes = append(p.lanes, ring.NewProducer(l, uint16(slot), b.peers.Claim(slot, i), b.data))
		}
		b.mu.Lock()
		b.producers[p] = struct{}{}
		b.addGate(p.gate)
		b.mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, busError(b.name, fmt.Errorf("new producer: %w", err))
	}
	return p, nil
}

func (p *Producer) lane(prio int) (*ring.Producer, error) {
	if prio < 0 || prio >= len(p.lanes) {
		return nil, busError(p.b.name, fmt.Errorf("%w: %d, %s", ErrPriority, prio, priorityRange(len(p.lanes))))
	}
	if p.closed.Load() {
		return nil, busError(p.b.name, fmt.Errorf("producer: %w", ErrClosed))
	}
	return p.lanes[prio], nil
}

// priorityRange says which priorities a bus of n lanes has.
func priorityRange(n int) string {
	if n == 1 {
		return "the bus has 1 priority (0)"
	}
	return fmt.Sprintf("the bus has %d priorities (0..%d)", n, n-1)
}

// TooLargeError is a message refused for its size: it says which limit of
// the bus it exceeds and both numbers. It wraps ErrTooLarge; the error a
// call returns is an *Error naming the bus, wrapping this.
type TooLargeError struct {
	Bus   string        // the bus's name
	Size  int           // the message's (or, for Reserve, the record's) length in bytes
	Limit int           // the limit it exceeds, in bytes
	Which TooLargeLimit // which limit
}

// TooLargeLimit says which limit a TooLargeError is about.
type TooLargeLimit int

const (
	LimitMaxMessage TooLargeLimit = iota // the bus's MaxMessage: Send, TrySend, SendBatch
	LimitRecord                          // one record's payload, MaxRecordPayload: Reserve
)

func (e *TooLargeError) Error() string {
	if e.Which == LimitRecord {
		return fmt.Sprintf("reserve: record of %d bytes exceeds one record's payload limit of %d bytes (MaxRecordPayload)", e.Size, e.Limit)
	}
	return fmt.Sprintf("send: message of %d bytes exceeds the bus's max message of %d bytes", e.Size, e.Limit)
}

// tooLarge is the error of a message (or record) of size bytes over limit.
func (p *Producer) tooLarge(size, limit int, which TooLargeLimit) error {
	return busError(p.b.name, &TooLargeError{Bus: p.b.name, Size: size, Limit: limit, Which: which})
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// TrySend sends msg at priority prio if there is room now, else returns
// ErrFull. Priorities run from 0 (least urgent) to Priorities()-1. A
// message larger than one record (MaxRecordPayload) fails with ErrFull
// only if its first fragment finds no room; once started, it waits for
// room for the rest (a half-sent message is never left behind on purpose).
func (p *Producer) TrySend(msg []byte, prio int) error {
	return p.send(context.Background(), msg, prio, true)
}

// Send sends msg at priority prio, waiting for room until ctx is done (its
// error is returned), the bus is closed (ErrClosed), or, on a fail-fast
// bus, returning ErrFull at once. A message larger than MaxMessage fails
// with ErrTooLarge before anything is written. A message larger than one
// record is sent as fragments that the consumer reassembles; if ctx ends
// in the middle, the fragments sent are dropped by the consumer when this
// producer's next message (or its departure) shows the message will not
// be finished.
func (p *Producer) Send(ctx context.Context, msg []byte, prio int) error {
	return p.send(ctx, msg, prio, p.b.hdr.Flags&layout.FlagFailFast != 0)
}

func (p *Producer) send(ctx context.Context, msg []byte, prio int, failFast bool) error {
	l, err := p.lane(prio)
	if err != nil {
		return err
	}
	if len(msg) > p.b.MaxMessage() {
		return p.tooLarge(len(msg), p.b.MaxMessage(), LimitMaxMessage)
	}
	if err := p.gate.enter(p.b); err != nil {
		return err
	}
	defer p.gate.exit(p.b)
	return p.wrap(segment.Guard(func() error {
		if len(msg) <= l.MaxPayload() {
			for {
				err := l.Send(msg)
				if err != ring.ErrFull || failFast {
					return err
				}
				if err := p.b.waitRoom(ctx, l, ring.RecordSize(len(msg)), &p.spin); err != nil {
					return err
				}
			}
		}
		return p.sendFragments(ctx, l, msg, failFast)
	}))
}

// sendFragments sends msg, larger than one record, as fragments: the first
// carries the total length before its share of the bytes.
func (p *Producer) sendFragments(ctx context.Context, l *ring.Producer, msg []byte, failFast bool) error {
	max := l.MaxPayload()
	for off, first := 0, true; off < len(msg); first = false {
		n, head := max, 0
		flags := uint8(0)
		if first {
			flags, head = layout.FragBegin, 8
		}
		n = min(n, len(msg)-off+head)
		if off+n-head == len(msg) {
			flags |= layout.FragEnd
		}
		buf, err := l.Reserve(n, flags)
		for err == ring.ErrFull {
			if first && failFast {
				return err
			}
			if err := p.b.waitRoom(ctx, l, ring.RecordSize(n), &p.spin); err != nil {
				return err
			}
			buf, err = l.Reserve(n, flags)
		}
		if err != nil {
			return err
		}
		if first {
			binary.LittleEndian.PutUint64(buf, uint64(len(msg)))
		}
		copy(buf[head:], msg[off:])
		l.Commit()
		off += n - head
	}
	return nil
}

// SendBatch sends msgs at priority prio with as few claims as room allows
// (one for all of them when they fit), waiting for room as Send does. It
// returns how many it sent.
func (p *Producer) SendBatch(ctx context.Context, msgs [][]byte, prio int) (int, error) {
	l, err := p.lane(prio)
	if err != nil {
		return 0, err
	}
	if err := p.gate.enter(p.b); err != nil {
		return 0, err
	}
	defer p.gate.exit(p.b)
	sent := 0
	err = segment.Guard(func() error {
		failFast := p.b.hdr.Flags&layout.FlagFailFast != 0
		for sent < len(msgs) {
			if m := msgs[sent]; len(m) > l.MaxPayload() {
				if len(m) > p.b.MaxMessage() {
					return p.tooLarge(len(m), p.b.MaxMessage(), LimitMaxMessage)
				}
				if err := p.sendFragments(ctx, l, m, failFast); err != nil {
					return err
				}
				sent++
				continue
			}
			k, err := l.SendBatch(msgs[sent:])
			sent += k
			if err == nil {
				continue
			}
			if err != ring.ErrFull || failFast {
				return err
			}
			if err := p.b.waitRoom(ctx, l, ring.RecordSize(len(msgs[sent])), &p.spin); err != nil {
				return err
			}
		}
		return nil
	})
	return sent, p.wrap(err)
}

// Reserve returns room for an n-byte message at priority prio, to be
// filled in place and published by Commit (zero-copy). Several Reserves
// may precede one Commit. It returns ErrFull if the lane has no room now.
// The returned slice is shared memory: it must not be used after Commit,
// Abort, or Close of the producer or the bus.
func (p *Producer) Reserve(prio, n int) ([]byte, error) {
	l, err := p.lane(prio)
	if err != nil {
		return nil, err
	}
	if n > l.MaxPayload() {
		return nil, p.tooLarge(n, l.MaxPayload(), LimitRecord)
	}
	if err := p.gate.enter(p.b); err != nil {
		return nil, err
	}
	defer p.gate.exit(p.b)
	var buf []byte
	err = segment.Guard(func() error {
		var err error
		buf, err = l.Reserve(n, layout.FragBegin|layout.FragEnd)
		return err
	})
	return buf, p.wrap(err)
}

// Commit publishes every reserved message, all at once.
func (p *Producer) Commit() error { return p.each((*ring.Producer).Commit) }

// Abort drops every reserved message unpublished.
func (p *Producer) Abort() error { return p.each((*ring.Producer).Abort) }

func (p *Producer) each(f func(*ring.Producer)) error {
	if p.closed.Load() {
		return busError(p.b.name, fmt.Errorf("producer: %w", ErrClosed))
	}
	if err := p.gate.enter(p.b); err != nil {
		return err
	}
	defer p.gate.exit(p.b)
	return p.wrap(segment.Guard(func() error {
		for _, l := range p.lanes {
			f(l)
		}
		return nil
	}))
}

// abandon drops what the producer reserved and adds its statistics; the
// bus calls it when it closes with the producer still open.
func (p *Producer) abandon() {
	for _, l := range p.lanes {
		l.Abort()
		l.Flush()
	}
	p.closed.Store(true)
}

func (p *Producer) wrap(err error) error {
	if err == nil {
		return nil // before anything that could allocate: this is every Send
	}
	if _, ok := errors.AsType[*Error](err); ok {
		return err // names the bus already (a *TooLargeError)
	}
	if err == ErrFull {
		return p.b.errFull // made once: TrySend loops meet it constantly
	}
	return busError(p.b.name, fmt.Errorf("send: %w", err))
}

// Close publishes anything reserved, adds the producer's statistics to the
// bus, and gives back its slot and role.
func (p *Producer) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if err := p.b.enter(); err != nil {
		return nil // the bus closed first and released everything
	}
	defer p.b.exit()
	p.b.mu.Lock()
	delete(p.b.producers, p)
	p.b.mu.Unlock()
	return segment.Guard(func() error {
		for _, l := range p.lanes {
			l.Commit()
			l.Flush()
		}
		for _, l := range p.b.lanes {
			p.b.peers.dropRole(l.SPSCOwner(), p.slot)
		}
		p.b.peers.release(p.slot)
		return nil
	})
}

// waitRoom blocks until lane l has room for size bytes, ctx is done or the
// bus closes.
func (b *Bus) waitRoom(ctx context.Context, l *ring.Producer, size int, spin *ring.Spinner) error {
	if b.subs != nil {
		return b.fanWaitRoom(ctx, l, size, spin)
	}
	deadline, _ := ctx.Deadline()
	stop, cleanup := b.stopper(ctx, l.Lane().Space())
	defer cleanup()
	return ctxErr(ctx, l.WaitRoom(size, deadline, stop, spin))
}

// ctxErr reports a wait that ended at ctx's deadline as ctx's own error
// (context.DeadlineExceeded), as callers of a context-taking API expect.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return context.DeadlineExceeded
	}
	return err
}

// stopper returns the stop check of a blocking call: ctx's error, or
// ErrClosed. The first time it is called (just before the first sleep) it
// arranges for ctx's cancellation to kick bell, so a sleeping call returns
// promptly; cleanup undoes that.
func (b *Bus) stopper(ctx context.Context, bell *ring.Doorbell) (func() error, func()) {
	var unregister func() bool
	stop := func() error {
		if b.closed.Load() {
			return b.errClosed()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if unregister == nil && ctx.Done() != nil {
			unregister = context.AfterFunc(ctx, func() {
				if b.enter() == nil {
					segment.Guard(func() error { bell.Kick(); return nil })
					b.exit()
				}
			})
		}
		return nil
	}
	cleanup := func() {
		if unregister != nil {
			unregister()
		}
	}
	return stop, cleanup
}

// Slot is the producer's peer slot, as Stats().Peers shows it.
func (p *Producer) Slot() int { return p.slot }
