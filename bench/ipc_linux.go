package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// The harness. Run measures each method between this process (the
// measuring side: it pings and times round trips, and receives and times
// one-way traffic) and a peer process started from the same executable
// with childEnv naming its role (ChildMain). Each measurement gets fresh
// kernel objects or buses (a cell) and fresh peers, which exit when told
// to (an end message, or a stop byte on their control pipe) and are killed
// when the run's context ends, when they outlive a measurement by
// peerGrace, or when this process dies (PR_SET_PDEATHSIG).

// childEnv is the environment variable that makes a process a peer; its
// value is the peer's configuration in JSON.
const childEnv = "SHMBUS_BENCH_CHILD"

// peerGrace is how long peers may take to start and to finish after a
// measurement before they are killed and the measurement fails.
const peerGrace = 20 * time.Second

var errEnd = errors.New("end of traffic")     // a peer's receive saw the end message
var errAborted = errors.New("peer gone")      // a blocked call was woken because the peer died or the run ended
var errStopped = errors.New("stopped by run") // the run's context ended

// MethodNames lists the names Options.Methods accepts: the methods in the
// order of the report, then the memcpy reference (MemcpyName) and the
// board section (BoardName).
func MethodNames() []string {
	names := make([]string, 0, len(methods)+1)
	for _, m := range methods {
		names = append(names, m.name)
	}
	return append(names, MemcpyName, BoardName)
}

// idleMethods are the methods whose blocked receivers the idle figures
// compare, when the run includes them.
var idleMethods = []string{"shmbus-futex", "shmbus-sem", "pipe"}

func findMethod(name string) *method {
	for _, m := range methods {
		if m.name == name {
			return m
		}
	}
	return nil
}

// Run measures the methods of opts and returns the report. A method that
// cannot carry a size, or cannot be measured one way, has cells saying so
// (Cell.Unavailable); a measurement that fails has Cell.Error set and the
// run goes on (Report.Failed collects them). Run returns an error for bad
// options, and the partial report with ctx's error if ctx ends.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	var ms []*method
	for _, name := range opts.Methods {
		if m := findMethod(name); m != nil {
			ms = append(ms, m)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	r := &runner{opts: opts, self: self}
	rep := &Report{
		Schema:  Schema,
		Started: time.Now(),
		Host:    hostInfo(),
		Settings: Settings{Sizes: opts.Sizes, Duration: Nanos(opts.Duration), Warmup: Nanos(opts.Warmup),
			Idle: Nanos(max(opts.Idle, 0)), CPUs: opts.CPUs, Verify: opts.Verify, Load: opts.Load},
	}
	if opts.CPUs != nil {
		runtime.LockOSThread() // pinning changes threads; keep this one
		defer runtime.UnlockOSThread()
		restore, err := pinProcess(opts.CPUs[0])
		if err != nil {
			return nil, fmt.Errorf("bench: pin to CPU %d: %w", opts.CPUs[0], err)
		}
		defer restore()
	}
	if opts.Load > 0 {
		stop, err := r.startLoad(opts.Load)
		if err != nil {
			return nil, fmt.Errorf("bench: --load: %w", err)
		}
		defer stop()
	}
	r.total = r.plan(ms)
	for _, m := range ms {
		mr := MethodReport{Name: m.name, Description: m.desc, API: m.api, Payload: m.payload, Properties: m.props,
			Notes: m.notes, Latency: []Latency{}, Throughput: []Rate{}}
		for _, size := range m.latencySizes(opts.Sizes) {
			mr.Latency = append(mr.Latency, r.latencyCell(ctx, m, size))
		}
		for _, size := range m.rateSizes(opts.Sizes) {
			mr.Throughput = append(mr.Throughput, r.rateCell(ctx, m, size, modeThroughput))
			if m.batched {
				mr.Unbatched = append(mr.Unbatched, r.rateCell(ctx, m, size, modeUnbatched))
			}
		}
		rep.Methods = append(rep.Methods, mr)
		if ctx.Err() != nil {
			break
		}
	}
	if slices.Contains(opts.Methods, MemcpyName) && ctx.Err() == nil {
		r.progress(Step{What: "memcpy"})
		rep.Memcpy = r.memcpy(ctx)
	}
	if slices.Contains(opts.Methods, BoardName) && ctx.Err() == nil {
		rep.Board = r.board(ctx, BoardValue)
	}
	if names := r.idleNames(); len(names) > 0 && ctx.Err() == nil {
		r.progress(Step{What: "idle"})
		rep.Idle = r.idle(ctx, names)
	}
	rep.Ratios = rep.ratios()
	rep.Elapsed = Nanos(time.Since(rep.Started))
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("bench: %w", err)
	}
	return rep, nil
}

