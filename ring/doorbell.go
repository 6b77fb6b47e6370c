package ring

// Doorbell protocol (an eventcount).
//
// A doorbell is one 64-bit word in shared memory:
//
//	bits  0..31  sequence: bumped by every ring that finds sleepers; the low
//	             half is the futex word sleepers wait on
//	bits 32..62  announced sleepers
//	bit  63      rung: some ringer has bumped the sequence since the last
//	             sleeper announced itself
//
// A waiter that found nothing to do:
//
//  1. announces itself: one CAS adds a sleeper and clears rung, and yields
//     the sequence value s;
//  2. re-checks its condition (every lane, for the consumer); if it now
//     holds, it withdraws (subtracts itself) and returns;
//  3. sleeps while the sequence is still s, with a deadline always set;
//  4. withdraws, and re-checks.
//
// A ringer, after publishing (the store that makes the condition true):
//
//  1. loads the word; if nobody is announced, or rung is set, it is done:
//     one load and no system call on the fast path;
//  2. otherwise one CAS bumps the sequence and sets rung, and the winner
//     wakes every announced sleeper.
//
// No lost wake-up: the ringer's publishing store and its load of the word,
// and the waiter's announcing CAS and its re-check, are all sequentially
// consistent (Go's sync/atomic). So either the ringer's load sees the
// announcement, and it bumps the sequence, which makes the sleep return at
// once (futex EAGAIN) or wakes it; or the waiter's re-check sees what the
// ringer published. The rung bit makes only one ringer per sleep pay the
// system call; a new announcement clears it, so the next sleep is rung again.
//
// Spurious returns are allowed everywhere (a sleep may end early, a wake may
// find nobody): waiters always re-check. The System V semaphore fallback
// keeps the same word and protocol; the ringer raises the semaphore by the
// number of announced sleepers minus its current value, so the count stays
// near the number of sleepers: only ringers racing each other can overshoot,
// by at most one unit each, and a waiter that withdrew without sleeping may
// leave one unit behind. A surplus unit turns a later sleep into an
// immediate return, which consumes it: the count never piles up. With
// several sleepers (producers waiting for room), one that announced after a
// ring may take the unit meant for an earlier one; that one then sleeps
// until the next ring or its backstop: latency, never a lost wake-up of
// the last sleeper.

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/layout"
)

// Sleeper is a wake primitive: a futex, or one semaphore of a System V set.
type Sleeper interface {
	// Sleep blocks while *seq == expected, until woken or deadline. It may
	// return early for any reason; os.ErrDeadlineExceeded means the
	// deadline passed.
	Sleep(seq *atomic.Uint32, expected uint32, deadline time.Time) error
	// Wake wakes up to n sleepers on seq.
	Wake(seq *atomic.Uint32, n int) error
}

const (
	rungBit    = 1 << 63
	waiterOne  = 1 << 32
	waiterMask = (1<<31 - 1) << 32
	seqMask    = 1<<32 - 1
)

// Backstop bounds every sleep: even if a wake-up were lost (a peer died
// between publishing and ringing), a sleeper re-checks this often. A
// sleeper left waiting on the default backstop, with no ring at all in the
// meantime, doubles it after each quiet sleep up to MaxBackstop, so that an
// idle peer costs about one wake-up a second instead of five; any ring brings
// it back to Backstop.
const (
	Backstop    = 200 * time.Millisecond
	MaxBackstop = time.Second
)

// Doorbell is one eventcount word in shared memory with its sleeper.
type Doorbell struct {
	word    *atomic.Uint64
	seq     *atomic.Uint32 // low half of word
	sleeper Sleeper
	sleeps  *atomic.Uint64 // statistics; may be nil
	wakes   *atomic.Uint64
}

// NewDoorbell binds the doorbell word at off in seg to sleeper. sleeps and
// wakes count sleeps taken and rings that woke somebody (either may be nil).
func NewDoorbell(seg []byte, off uint64, sleeper Sleeper, sleeps, wakes *atomic.Uint64) *Doorbell {
	return &Doorbell{
		word:    layout.Word64(seg, off),
		seq:     layout.Word32(seg, off), // little-endian: the low half
		sleeper: sleeper,
		sleeps:  sleeps,
		wakes:   wakes,
	}
}

// Ring wakes the sleepers announced on d, if any and if nobody rang since
// they announced, and reports whether it did. It must be called after the
// store that publishes what they wait for. An error from the wake primitive
// only delays the sleepers until their backstop; callers that published data
// must not report it as a failure to publish.
func (d *Doorbell) Ring() (bool, error) {
	for {
		w := d.word.Load() // pairs with the announcing CAS in Wait
		n := (w & waiterMask) >> 32
		if n == 0 || w&rungBit != 0 {
			return false, nil
		}
		nw := (w &^ seqMask) | uint64(uint32(w)+1) | rungBit
		if d.word.CompareAndSwap(w, nw) {
			if d.wakes != nil {
				d.wakes.Add(1)
			}
			return true, d.sleeper.Wake(d.seq, int(n))
		}
	}
}

