package board

import (
	"slices"
	"strings"
	"time"

	"github.com/shmbus/shmbus/ring"
)

// Waiting is the doorbell's (ring.Doorbell.Wait): a short adaptive spin,
// then announce, re-check, sleep, each sleep bounded by the backstop. The
// condition is a key's revision, one atomic load per watched key. stop is
// called before every sleep and ends the wait with its error (the caller
// kicks the doorbell when it wants a sleeping stop noticed at once).

// Watch blocks until key's revision is past after, then returns the entry
// at its revision then (the latest value, never an older one: writes
// faster than the watcher are coalesced). A deleted key's entry has
// Deleted set and no value. stop and deadline end the wait as
// ring.Doorbell.Wait says (os.ErrDeadlineExceeded at the deadline).
func (b *Board) Watch(key string, after uint64, spin *ring.Spinner, stop func() error, deadline time.Time) (Entry, error) {
	if err := CheckKey(key); err != nil {
		return Entry{}, err
	}
	w := b.NewWatcher(after, []string{key}, "", false)
	if spin != nil {
		w.Spin = *spin
	}
	for {
		es, err := w.Next(stop, deadline)
		if err != nil {
			return Entry{}, err
		}
		if len(es) > 0 {
			return es[0], nil
		}
	}
}

// Watcher watches a set of keys, or every key with a prefix, on the
// board's one doorbell: no goroutine or futex per key. Each Next returns
// the watched keys whose revision passed the last one Next returned for
// them (at first: the watcher's after), with their latest values. A
// Watcher belongs to one goroutine.
type Watcher struct {
	b      *Board
	keys   []string // the watched set, if not a prefix watch
	cells  []int    // the cell of keys[i], -1 while the key was never written
	prefix string
	all    bool     // a prefix watch
	last   []uint64 // by cell: the revision last reported (or after)
	after  uint64
	err    error

	// Spin is the spin budget before sleeping (see ring.Spinner).
	Spin ring.Spinner
	// Backstop bounds each sleep (0: ring.Backstop, growing while
	// nobody rings; see ring.Doorbell.Wait).
	Backstop time.Duration
}

// NewWatcher watches keys (if prefixWatch is false) or every key starting
// with prefix (if it is true; "" is every key), for revisions past after.
func (b *Board) NewWatcher(after uint64, keys []string, prefix string, prefixWatch bool) *Watcher {
	w := &Watcher{b: b, keys: slices.Clone(keys), prefix: prefix, all: prefixWatch, after: after,
		last: make([]uint64, b.g.Cells), Spin: ring.Spinner{Max: 50 * time.Microsecond}}
	for i := range w.last {
		w.last[i] = after
	}
	w.cells = make([]int, len(keys))
	for i := range w.cells {
		w.cells[i] = -1
	}
	return w
}

// changed reports whether a watched key has a revision past its last one.
func (w *Watcher) changed() bool {
	if w.err != nil {
		return true
	}
	b := w.b
	if !w.all {
		for i, c := range w.cells {
			if c < 0 {
				if CheckKey(w.keys[i]) != nil {
					continue
				}
				var ok bool
				c, ok, w.err = b.Lookup(w.keys[i])
				if w.err != nil {
					return true
				}
				if !ok {
					continue
				}
				w.cells[i] = c
			}
			if b.revOf(c) > w.last[c] {
				return true
			}
		}
		return false
	}
	for i := 0; i < b.g.Cells; i++ {
		if b.revOf(i) <= w.last[i] {
			continue // a cell never written has revision 0
		}
		k, ok, err := b.key(i)
		if err != nil {
			w.err = err
			return true
		}
		if ok && strings.HasPrefix(k, w.prefix) {
			return true
		}
	}
	return false
}

// Next blocks until some watched key changed and returns every watched key
// that did, in revision order.
func (w *Watcher) Next(stop func() error, deadline time.Time) ([]Entry, error) {
	if err := w.b.bell.Wait(w.changed, stop, deadline, &w.Spin, w.Backstop, nil); err != nil {
		return nil, err
	}
	if w.err != nil {
		return nil, w.err
	}
	var out []Entry
	visit := func(i int) error {
		if w.b.revOf(i) <= w.last[i] {
			return nil
		}
		k, ok, err := w.b.key(i)
		if err != nil || !ok || w.all && !strings.HasPrefix(k, w.prefix) {
			return err
		}
		v, rev, dead, err := w.b.read(i, nil)
		if err != nil {
			return err
		}
		w.last[i] = rev
		out = append(out, Entry{Key: k, Value: v, Rev: rev, Deleted: dead})
		return nil
	}
	if w.all {
		for i := 0; i < w.b.g.Cells; i++ {
			if err := visit(i); err != nil {
				return nil, err
			}
		}
	} else {
		for _, c := range w.cells {
			if c >= 0 {
				if err := visit(c); err != nil {
					return nil, err
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		switch {
		case a.Rev < b.Rev:
			return -1
		case a.Rev > b.Rev:
			return 1
		}
		return 0
	})
	return out, nil
}
