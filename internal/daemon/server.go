//go:build linux

// Package daemon is the shmbus daemon: a UNIX-socket server through which
// peers in other languages, and peers that cannot map memory, use shmbus
// buses. Its wire protocol is docs/daemon-protocol.md; this package holds
// the server, the frame codec and a Go client.
//
// The daemon never writes a ring itself except through the Bus API (as the
// producer or consumer of a socket client). What it adds to the segment
// protocol is leases: it knows each client's process from the kernel
// (SO_PEERCRED, a pidfd), releases what a dead client held (ReleaseDead),
// wakes the consumer so that the dead client's claims are recovered at
// once, and tells subscribers.
//
// The package never prints: it reports through Config.Logf.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/segment"
)

// Config configures a Server.
type Config struct {
	Dir          string        // bus directory; "" is $SHMBUS_DIR or /dev/shm
	MaxPayload   int           // largest frame payload accepted; 0 is DefaultMaxPayload
	PollInterval time.Duration // how often peer tables are scanned for joins, departures and deaths; 0 is 50ms
	Version      string        // the server string of WELCOME
	// StatJSON renders a bus's statistics for STAT (the CLI's `stat --json`
	// document). Nil uses a minimal rendering.
	StatJSON func(*shmbus.Bus) ([]byte, error)
	// Logf receives one line per notable event (connections refused,
	// malformed frames, leases ended). Nil discards them.
	Logf func(format string, args ...any)

	// Limits (limits.go); 0 is the default of each.
	MaxMemory       int64         // bytes of frame buffers held at once, over all connections; DefaultMaxMemory
	MaxMemoryPerUID int64         // the most of it one user's connections may hold; half of MaxMemory
	MaxConns        int           // connections open at once; DefaultMaxConns
	MaxConnsPerUID  int           // connections open at once by one user; DefaultMaxConnsPerUID
	HelloTimeout    time.Duration // from connecting to the end of HELLO; DefaultHelloTimeout
	FrameTimeout    time.Duration // the longest a started frame may go without a byte; DefaultFrameTimeout
	IdleTimeout     time.Duration // the longest a connection may go without a request; 0 is for ever
	WriteTimeout    time.Duration // the longest a reply may wait for the client to take more of it; DefaultWriteTimeout
}

// Server serves the daemon protocol on a listener.
type Server struct {
	cfg Config

	mu     sync.Mutex
	buses  map[string]*entry
	boards map[string]*boardEntry
	conns  map[*conn]struct{}
	perUID map[uint32]int // connections open, by user
	closed bool

	mem       *budget
	lingering atomic.Int32 // refused connections being read from

	metrics *metrics
	rescan  chan struct{} // poked when a lease ends: scan peer tables now
	wg      sync.WaitGroup
}

// entry is a bus the daemon has open.
type entry struct {
	name  string
	bus   *shmbus.Bus
	memfd bool

	mu       sync.Mutex
	consumer *conn               // the connection the daemon's consumer serves
	proxied  map[int]int         // peer slot -> pid of the client it is held for
	watch    *shmbus.PeerWatcher // the peer events: the same as subscribers' with Events
	events   []shmbus.PeerEvent  // scan's buffer
	removed  bool
}