// Kick bumps the sequence and wakes every sleeper unconditionally; used when
// a process closes or a caller cancels, so sleepers re-check at once.
func (d *Doorbell) Kick() error {
	for {
		w := d.word.Load()
		nw := (w &^ seqMask) | uint64(uint32(w)+1)
		if d.word.CompareAndSwap(w, nw) {
			n := int((w & waiterMask) >> 32)
			if n == 0 {
				return nil
			}
			return d.sleeper.Wake(d.seq, n)
		}
	}
}

// Sleepers is the number of announced sleepers.
func (d *Doorbell) Sleepers() int { return int((d.word.Load() & waiterMask) >> 32) }

// Wait blocks until ready reports true, stop returns an error (returned as
// is), or deadline passes (os.ErrDeadlineExceeded; zero means none). It
// spins first, as spin says, then sleeps on the doorbell. Each sleep is
// bounded by backstop (Backstop if zero). After every sleep, woken or timed
// out, wake is called if not nil, to let the caller do periodic work
// (recovery of dead peers) before the condition is re-checked. The default
// backstop grows while nobody rings (see MaxBackstop).
func (d *Doorbell) Wait(ready func() bool, stop func() error, deadline time.Time, spin *Spinner, backstop time.Duration, wake func()) error {
	if spin.Spin(ready) {
		return nil
	}
	adaptive := backstop <= 0
	if adaptive {
		backstop = Backstop
	}
	bound := backstop
	for {
		if stop != nil {
			if err := stop(); err != nil {
				return err
			}
		}
		s := d.announce()
		if ready() {
			d.withdraw()
			return nil
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			d.withdraw()
			return os.ErrDeadlineExceeded
		}
		until := now.Add(bound)
		if !deadline.IsZero() && deadline.Before(until) {
			until = deadline
		}
		if d.sleeps != nil {
			d.sleeps.Add(1)
		}
		err := d.sleeper.Sleep(d.seq, s, until)
		d.withdraw()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if adaptive && err != nil && d.seq.Load() == s {
			bound = min(2*bound, MaxBackstop) // a quiet sleep
		} else {
			bound = backstop
		}
		if wake != nil {
			wake()
		}
		if ready() {
			return nil
		}
	}
}

// announce adds a sleeper and clears rung; it returns the sequence to sleep on.
func (d *Doorbell) announce() uint32 {
	for {
		w := d.word.Load()
		nw := (w + waiterOne) &^ rungBit // pairs with the load in Ring
		if d.word.CompareAndSwap(w, nw) {
			return uint32(nw)
		}
	}
}

func (d *Doorbell) withdraw() { d.word.Add(^uint64(waiterOne - 1)) }

// Spinner is an adaptive spin budget: it polls a condition for a while
// before a waiter sleeps, growing the budget when spinning paid off and
// shrinking it when it did not. It belongs to one waiter (not shared).
//
// After offAfter spins in a row that did not pay, it stops spinning: the
// peer is not running while we spin (it shares our CPU, or the machine is
// busy), and every spin only delays the sleep that lets it run. It then
// looks once and sleeps, and spins again (at Min) only every probeEvery-th
// wait, to notice when spinning would pay again. This is the Go runtime's
// rule for sync.Mutex (spin only while the holder may be running on
// another CPU) measured instead of asked: a process cannot see where a
// peer process runs.
type Spinner struct {
	Budget time.Duration // current budget; zero means Min
	Min    time.Duration // floor (default 1µs)
	Max    time.Duration // ceiling (default 50µs); zero Max and Min=-1 disables spinning

	fails, skipped uint8 // spins in a row that did not pay; waits since the last probe
}

const (
	offAfter   = 4
	probeEvery = 16
)

// tightPolls is how many polls run back to back before the first clock read
// and yield: a PAUSE or yield on every poll costs throughput.
const tightPolls = 256

// osYieldAfter is how long Spin polls before it yields to other processes
// instead of other goroutines.
const osYieldAfter = 5 * time.Microsecond

// Spin polls ready until it holds (true) or the budget is spent (false).
func (s *Spinner) Spin(ready func() bool) bool {
	if s == nil {
		return ready()
	}
	if s.Min < 0 {
		return ready()
	}
	minB, maxB := s.Min, s.Max
	if minB == 0 {
		minB = time.Microsecond
	}
	if maxB == 0 {
		maxB = 50 * time.Microsecond
	}
	if s.Budget < minB {
		s.Budget = minB
	}
	if s.fails >= offAfter {
		if s.skipped++; s.skipped < probeEvery {
			return ready()
		}
		s.skipped = 0 // a probe, at the budget Min
	}
	for i := 0; i < tightPolls; i++ {
		if ready() {
			s.fails = 0
			return true
		}
	}
	start := time.Now()
	for i := 0; ; i++ {
		if ready() {
			if s.Budget < maxB {
				s.Budget *= 2
			}
			s.fails = 0
			return true
		}
		if i%16 == 15 {
			spun := time.Since(start)
			if spun > s.Budget {
				break
			}
			// Past a few microseconds the peer is probably not running
			// on another CPU: maybe on this one, waiting for it.
			if spun > osYieldAfter {
				osYield()
			} else {
				yield()
			}
		}
	}
	if s.Budget > minB {
		s.Budget /= 2
	}
	if s.fails < offAfter {
		s.fails++
	}
	return false
}