func (o *Options) normalize() error {
	if o.Methods == nil {
		o.Methods = MethodNames()
	}
	for _, name := range o.Methods {
		if findMethod(name) == nil && name != MemcpyName && name != BoardName {
			return fmt.Errorf("bench: %w %q (known: %s)", ErrUnknownMethod, name, strings.Join(MethodNames(), ", "))
		}
	}
	if len(o.Methods) == 0 {
		return fmt.Errorf("bench: %w: no methods", ErrBadOptions)
	}
	if o.Sizes == nil {
		o.Sizes = DefaultSizes
	}
	if len(o.Sizes) == 0 {
		return fmt.Errorf("bench: %w: no sizes", ErrBadOptions)
	}
	for _, s := range o.Sizes {
		if s < MinSize || s > MaxSize {
			return fmt.Errorf("bench: %w: size %d out of range %d..%d bytes", ErrBadOptions, s, MinSize, MaxSize)
		}
	}
	o.Sizes = slices.Compact(slices.Sorted(slices.Values(o.Sizes)))
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Duration < 0 {
		return fmt.Errorf("bench: %w: negative duration", ErrBadOptions)
	}
	if o.Warmup == 0 {
		o.Warmup = max(o.Duration/4, 20*time.Millisecond)
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Idle == 0 {
		o.Idle = DefaultIdle
	}
	if o.Load < 0 || o.Load > MaxLoad {
		return fmt.Errorf("bench: %w: load %d out of range 0..%d", ErrBadOptions, o.Load, MaxLoad)
	}
	if o.CPUs != nil {
		if len(o.CPUs) != 2 {
			return fmt.Errorf("bench: %w: want 2 CPUs, got %d", ErrBadOptions, len(o.CPUs))
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		for _, c := range o.CPUs {
			if c < 0 || c >= 1024 || !set.IsSet(c) {
				return fmt.Errorf("bench: %w: CPU %d is not one this process may run on", ErrBadOptions, c)
			}
		}
	}
	return nil
}

// mode is what a cell measures.
type mode string

const (
	modeLatency    mode = "latency"
	modeThroughput mode = "throughput"
	modeUnbatched  mode = "unbatched"
	modeIdle       mode = "idle"
)

type runner struct {
	opts  Options
	self  string
	step  int
	total int
	seq   atomic.Uint64 // names of cells
}

func (r *runner) plan(ms []*method) int {
	n := 0
	for _, m := range ms {
		n += len(m.latencySizes(r.opts.Sizes))
		k := len(m.rateSizes(r.opts.Sizes))
		if m.batched {
			k *= 2
		}
		n += k
	}
	if slices.Contains(r.opts.Methods, MemcpyName) {
		n++
	}
	if slices.Contains(r.opts.Methods, BoardName) {
		n += 5 // get, get with a writer, put, watch, bus futex
	}
	if len(r.idleNames()) > 0 {
		n++
	}
	return n
}

// idleNames are the idle-cost methods this run measures: those of
// idleMethods that it was asked for, none if the idle figures are off.
func (r *runner) idleNames() []string {
	if r.opts.Idle <= 0 {
		return nil
	}
	var out []string
	for _, name := range idleMethods {
		if slices.Contains(r.opts.Methods, name) {
			out = append(out, name)
		}
	}
	return out
}

func (r *runner) progress(s Step) {
	r.step++
	s.Index, s.Total = r.step, r.total
	if r.opts.Progress != nil {
		r.opts.Progress(s)
	}
}

func (r *runner) latencyCell(ctx context.Context, m *method, size int) Latency {
	cell := Latency{Cell: Cell{Size: size}}
	if why, limit := m.unavailable(size); why != "" {
		cell.Unavailable, cell.Limit = why, limit
		return cell
	}
	r.progress(Step{Method: m.name, What: string(modeLatency), Size: size})
	err := r.measure(ctx, m, size, modeLatency, func(ep endpoint, s *session) error {
		return pingPong(ep, s, &cell)
	})
	if err != nil {
		cell.Error = err.Error()
	}
	return cell
}

func (r *runner) rateCell(ctx context.Context, m *method, size int, md mode) Rate {
	cell := Rate{Cell: Cell{Size: size}, Producers: m.producers()}
	if m.noThroughput != "" {
		cell.Unavailable = m.noThroughput
		return cell
	}
	if why, limit := m.unavailable(size); why != "" {
		cell.Unavailable, cell.Limit = why, limit
		return cell
	}
	r.progress(Step{Method: m.name, What: string(md), Size: size})
	err := r.measure(ctx, m, size, md, func(ep endpoint, s *session) error {
		return receiveAll(ep, s, &cell)
	})
	if err != nil {
		cell.Error = err.Error()
	}
	return cell
}

// session is the measuring side of one measurement: the cell's objects,
// its peers, and how to stop them.
type session struct {
	r        *runner
	m        *method
	c        *cell
	peers    []*peer
	mode     mode
	abort    atomic.Bool // set when the peers died or the run ended: spin loops give up
	stopOnce sync.Once
}

// stop tells the sending peers to send their end messages.
func (s *session) stop() {
	s.stopOnce.Do(func() {
		for _, p := range s.peers {
			p.tell('s')
		}
	})
}

// measure sets up a cell of method m, starts its peers, opens this side's
// endpoint and runs f with it; it then waits for the peers and tears the
// cell down. Whatever fails, no peer outlives it and no object stays.
func (r *runner) measure(ctx context.Context, m *method, size int, md mode, f func(endpoint, *session) error) (err error) {
	if err := ctx.Err(); err != nil {
		return errStopped
	}
	c := r.newCell(m, size, md)
	defer func() { err = errors.Join(err, c.teardown()) }()
	if m.lockThread {
		// The signal method waits on this thread; it must not exit
		// (peers' PR_SET_PDEATHSIG follows the thread that started them).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	if err := m.setup(c); err != nil {
		return fmt.Errorf("bench %s: setup: %w", m.name, err)
	}
	s := &session{r: r, m: m, c: c, mode: md}
	senders := 1
	if md == modeThroughput || md == modeUnbatched {
		senders = m.producers()
	}
	for i := 0; i < senders; i++ {
		role := "echo"
		if md != modeLatency {
			role = "send"
		}
		p, err := r.startPeer(c, role, i)
		if err != nil {
			s.kill()
			_ = s.wait(true) // reaps the peers started so far, closes their pipes
			return fmt.Errorf("bench %s: start peer: %w", m.name, err)
		}
		s.peers = append(s.peers, p)
	}
	c.peers = s.peers
	c.closeChildFiles()

	// The watchdog wakes this side if a peer fails, the run ends, or the
	// measurement takes far longer than it should.
	limit := time.NewTimer(r.opts.Warmup + r.opts.Duration + peerGrace)
	defer limit.Stop()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var ep endpoint
	var epMu sync.Mutex
	go func() {
		defer wg.Done()
		select {
		case <-done:
			return
		case <-ctx.Done():
			s.kill()
		case <-s.anyFailure():
		case <-limit.C:
			s.kill()
		}
		s.abort.Store(true)
		c.cancel()
		epMu.Lock()
		if a, ok := ep.(aborter); ok {
			a.abort()
		}
		epMu.Unlock()
		c.abortOpen()
	}()
	e, err := m.open(c.side(true, md, 0, &s.abort))
	epMu.Lock()
	ep = e
	epMu.Unlock()
	if err == nil {
		err = f(ep, s)
		if err != nil {
			s.stop()
		}
		err = errors.Join(err, ep.close())
	}
	waitErr := s.wait(err != nil)
	close(done)
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		return errStopped
	case err != nil && waitErr != nil:
		// The peer's own account comes first: this side's error is
		// usually only that the peer went away.
		return fmt.Errorf("bench %s: %w (here: %v)", m.name, waitErr, err)
	case err != nil:
		return fmt.Errorf("bench %s: %w", m.name, err)
	case waitErr != nil:
		return fmt.Errorf("bench %s: %w", m.name, waitErr)
	}
	return nil
}

// anyFailure is closed when a peer exits with an error (or is killed). A
// peer that finished its part exits cleanly, and what it sent is still to
// be received.
func (s *session) anyFailure() <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	for _, p := range s.peers {
		go func() {
			<-p.done
			if p.err != nil {
				once.Do(func() { close(ch) })
			}
		}()
	}
	return ch
}