// New returns a server with cfg.
func New(cfg Config) *Server {
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.Version == "" {
		cfg.Version = "shmbus"
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.MaxMemory <= 0 {
		cfg.MaxMemory = DefaultMaxMemory
	}
	if cfg.MaxMemoryPerUID <= 0 || cfg.MaxMemoryPerUID > cfg.MaxMemory {
		cfg.MaxMemoryPerUID = min(cfg.MaxMemory, max(cfg.MaxMemory/2, int64(cfg.MaxPayload)))
	}
	// A frame larger than one request may hold could never be read.
	mem := newBudget(cfg.MaxMemory, cfg.MaxMemoryPerUID)
	cfg.MaxPayload = int(min(int64(cfg.MaxPayload), mem.largest()))
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerUID <= 0 {
		cfg.MaxConnsPerUID = DefaultMaxConnsPerUID
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = DefaultFrameTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	s := &Server{cfg: cfg, buses: map[string]*entry{}, boards: map[string]*boardEntry{}, conns: map[*conn]struct{}{}, perUID: map[uint32]int{},
		rescan: make(chan struct{}, 1)}
	s.mem = mem
	s.metrics = newMetrics(s)
	return s
}

// Serve accepts connections on l until ctx is done, then shuts down: it
// stops accepting, ends every connection (and so every lease: producers
// and consumers held for clients are closed), closes the buses it has open
// and returns. It returns nil after a shutdown asked for by ctx.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watch(ctx)
	}()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	var err error
	var pause time.Duration
	for {
		c, aerr := l.AcceptUnix()
		if aerr != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(aerr, unix.EMFILE) || errors.Is(aerr, unix.ENFILE) ||
				errors.Is(aerr, unix.ENOBUFS) || errors.Is(aerr, unix.ENOMEM) || errors.Is(aerr, unix.ECONNABORTED) {
				// Out of descriptors or memory for now: wait for
				// connections to close rather than stop serving.
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				s.cfg.Logf("accept: %v; retrying in %v", aerr, pause)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
				}
				continue
			}
			err = fmt.Errorf("daemon: accept: %w", aerr)
			break
		}
		pause = 0
		s.accept(ctx, c)
	}
	cancel()
	s.shutdown()
	s.wg.Wait()
	s.closeBuses()
	s.closeBoards()
	return err
}

// accept admits a connection, or refuses it (ERROR CONN_LIMIT) when its
// user or the daemon has as many open as allowed.
func (s *Server) accept(ctx context.Context, c *net.UnixConn) {
	cred, err := peerCreds(c)
	if err != nil {
		s.cfg.Logf("refused a connection: %v", err)
		s.metrics.refused.WithLabelValues("credentials").Inc()
		c.Close()
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	var refusal, reason string
	switch {
	case len(s.conns) >= s.cfg.MaxConns:
		reason = "limit"
		refusal = fmt.Sprintf("the daemon has %d connections open, the most it allows (--max-conns); closing", len(s.conns))
	case s.perUID[cred.uid] >= s.cfg.MaxConnsPerUID:
		reason = "uid_limit"
		refusal = fmt.Sprintf("uid %d has %d connections open, the most the daemon allows one user (--max-conns-per-uid); closing",
			cred.uid, s.perUID[cred.uid])
	}
	if refusal != "" {
		s.mu.Unlock()
		s.metrics.refused.WithLabelValues(reason).Inc()
		s.cfg.Logf("refused a connection of pid %d uid %d: %s", cred.pid, cred.uid, refusal)
		s.refuse(c, refusal)
		return
	}
	cn := newConn(s, c, cred)
	s.conns[cn] = struct{}{}
	s.perUID[cred.uid]++
	s.mu.Unlock()
	s.metrics.conns.Inc()
	s.metrics.connsTotal.Inc()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		cn.serve(ctx)
		s.mu.Lock()
		delete(s.conns, cn)
		if s.perUID[cred.uid]--; s.perUID[cred.uid] == 0 {
			delete(s.perUID, cred.uid)
		}
		s.mu.Unlock()
		s.metrics.conns.Dec()
	}()
}

// refuse tells a connection over a limit why, and closes it. While few
// refusals are pending it first reads (and drops) what the client sends for
// up to a second, so that a client writing its HELLO meanwhile reads the
// ERROR rather than meets a broken pipe.
func (s *Server) refuse(c *net.UnixConn, why string) {
	farewell(c, 0, CodeConnLimit, why)
	if s.lingering.Add(1) > maxLingering {
		s.lingering.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer s.lingering.Add(-1)
		defer c.Close()
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// maxLingering is the most refused connections read from at once.
const maxLingering = 64

// farewell writes an ERROR frame on a connection about to be closed, giving
// up after a second if the client does not read.
func farewell(c *net.UnixConn, id uint32, code Code, msg string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(AppendFrame(nil, TypeError, id, encodeError(code, msg)))
}

// shutdown ends every connection.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.c.Close()
	}
}

func (s *Server) closeBuses() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, e := range s.buses {
		e.bus.Close()
		delete(s.buses, name)
	}
}

