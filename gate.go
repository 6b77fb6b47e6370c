package shmbus

import (
	"sync/atomic"
	"time"
)

// The call gate of the hot paths.
//
// Every call that touches the mapping is inside the call gate, so that
// Close never unmaps under it. Calls that are not on a message's path
// (NewProducer, Stats, Check, ...) count themselves in Bus.calls, one word
// of the bus. Doing the same in Send and Receive made producer and consumer
// goroutines of one process bounce that word's cache line between their
// cores twice per message each, which was more than half the cost of a
// message. So each Producer and Consumer has a gate of its own: a counter
// word on a cache line of its own that only its goroutine writes:
//
//	call:  n += 1; if bus or handle closed { n -= 1; fail }; ...; n -= 1
//	Close: closed = true; barrier; wait until n == 0 for every gate
//
// The call stores n and then loads closed; Close stores closed and then
// loads n. With a full barrier between the store and the load on both
// sides, at least one of them sees the other: either the call sees closed
// and backs out before touching the mapping, or Close sees n != 0 and
// waits. Where the kernel offers membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
// and the CPU keeps stores in order and loads before later stores (amd64),
// the call's side is plain loads and stores and Close's membarrier puts the
// barrier into every running thread of the process, at the point it
// interrupts: a call whose increment comes after that point sees closed; one
// whose increment came before is seen by Close. The call's decrement is a
// plain store after every access it made to the mapping, and those
// accesses are complete when it is visible. Elsewhere both sides use
// sequentially consistent atomics (gate_other.go; gate_race.go under the
// race detector).
//
// A call that leaves the gate of a closing bus or handle signals left; Close
// also re-checks every millisecond, so a leave it did not hear about costs
// it that much, never a hang.
//
// A gate stays registered with its bus after its handle is closed, until
// a gate is added and finds it closed and idle: a call that raced with the
// handle's Close may still be inside it, and Bus.Close must wait for it.

type gate struct {
	_    [cacheLine]byte
	n    int32 // the call count; only the handle's goroutine writes it
	_    [cacheLine - 4]byte
	shut *atomic.Bool // the handle's closed flag
	left chan struct{}
}

// cacheLine is the padding that keeps a gate's count off its neighbours'
// lines (two lines: adjacent-line prefetch pairs them).
const cacheLine = 128

func newGate(shut *atomic.Bool) *gate {
	return &gate{shut: shut, left: make(chan struct{}, 1)}
}

// enter registers a call of g's handle; it fails once the bus or the
// handle is closed.
func (g *gate) enter(b *Bus) error {
	gateAdd(&g.n, 1) // pairs with gateBarrier and the load in wait
	if b.closed.Load() || g.shut.Load() {
		g.exit(b)
		return b.errClosed()
	}
	return nil
}

func (g *gate) exit(b *Bus) {
	if gateAdd(&g.n, -1) == 0 && (b.closed.Load() || g.shut.Load()) {
		select {
		case g.left <- struct{}{}:
		default:
		}
	}
}

// wait returns once no call is inside g. The bus or the handle must be
// closed and gateBarrier called since, so that no call enters after.
func (g *gate) wait() {
	var t *time.Timer
	for atomic.LoadInt32(&g.n) != 0 {
		if t == nil {
			t = time.NewTimer(time.Millisecond)
			defer t.Stop()
		} else {
			t.Reset(time.Millisecond)
		}
		select {
		case <-g.left:
		case <-t.C:
		}
	}
}

// idle reports whether g's handle is closed and no call is inside; call
// gateBarrier first.
func (g *gate) idle() bool { return g.shut.Load() && atomic.LoadInt32(&g.n) == 0 }

// addGate registers g with b, dropping closed, idle gates. The caller
// holds b.mu.
func (b *Bus) addGate(g *gate) {
	shut := false
	for h := range b.gates {
		shut = shut || h.shut.Load()
	}
	if shut {
		gateBarrier()
		for h := range b.gates {
			if h.idle() {
				delete(b.gates, h)
			}
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
	gateBarrier()
	for _, g := range gates {
		g.wait()
	}
}
