// Package failpoint lets tests stop a process at exact points of the ring
// protocol (for example between claiming space and publishing it) to prove
// that survivors recover. Points cost one atomic load when unset, and are
// only ever set by tests of this module.
package failpoint

import "sync/atomic"

// Point is a named place in the code where a test may inject behaviour.
type Point struct {
	name string
	f    atomic.Pointer[func()]
}

// Name is the point's name.
func (p *Point) Name() string { return p.name }

// Set makes Fire call f (nil clears it).
func (p *Point) Set(f func()) {
	if f == nil {
		p.f.Store(nil)
		return
	}
	p.f.Store(&f)
}

// Fire runs the injected function, if any.
func (p *Point) Fire() {
	if f := p.f.Load(); f != nil {
		(*f)()
	}
}

// Points of the ring protocol.
var (
	// AfterClaim fires after a producer has claimed space (the lane's tail
	// has moved past it) and before it writes or publishes anything there.
	AfterClaim = &Point{name: "after-claim"}
	// BeforeCommit fires after a producer has written its records and
	// before it publishes the first one.
	BeforeCommit = &Point{name: "before-commit"}
	// CreateStep fires while a segment is being created, before each
	// chunk of it is reserved or prefaulted (where the creator looks
	// whether it should give up).
	CreateStep = &Point{name: "create-step"}
)

// Lookup finds a point by name.
func Lookup(name string) *Point {
	for _, p := range append([]*Point{AfterClaim, BeforeCommit, CreateStep}, BoardPoints...) {
		if p.name == name {
			return p
		}
	}
	return nil
}

// Points of the board write protocol (internal/board), in the order a Put
// passes them.
var (
	// BoardBinding fires once a writer holds the lock of a free cell it
	// is binding to a new key, before it writes the key.
	BoardBinding = &Point{name: "board-binding"}
	// BoardLocked fires once a writer holds its key's cell's lock,
	// before it writes anything.
	BoardLocked = &Point{name: "board-locked"}
	// BoardCopyOpen fires after a writer has made the spare copy's
	// sequence odd, before it writes the value.
	BoardCopyOpen = &Point{name: "board-copy-open"}
	// BoardCopyWritten fires after the value is in the spare copy, before
	// its sequence becomes even.
	BoardCopyWritten = &Point{name: "board-copy-written"}
	// BoardCopyClosed fires after the spare copy is complete, before the
	// cell's current word names it.
	BoardCopyClosed = &Point{name: "board-copy-closed"}
	// BoardPublished fires after the current word names the new copy,
	// before the lock is released and the doorbell rung.
	BoardPublished = &Point{name: "board-published"}
)

// BoardPoints are the board's points, in protocol order.
var BoardPoints = []*Point{BoardBinding, BoardLocked, BoardCopyOpen, BoardCopyWritten, BoardCopyClosed, BoardPublished}