func (s *session) kill() {
	for _, p := range s.peers {
		p.kill()
	}
}

// wait waits for the peers to exit (peerGrace at most, less if this side
// failed) and returns what went wrong with them.
func (s *session) wait(failed bool) error {
	grace := peerGrace
	if failed {
		grace = time.Second
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var errs []error
	for _, p := range s.peers {
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, p.err)
			}
		case <-timer.C:
			s.kill()
			<-p.done
			errs = append(errs, fmt.Errorf("peer %d did not finish within %v: killed", p.pid, grace))
		}
		if p.cmd != nil {
			p.res.Close()
		}
	}
	return errors.Join(errs...)
}

// peer is a peer process (or, for in-process methods, a goroutine).
type peer struct {
	pid    int
	cmd    *exec.Cmd // nil for a goroutine
	ctl    *os.File  // control pipe: 's' = stop sending
	res    *os.File  // result pipe from the peer
	stderr *bytes.Buffer
	done   chan struct{} // closed when the peer has exited
	err    error         // how it exited, with its error line

	stopFlag *atomic.Bool       // a goroutine's stop
	cancel   context.CancelFunc // a goroutine's kill
}

func (p *peer) tell(b byte) {
	if p.cmd == nil {
		if b == 's' {
			p.stopFlag.Store(true)
		}
		return
	}
	p.ctl.Write([]byte{b})
}

