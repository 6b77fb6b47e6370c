package shmbus

import "sync/atomic"

// The call gate of the hot paths.
//
// Every call that touches the mapping is inside the call gate, so that
// Close never unmaps under it. Calls that are not on a message's path
// (NewProducer, Stats, Check, ...) count themselves in Bus.calls, one word
// of the bus. Doing the same in Send and Receive made producer and consumer
// goroutines of one process bounce that word's cache line between their
// cores twice per message each, which was more than half the cost of a
// message. So each Producer and Consumer has a gate of its own, on a cache
// line of its own, that only its goroutine writes:
//
//	call:  n += 1; if bus or handle closed { n -= 1; fail }; ...; n -= 1
//	Close: closed = true; kick sleepers; wait until n == 0 for every gate
//
// Both sides store their own word and then load the other's, all
// sequentially consistent, so at least one of them sees the other: either
// the call sees closed and backs out before touching the mapping, or Close
// sees n != 0 and waits. A call leaving a gate of a closing bus or handle
// signals left, and Close re-checks n after each signal, so no leave is
// missed (left holds one token; a stale one costs a re-check).
//
// A gate stays registered with its bus after its handle is closed, until
// a gate is added and finds it closed and idle: a call that raced with the
// handle's Close may still be inside it, and Bus.Close must wait for it.

// cacheLine is the padding that keeps a gate's counter off its
// neighbours' lines (two lines: adjacent-line prefetch pairs them).
const cacheLine = 128

type gate struct {
	_    [cacheLine]byte
	n    atomic.Int32
	_    [cacheLine - 4]byte
	shut *atomic.Bool // the handle's closed flag
	left chan struct{}
}

func newGate(shut *atomic.Bool) *gate {
	return &gate{shut: shut, left: make(chan struct{}, 1)}
}

// enter registers a call of g's handle; it fails once the bus or the
// handle is closed.
func (g *gate) enter(b *Bus) error {
	g.n.Add(1) // pairs with the Load in wait: see the file comment
	if b.closed.Load() || g.shut.Load() {
		g.exit(b)
		return b.errClosed()
	}
	return nil
}

func (g *gate) exit(b *Bus) {
	if g.n.Add(-1) == 0 && (b.closed.Load() || g.shut.Load()) {
		select {
		case g.left <- struct{}{}:
		default:
		}
	}
}

// wait returns once no call is inside g. The bus or the handle must be
// closed already, so that no call enters after.
func (g *gate) wait() {
	for g.n.Load() != 0 {
		<-g.left
	}
}

// idle reports whether g's handle is closed and no call is inside.
func (g *gate) idle() bool { return g.shut.Load() && g.n.Load() == 0 }

// addGate registers g with b, dropping closed, idle gates. The caller
// holds b.mu.
func (b *Bus) addGate(g *gate) {
	for h := range b.gates {
		if h.idle() {
			delete(b.gates, h)
		}
	}
	b.gates[g] = struct{}{}
}

// waitGates waits until no call of any handle is inside its gate. Close
// calls it after setting b.closed and kicking the sleepers.
func (b *Bus) waitGates() {
	b.mu.Lock()
	gates := make([]*gate, 0, len(b.gates))
	for g := range b.gates {
		gates = append(gates, g)
	}
	b.mu.Unlock()
	for _, g := range gates {
		g.wait()
	}
}
