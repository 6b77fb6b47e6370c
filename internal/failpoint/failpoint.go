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
	for _, p := range []*Point{AfterClaim, BeforeCommit, CreateStep} {
		if p.name == name {
			return p
		}
	}
	return nil
}