func (p *peer) kill() {
	if p.cmd == nil {
		p.cancel()
		return
	}
	p.cmd.Process.Kill()
}

// childConfig is what a peer is told through childEnv.
type childConfig struct {
	Method   string            `json:"method"`
	Role     string            `json:"role"` // echo, send, idle
	Mode     mode              `json:"mode"`
	Size     int               `json:"size"`
	Producer int               `json:"producer"`
	Verify   bool              `json:"verify"`
	CPU      int               `json:"cpu"` // -1: not pinned
	Names    map[string]string `json:"names"`
	Files    int               `json:"files"` // inherited method files, from fd 5
	Parent   int               `json:"parent"`
}

func (r *runner) startPeer(c *cell, role string, producer int) (*peer, error) {
	if c.m.inProcess {
		return r.startInProcess(c, role, producer), nil
	}
	cfg := childConfig{Method: c.m.name, Role: role, Mode: c.mode, Size: c.size, Producer: producer,
		Verify: r.opts.Verify, CPU: -1, Names: c.names, Files: len(c.childFiles), Parent: os.Getpid()}
	if r.opts.CPUs != nil {
		cfg.CPU = r.opts.CPUs[1]
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	p := &peer{ctl: ctlW, res: resR, stderr: new(bytes.Buffer), done: make(chan struct{})}
	cmd := &exec.Cmd{Path: r.self, Args: []string{os.Args[0]}}
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), childEnv+"="+string(js), "GORACE="+gorace)
	cmd.ExtraFiles = append([]*os.File{ctlR, resW}, c.childFiles...)
	cmd.Stderr = &limitedWriter{w: p.stderr, n: 4096}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
	p.cmd = cmd
	err = cmd.Start()
	if err == nil {
		p.pid = cmd.Process.Pid
	}
	ctlR.Close()
	resW.Close()
	if err != nil {
		ctlW.Close()
		resR.Close()
		return nil, err
	}
	go func() {
		werr := cmd.Wait()
		if werr != nil {
			line := strings.TrimSpace(p.stderr.String())
			if line != "" {
				werr = fmt.Errorf("peer %d: %s (%v)", cmd.Process.Pid, line, werr)
			} else {
				werr = fmt.Errorf("peer %d: %v", cmd.Process.Pid, werr)
			}
		}
		p.err = werr
		ctlW.Close()
		// resR stays open: the peer's last figures may still be in the
		// pipe, unread. The peer's exit closed the write end, so a reader
		// gets EOF after them; session.wait closes resR.
		close(p.done)
	}()
	return p, nil
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}

