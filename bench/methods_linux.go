package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// method is one row of the comparison: how to set up its objects (in the
// measuring process) and how each side opens its endpoint.
type method struct {
	name, desc, api string
	payload         string // "bytes", "8-byte counter", "none"
	props           Properties
	notes           string
	// fixed, if not -1, is the only message size the method carries
	// (0: none at all); it is measured at that size whatever the run's
	// sizes are.
	fixed        int
	noThroughput string // why one-way throughput is not measured, if it is not
	senders      int    // sending processes in throughput runs; 0 means 1
	batched      bool   // throughput uses batches; Unbatched is measured too
	lockThread   bool   // the measuring side needs its own OS thread (signal)
	inProcess    bool   // the peer is a goroutine of the measuring process
	// limit returns the largest message the method can carry here and
	// the name of the setting that bounds it, or 0 if nothing does.
	limit func() (int, string)
	setup func(c *cell) error
	open  func(s *side) (endpoint, error)
}

func (m *method) producers() int { return max(m.senders, 1) }

func (m *method) latencySizes(sizes []int) []int {
	if m.fixed >= 0 {
		return []int{m.fixed}
	}
	return sizes
}

func (m *method) rateSizes(sizes []int) []int {
	if m.fixed >= 0 {
		if m.noThroughput != "" {
			return nil
		}
		return []int{m.fixed}
	}
	return sizes
}

// unavailable says why size cannot be carried, and the limit.
func (m *method) unavailable(size int) (string, int) {
	if m.fixed >= 0 && size != m.fixed {
		return fmt.Sprintf("n/a: carries %s only", m.payload), m.fixed
	}
	if m.limit == nil {
		return "", 0
	}
	if limit, what := m.limit(); limit > 0 && size > limit {
		return fmt.Sprintf("n/a: limit %d B (%s)", limit, what), limit
	}
	return "", 0
}

// endpoint is one side of a method: it sends and receives whole
// messages. recv fills buf with the next message and returns its size
// (for byte streams: reads exactly len(buf) bytes).
type endpoint interface {
	send(msg []byte) error
	recv(buf []byte) (int, error)
	close() error
}

// aborter is an endpoint whose blocked calls can be woken from another
// goroutine; they then fail.
type aborter interface{ abort() }

// batchSender sends several messages with one call.
type batchSender interface{ sendBatch(msgs [][]byte) error }

// poller receives every message there is now (waiting for at least one)
// and hands each to f, valid only during the call.
type poller interface {
	poll(f func(msg []byte)) (int, error)
}

// ender is an endpoint with its own end message (notifications).
type ender interface{ sendEnd() error }

// counter is an endpoint that receives counts rather than messages
// (eventfd): n events, and whether the end came.
type counter interface {
	recvCount() (n uint64, end bool, err error)
}

// cell is the objects of one measurement, made by the method's setup in
// the measuring process.
type cell struct {
	m     *method
	size  int
	mode  mode
	name  string // unique in this process, for buses and queues
	dir   string // where buses go (Options.Dir)
	names map[string]string
	// childFiles are inherited by the peers (fd 5 on); parentFiles are
	// this side's. Both are closed at teardown.
	childFiles, parentFiles []*os.File
	cleanups                []func() error
	abortOpens              []func() // wake this side's open if it blocks
	shared                  any      // in-process methods: what both sides share
	peers                   []*peer
	ctx                     context.Context // canceled when the peers die or the run ends
	cancel                  context.CancelFunc
}

func (r *runner) newCell(m *method, size int, md mode) *cell {
	ctx, cancel := context.WithCancel(context.Background())
	return &cell{m: m, size: size, mode: md, dir: r.opts.Dir, names: map[string]string{},
		name: fmt.Sprintf("bench-%d-%d", os.Getpid(), r.seq.Add(1)), ctx: ctx, cancel: cancel}
}

// side is what an endpoint is opened with, on either side.
type side struct {
	parent   bool
	size     int
	mode     mode
	producer int
	names    map[string]string
	files    []*os.File
	shared   any
	cell     *cell           // the measuring side's cell (nil in peers)
	ctx      context.Context // ends when the other side is gone
	abort    *atomic.Bool    // set when the other side is gone: spin loops give up
	peer     int             // the other process's pid
	res      *os.File        // the result pipe (peer: to write; measuring side: to read)
}

func (c *cell) side(parent bool, md mode, producer int, abort *atomic.Bool) *side {
	s := &side{parent: parent, size: c.size, mode: md, producer: producer, names: c.names,
		files: c.parentFiles, shared: c.shared, cell: c, ctx: c.ctx, abort: abort}
	if len(c.peers) > 0 {
		s.peer = c.peers[0].pid
		s.res = c.peers[0].res
	}
	return s
}

// addFiles records fds made by setup: parent's kept here, child's passed on.
func (c *cell) addFiles(parent, child []int, name string) {
	for _, fd := range parent {
		c.parentFiles = append(c.parentFiles, os.NewFile(uintptr(fd), name))
	}
	for _, fd := range child {
		c.childFiles = append(c.childFiles, os.NewFile(uintptr(fd), name))
	}
}

func (c *cell) closeChildFiles() {
	for _, f := range c.childFiles {
		f.Close()
	}
	c.childFiles = nil
}

func (c *cell) abortOpen() {
	for _, f := range c.abortOpens {
		f()
	}
}

func (c *cell) teardown() error {
	c.cancel()
	c.closeChildFiles()
	var errs []error
	for _, f := range c.parentFiles {
		f.Close()
	}
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		if err := c.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fd is the descriptor of files[i].
func (s *side) fd(i int) int { return int(s.files[i].Fd()) }

// methods is every method, in the order of the report: kernel byte
// streams, kernel records, notifications, then shared memory.
var methods = []*method{
	pipeMethod, fifoMethod, unixStreamMethod, unixDgramMethod, unixSeqpacketMethod, tcpMethod,
	posixMQMethod, sysvMsgqMethod, signalMethod, eventfdMethod,
	shmbusSpinMethod, shmbusFutexMethod, shmbusSemMethod, shmbusMPSCMethod,
	ringMinimalMethod, goChanMethod,
}