// poke asks the watcher for a scan now.
func (s *Server) poke() {
	select {
	case s.rescan <- struct{}{}:
	default:
	}
}

// lookup returns the open bus called name, opening it from the directory
// if the daemon does not have it open yet.
func (s *Server) lookup(name string) (*entry, error) {
	if err := segment.ValidateName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &Error{CodeShutdown, "the daemon is shutting down"}
	}
	stale := s.buses[name]
	if stale != nil && (stale.memfd || stale.current(s.cfg.Dir)) {
		s.mu.Unlock()
		return stale, nil
	}
	if stale != nil {
		// Removed (and perhaps made again) behind the daemon's back:
		// what it has open is not the bus of that name any more.
		delete(s.buses, name)
	}
	s.mu.Unlock()
	if stale != nil {
		stale.bus.Close()
	}
	// Opening may wait for a creator to finish (up to a second): not
	// under the lock every request takes.
	b, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: s.cfg.Dir})
	if err != nil {
		return nil, err
	}
	// Peers attached before the daemon opened the bus are not news:
	// subscribers hear of joins from now on (STAT lists who is there).
	e := newEntry(name, b, false)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		b.Close()
		return nil, &Error{CodeShutdown, "the daemon is shutting down"}
	}
	if other := s.buses[name]; other != nil {
		b.Close() // another request opened it meanwhile
		return other, nil
	}
	s.buses[name] = e
	return e, nil
}

// current says whether e's segment is still the file its name leads to.
func (e *entry) current(dir string) bool {
	fi, err := os.Stat(segment.Path(dir, e.name))
	if err != nil {
		return false
	}
	mine, err := e.bus.File().Stat()
	return err == nil && os.SameFile(fi, mine)
}

func newEntry(name string, b *shmbus.Bus, memfd bool) *entry {
	return &entry{name: name, bus: b, memfd: memfd, proxied: map[int]int{}, watch: b.WatchPeers()}
}

// memfdNamed says whether one of the daemon's memfd buses is called name.
func (s *Server) memfdNamed(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.buses[name]
	return e != nil && e.memfd
}

// add registers a bus this daemon created. Its creation succeeded, so the
// directory had no bus of that name: a file bus the daemon still has open
// under it was removed behind its back, and is forgotten now.
func (s *Server) add(name string, b *shmbus.Bus, memfd bool) (*entry, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &Error{CodeShutdown, "the daemon is shutting down"}
	}
	stale := s.buses[name]
	if stale != nil && stale.memfd {
		s.mu.Unlock()
		return nil, &Error{CodeExists, fmt.Sprintf("bus %q exists (a memfd bus of this daemon)", name)}
	}
	e := newEntry(name, b, memfd)
	s.buses[name] = e
	s.mu.Unlock()
	if stale != nil {
		stale.bus.Close()
	}
	return e, nil
}

// drop forgets a removed bus.
func (s *Server) drop(e *entry) {
	s.mu.Lock()
	if s.buses[e.name] == e {
		delete(s.buses, e.name)
	}
	s.mu.Unlock()
}

// names lists the buses of the directory and the daemon's memfd buses.
func (s *Server) names() ([]string, error) {
	names, err := shmbus.List(s.cfg.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	s.mu.Lock()
	for name, e := range s.buses {
		if e.memfd {
			names = append(names, name)
		}
	}
	s.mu.Unlock()
	slices.Sort(names)
	return slices.Compact(names), nil
}

// listed returns the buses LIST names, opening those of the directory the
// daemon has not open yet (a bus made by `shmbus create`, say); buses it may
// not open, or that vanish meanwhile, are left out.
func (s *Server) listed() []*entry {
	names, _ := s.names()
	out := make([]*entry, 0, len(names))
	for _, name := range names {
		if e, err := s.lookup(name); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// entries is a snapshot of the open buses.
func (s *Server) entries() []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*entry, 0, len(s.buses))
	for _, e := range s.buses {
		out = append(out, e)
	}
	return out
}

// connsSnapshot is a snapshot of the connections.
func (s *Server) connsSnapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}