// pingPong measures round trips: stamp, send, receive the echo, record
// the time, compare the echo with what was sent. The warm-up's round trips
// are not recorded.
func pingPong(ep endpoint, s *session, out *Latency) error {
	size := s.c.size
	tmpl := template(max(size, 8))
	msg := slices.Clone(tmpl)[:size]
	buf := make([]byte, max(size, 8))
	h := hdrhistogram.New(1, int64(time.Minute), 3)
	opts := s.r.opts
	start := time.Now()
	var measureTo time.Time
	measuring := false
	for seq := uint64(1); ; seq++ {
		if size >= 8 {
			stamp(msg, 0, seq)
		}
		t0 := time.Now()
		if err := ep.send(msg); err != nil {
			return fmt.Errorf("send %d: %w", seq, err)
		}
		n, err := ep.recv(buf)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("receive %d: %w", seq, err)
		}
		if size > 0 {
			if !bytes.Equal(buf[:n], msg) {
				if err := checkMessage(buf[:n], msg, true); err != nil {
					return fmt.Errorf("round trip %d: %w", seq, err)
				}
				return fmt.Errorf("round trip %d: echo differs from message", seq)
			}
		}
		now := t0.Add(d)
		if measuring {
			if err := h.RecordValue(max(int64(d), 1)); err != nil {
				return fmt.Errorf("histogram: %w", err)
			}
			if now.After(measureTo) {
				break
			}
		} else if now.Sub(start) >= opts.Warmup {
			measuring = true
			measureTo = now.Add(opts.Duration)
		}
	}
	if err := sendEnd(ep, size); err != nil {
		return fmt.Errorf("send end: %w", err)
	}
	out.RoundTrips = h.TotalCount()
	out.Min = Nanos(h.Min())
	out.P50 = Nanos(h.ValueAtQuantile(50))
	out.P99 = Nanos(h.ValueAtQuantile(99))
	out.P999 = Nanos(h.ValueAtQuantile(99.9))
	out.Max = Nanos(h.Max())
	out.Mean = Nanos(h.Mean())
	return nil
}

// sendEnd sends the end message (each method's own if it has one).
func sendEnd(ep endpoint, size int) error {
	if e, ok := ep.(ender); ok {
		return e.sendEnd()
	}
	msg := template(max(size, 8))[:size]
	stamp(msg, 0, endSeq)
	return ep.send(msg)
}

// receiveAll receives what the peers send, checks every message's
// sequence (and its content) and times the window: from the first message
// received after the warm-up to the message at which Duration has passed.
// Then it tells the peers to stop and drains their traffic up to their end
// messages.
func receiveAll(ep endpoint, s *session, out *Rate) error {
	size := s.c.size
	tmpl := template(size)
	buf := make([]byte, size)
	opts := s.r.opts
	producers := len(s.peers)
	next := make([]uint64, producers)
	for i := range next {
		next[i] = 1
	}
	ends := 0
	var count int64
	measuring := false
	var badErr error
	handle := func(msg []byte) {
		if badErr != nil {
			return
		}
		if len(msg) < 8 {
			badErr = fmt.Errorf("message of %d bytes, want %d", len(msg), size)
			return
		}
		p, seq := unstamp(msg)
		switch {
		case p >= producers:
			badErr = fmt.Errorf("message from producer %d of %d", p, producers)
			return
		case seq == endSeq:
			ends++
			return
		case seq != next[p]:
			badErr = fmt.Errorf("producer %d: message %d, want %d (lost, duplicated or reordered)", p, seq, next[p])
			return
		}
		next[p]++
		if err := checkMessage(msg, tmpl, opts.Verify); err != nil {
			badErr = err
			return
		}
		if measuring {
			count++
		}
	}
	// How many messages between looks at the clock when they come one
	// by one: fewer for large ones, which take longer each.
	every := min(max(32768/size, 1), 256)
	var first, t0 time.Time
	started, stopped := false, false
	pl, batched := ep.(poller)
	if s.mode == modeUnbatched {
		batched = false
	}
	ctr, counting := ep.(counter)
	for k := 0; ends < producers; k++ {
		switch {
		case counting:
			n, end, err := ctr.recvCount()
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			if end {
				ends++
			}
			if measuring {
				count += int64(n)
			}
		case batched:
			if _, err := pl.poll(func(msg []byte) {
				n := copy(buf, msg)
				handle(buf[:n])
			}); err != nil {
				return fmt.Errorf("receive: %w", err)
			}
		default:
			n, err := ep.recv(buf)
			if err != nil {
				return fmt.Errorf("receive after %d messages: %w", next[0]-1, err)
			}
			handle(buf[:n])
		}
		if badErr != nil {
			return badErr
		}
		if stopped || (!batched && !counting && k%every != 0) {
			continue
		}
		now := time.Now()
		switch {
		case !started:
			started, first = true, now
		case !measuring:
			if now.Sub(first) >= opts.Warmup {
				measuring, t0 = true, now
			}
		case now.Sub(t0) >= opts.Duration:
			d := now.Sub(t0)
			out.Messages, out.Elapsed = count, Nanos(d)
			out.MsgsPerSec = float64(count) / d.Seconds()
			out.BytesPerSec = out.MsgsPerSec * float64(size)
			measuring, stopped = false, true
			s.stop()
		}
	}
	if !stopped {
		return errors.New("senders ended before the measurement did")
	}
	out.BatchSize = 1
	if batched {
		out.BatchSize = batchSize(size)
	}
	return nil
}

// idle measures the CPU a blocked receiver uses: each method's peer
// blocks in a receive for the idle window, measuring its own CPU time,
// until this side sends it one message. They run at once.
func (r *runner) idle(ctx context.Context, names []string) []IdleCost {
	out := make([]IdleCost, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = IdleCost{Method: name}
			err := r.measureIdle(ctx, findMethod(name), &out[i])
			if err != nil {
				out[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	return out
}

func (r *runner) measureIdle(ctx context.Context, m *method, out *IdleCost) error {
	return r.measureRole(ctx, m, "idle", func(ep endpoint, s *session) error {
		res := bufio.NewReader(s.peers[0].res)
		if line, err := res.ReadString('\n'); err != nil || line != "ready\n" {
			return fmt.Errorf("peer not ready: %q %v", line, err)
		}
		select {
		case <-time.After(r.opts.Idle):
		case <-ctx.Done():
			return ctx.Err()
		}
		msg := template(64)
		stamp(msg, 0, 1)
		if err := ep.send(msg); err != nil {
			return err
		}
		line, err := res.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("peer's figures: %w", err)
		}
		err = json.Unmarshal(line, out)
		out.Method = m.name
		return err
	})
}

// measureRole is measure for one peer of the given role.
func (r *runner) measureRole(ctx context.Context, m *method, role string, f func(endpoint, *session) error) (err error) {
	c := r.newCell(m, 64, modeIdle)
	defer func() { err = errors.Join(err, c.teardown()) }()
	if err := m.setup(c); err != nil {
		return fmt.Errorf("bench %s: setup: %w", m.name, err)
	}
	s := &session{r: r, m: m, c: c, mode: modeIdle}
	p, err := r.startPeer(c, role, 0)
	if err != nil {
		return fmt.Errorf("bench %s: start peer: %w", m.name, err)
	}
	s.peers = []*peer{p}
	c.peers = s.peers
	c.closeChildFiles()
	stop := context.AfterFunc(ctx, s.kill)
	defer stop()
	ep, err := m.open(c.side(true, modeIdle, 0, &s.abort))
	if err == nil {
		err = errors.Join(f(ep, s), ep.close())
	}
	if err != nil {
		s.kill()
	}
	if werr := s.wait(err != nil); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("bench %s: %w", m.name, err)
	}
	return nil
}

// pinProcess binds every thread of this process to cpu (threads started
// later inherit it) and returns a function that restores the old set.
func pinProcess(cpu int) (restore func(), err error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	set.Set(cpu)
	if err := setAllThreads(&set); err != nil {
		setAllThreads(&old)
		return nil, err
	}
	return func() { setAllThreads(&old) }, nil
}

// setAllThreads applies set to every thread in /proc/self/task (twice:
// a thread started during the first pass may have copied the old set).
func setAllThreads(set *unix.CPUSet) error {
	for pass := 0; pass < 2; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
		}
	}
	return nil
}

func hostInfo() Host {
	h := Host{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}
