// Package shmbus is a message bus in shared memory: processes on one
// machine exchange messages through lock-free rings in a mapped file, at
// memory speed, and sleep on a futex (or a System V semaphore) when there is
// nothing to do.
//
// A bus is a named segment, /dev/shm/shmbus.NAME (the directory can be
// changed with SHMBUS_DIR), made by Create and attached to by Open from any
// number of processes. It has one lane per priority level; a lane is a ring
// written by one producer (SingleProducer) or by any number of producers in
// any number of processes (MultiProducer), and read by the bus's one
// consumer, which takes the oldest message of the highest priority first.
//
//	bus, err := shmbus.Create("orders", &shmbus.Options{Priorities: 4})
//	p, err := bus.NewProducer()
//	err = p.Send(ctx, []byte("hello"), 2)
//	...
//	c, err := bus.NewConsumer()
//	n, prio, err := c.Receive(ctx, buf)
//
// A fan-out bus (Options.Subscriptions) has subscriptions instead of the
// consumer: every message goes to every subscription, each with its own
// cursor, blocking or lossy, durable or ephemeral (see Bus.Subscribe).
//
// The segment format is in package layout and docs/layout.md; the ring and
// doorbell protocols in package ring and docs/protocol.md.
package shmbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
	"github.com/shmbus/shmbus/sem"
)

// Errors. Every error shmbus returns wraps one of these (or an error from
// the operating system) and names the bus it concerns.
var (
	ErrClosed      = os.ErrClosed            // the Bus, Producer or Consumer was closed
	ErrNotExist    = os.ErrNotExist          // no bus of that name
	ErrExist       = os.ErrExist             // Create: a bus of that name exists
	ErrPermission  = os.ErrPermission        // the segment's mode does not admit this process
	ErrCorrupt     = layout.ErrCorrupt       // the segment is damaged or was written by a broken peer
	ErrVersion     = layout.ErrVersion       // the segment has a format version this build cannot read
	ErrNotReady    = layout.ErrNotReady      // the segment's creator has not finished initialising it
	ErrBadName     = segment.ErrBadName      // the name is not 1-200 characters of [A-Za-z0-9._-] starting with [A-Za-z0-9_]
	ErrFull        = ring.ErrFull            // TrySend: no room in the lane now
	ErrEmpty       = ring.ErrEmpty           // TryReceive: no message now
	ErrTooLarge    = ring.ErrTooLarge        // the message is larger than the bus accepts
	ErrShortBuffer = ring.ErrShortBuffer     // Receive: the buffer is too small (see ShortBufferError)
	ErrBusy        = errors.New("role held") // another live process holds the consumer (or single-producer) role
	ErrNoSlot      = errors.New("no free peer slot")
	ErrPriority    = errors.New("priority out of range")
	ErrConfig      = layout.ErrConfig
	ErrTruncated   = segment.ErrTruncated          // the segment file was truncated under this process
	ErrUnsupported = errors.ErrUnsupported         // the wake mode does not exist on this platform
	ErrNoSpace     = segment.ErrNoSpace            // Create, CheckRoom, Receive: no room for a segment or a reassembly file
	ErrDropped     = errors.New("message dropped") // Receive: a large message the consumer could not hold was skipped
)

// ProducerMode says how many producers a bus's lanes accept.
type ProducerMode int

const (
	MultiProducer  ProducerMode = iota // MPSC lanes: any number of producers (the default)
	SingleProducer                     // SPSC lanes: one producer at a time, wait-free
)

// Defaults for Options.
const (
	DefaultLaneCapacity = 1 << 20
	DefaultMaxMessage   = 16 << 20
	DefaultPeerSlots    = 64
	DefaultMode         = 0o600
)

// Options configure Create. The zero value (or nil) is a bus with one
// priority level, 1 MiB lanes, any number of producers, the platform's
// default wake mode and mode 0600.
type Options struct {
	Priorities   int          // priority levels, 1..64; default 1
	LaneCapacity int          // bytes per lane, a power of two; default 1 MiB
	RecordLimit  int          // largest record in a lane; default LaneCapacity/8
	MaxMessage   int          // largest message; default 16 MiB
	Producers    ProducerMode // default MultiProducer
	FailFast     bool         // a full lane fails Send with ErrFull instead of blocking
	Wake         WakeMode     // default DefaultWake
	Mode         os.FileMode  // permission bits of the segment (and semaphore set); default 0600
	PeerSlots    int          // peers that may be attached at once; default 64
	Dir          string       // default $SHMBUS_DIR or /dev/shm

	// Subscriptions makes a fan-out bus with room for that many
	// subscriptions (1..64): every message goes to every subscription (see
	// Bus.Subscribe), and the bus has no queue consumer. 0, the default, is
	// a queue bus.
	Subscriptions int

	// Memfd makes the bus an anonymous memfd (Linux) instead of a file in
	// Dir: it has no name in any directory, is sealed so that its size can
	// never change, and is reached only through its descriptor (Bus.File),
	// handed to other processes by inheritance or over a UNIX socket and
	// attached with OpenFile. It lives while some process holds the
	// descriptor or a mapping. Its consumer reassembles large messages in
	// memfds as well, so a consumer killed in the middle of one loses that
	// message (file buses keep it for the next consumer).
	Memfd bool

	// startPosition sets the lanes' initial positions (tests of wrap-around).
	startPosition uint64
}

// OpenOptions configure Open.
type OpenOptions struct {
	Dir  string        // default $SHMBUS_DIR or /dev/shm
	Wait time.Duration // how long to wait for a creator to finish; default 1s
}

// Bus is a process's attachment to a bus. It is safe for concurrent use;
// producers and consumers made from it are not (make one per goroutine).
type Bus struct {
	name string
	m    *segment.Mapping
	seg  []byte
	hdr  layout.Header
	g    layout.Geometry
	sems *sem.Set

	lanes  []*ring.Lane
	data   *ring.Doorbell
	peers  *peerTable
	mu     sync.Mutex // guards producers, consumer and gates
	closed atomic.Bool

	producers map[*Producer]struct{} // open producers of this process
	consumer  *Consumer              // the open consumer of this process, if any
	gates     map[*gate]struct{}     // the handles' call gates (gate.go)

	subs          *ring.SubTable             // fan-out buses: the subscription table; nil for a queue
	subscriptions map[*Subscription]struct{} // open subscriptions of this process
	fan           fanState

	// calls counts the calls using the mapping other than those of a
	// Producer or Consumer (which have gates of their own, gate.go), plus
	// closingBit once Close has begun; the last call to leave after that
	// closes drained.
	calls     atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once

	created bool

	errEmpty, errFull error // the wrapped ErrEmpty and ErrFull, made once
}

func (o *Options) config() (layout.Config, error) {
	var c layout.Config
	if o == nil {
		o = &Options{}
	}
	c.Lanes = o.Priorities
	if c.Lanes == 0 {
		c.Lanes = 1
	}
	c.LaneCapacity = o.LaneCapacity
	if c.LaneCapacity == 0 {
		c.LaneCapacity = DefaultLaneCapacity
	}
	c.RecordLimit = o.RecordLimit
	c.Subscriptions = o.Subscriptions
	c.PeerSlots = o.PeerSlots
	if c.PeerSlots == 0 {
		c.PeerSlots = DefaultPeerSlots
	}
	c.MaxMessage = uint64(o.MaxMessage)
	if o.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if o.MaxMessage < 0 {
		return c, fmt.Errorf("%w: max message %d", ErrConfig, o.MaxMessage)
	}
	if o.Producers == MultiProducer {
		c.Flags |= layout.FlagMultiProducer
	}
	if o.FailFast {
		c.Flags |= layout.FlagFailFast
	}
	c.WakeMode = layout.WakeMode(o.Wake)
	if c.WakeMode == 0 {
		c.WakeMode = layout.WakeMode(DefaultWake)
	}
	if err := checkWake(c.WakeMode); err != nil {
		return c, err
	}
	return c.Normalize()
}

// Create makes a new bus called name and attaches to it. It fails with
// ErrExist if the bus exists, and leaves nothing behind if it fails.
func Create(name string, opts *Options) (*Bus, error) {
	return CreateContext(context.Background(), name, opts)
}

// CreateContext is Create that gives up when ctx is done while it reserves
// and prefaults the segment's pages (which for a bus of gigabytes takes
// seconds): the error then wraps ctx.Err(), and nothing is left behind. A
// memfd bus (Options.Memfd) is made without looking at ctx.
func CreateContext(ctx context.Context, name string, opts *Options) (*Bus, error) {
	b, err := create(ctx, name, opts)
	if err != nil {
		return nil, &Error{Op: "create", Kind: "bus", Name: name, Err: err}
	}
	return b, nil
}

// SegmentSize is the size in bytes of the segment Create would make with
// opts: every page of it is reserved up front (priorities × lane capacity,
// plus headers, peer slots and control blocks).
func SegmentSize(opts *Options) (int64, error) {
	cfg, err := opts.config()
	if err != nil {
		return 0, err
	}
	g, err := layout.Plan(cfg)
	if err != nil {
		return 0, err
	}
	return int64(g.TotalSize), nil
}

// CheckRoom fails with an error wrapping ErrNoSpace when the segment of a
// bus made with opts is larger than what its directory can take now: the
// file system's free space and, on tmpfs (the default /dev/shm), the
// memory available, since a tmpfs file that fits the file system's limit
// can still push the machine into swap or the OOM killer. Create itself
// does not check (it fails only when the file system refuses); callers
// that take sizes from people should. It returns the segment's size.
func CheckRoom(opts *Options) (int64, error) {
	size, err := SegmentSize(opts)
	if err != nil {
		return 0, err
	}
	dir := ""
	if opts != nil {
		dir = opts.Dir
	}
	room, what, err := segment.Room(dir)
	if err != nil {
		return size, err
	}
	if uint64(size) > room {
		if dir == "" {
			dir = segment.Dir()
		}
		return size, &NoRoomError{Size: uint64(size), Room: room, What: what, Dir: dir}
	}
	return size, nil
}

// NoRoomError is CheckRoom's refusal; it wraps ErrNoSpace.
type NoRoomError struct {
	Size uint64 // bytes the segment needs
	Room uint64 // bytes there are
	What string // what Room is: "free space" or "available memory"
	Dir  string
}

func (e *NoRoomError) Error() string {
	return fmt.Sprintf("%v: the segment needs %d bytes, %s has %d bytes of %s", ErrNoSpace, e.Size, e.Dir, e.Room, e.What)
}

func (e *NoRoomError) Unwrap() error { return ErrNoSpace }

// checkHostAndName is what every create and open checks first: a
// little-endian host (the formats are little-endian, read in place) and a
// valid name.
func checkHostAndName(name string) error {
	if !layout.HostLittleEndian() {
		return fmt.Errorf("%w: big-endian host", errors.ErrUnsupported)
	}
	return segment.ValidateName(name)
}

// createMapping makes the segment of a new bus or board: the file at path
// with exactly mode, or, with memfd, a sealed memfd called name (given
// mode too). It returns the path to remove if a later step fails ("" for
// a memfd, which goes with its last descriptor).
func createMapping(ctx context.Context, path, name string, memfd bool, size int64, mode os.FileMode) (*segment.Mapping, string, error) {
	if !memfd {
		m, err := segment.CreateContext(ctx, path, size, mode)
		return m, path, err
	}
	m, err := segment.CreateMemfd(name, size, true)
	if err != nil {
		return nil, "", err
	}
	if err := m.File().Chmod(mode); err != nil {
		m.Close()
		return nil, "", err
	}
	return m, "", nil
}

func create(ctx context.Context, name string, opts *Options) (_ *Bus, err error) {
	if err := checkHostAndName(name); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &Options{}
	}
	cfg, err := opts.config()
	if err != nil {
		return nil, err
	}
	g, err := layout.Plan(cfg)
	if err != nil {
		return nil, err
	}
	mode := opts.Mode.Perm()
	if mode == 0 {
		mode = DefaultMode
	}
	m, path, err := createMapping(ctx, segment.Path(opts.Dir, name), name, opts.Memfd, int64(g.TotalSize), mode)
	if err != nil {
		return nil, err
	}
	h := layout.NewHeader(g)
	self := selfIdentity()
	h.CreatedNano = time.Now().UnixNano()
	h.CreatorPID = uint32(self.PID)
	h.CreatorStart = self.Start
	var set *sem.Set
	if cfg.WakeMode == layout.WakeSem {
		set, h.SemCookie, err = createSems(m.File(), len(g.Lanes), mode)
		if err != nil {
			m.Close()
			if path != "" {
				segment.Remove(path)
			}
			return nil, err
		}
		h.SemID = int32(set.ID())
	}
	seg := m.Bytes()
	if err := segment.Guard(func() error {
		h.Encode(seg)
		for i := range g.Lanes {
			ring.InitLane(seg, &g, i, opts.startPosition)
		}
		// Two-phase init: everything above is visible before the ready word.
		layout.Word32(seg, layout.OffReady).Store(layout.ReadyValue)
		return nil
	}); err != nil {
		m.Close()
		if path != "" {
			segment.Remove(path)
		}
		if set != nil {
			set.Remove()
		}
		return nil, err
	}
	h.Ready = layout.ReadyValue
	b := attach(name, m, h, g, set)
	b.created = true
	return b, nil
}

// Open attaches to the existing bus called name. The header is validated
// against the file's real size before anything in it is used.
func Open(name string, opts *OpenOptions) (*Bus, error) {
	b, err := open(name, opts)
	if err != nil {
		return nil, opError("open", "bus", name, err)
	}
	return b, nil
}

func open(name string, opts *OpenOptions) (*Bus, error) {
	if err := checkHostAndName(name); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	m, h, g, err := segment.Open(segment.Path(opts.Dir, name), opts.Wait)
	if err != nil {
		return nil, err
	}
	return attachMapping(name, m, h, g)
}

// OpenFile attaches to the bus whose segment is open in f: a descriptor
// inherited, or received over a UNIX socket (from the daemon, for
// instance), of a memfd bus or of a bus file. name is the bus's name, for
// errors and Name. The header is validated against the file's real size as
// Open does. f is not kept (the bus holds its own duplicate); close it when
// convenient. opts.Dir is ignored.
func OpenFile(name string, f *os.File, opts *OpenOptions) (*Bus, error) {
	b, err := openFile(name, f, opts)
	if err != nil {
		return nil, opError("open", "bus", name, err)
	}
	return b, nil
}

func openFile(name string, f *os.File, opts *OpenOptions) (*Bus, error) {
	if err := checkHostAndName(name); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	m, h, g, err := segment.OpenFD(f, "fd:"+segment.Prefix+name, opts.Wait)
	if err != nil {
		return nil, err
	}
	return attachMapping(name, m, h, g)
}

func attachMapping(name string, m *segment.Mapping, h layout.Header, g layout.Geometry) (*Bus, error) {
	var err error
	if err := checkWake(h.WakeMode); err != nil {
		m.Close()
		return nil, err
	}
	var set *sem.Set
	if h.WakeMode == layout.WakeSem {
		set, err = attachSems(int(h.SemID), len(g.Lanes), h.SemCookie)
		if err != nil {
			m.Close()
			return nil, err
		}
	}
	return attach(name, m, h, g, set), nil
}

func attach(name string, m *segment.Mapping, h layout.Header, g layout.Geometry, set *sem.Set) *Bus {
	seg := m.Bytes()
	b := &Bus{name: name, m: m, seg: seg, hdr: h, g: g, sems: set, drained: make(chan struct{}),
		producers: map[*Producer]struct{}{}, gates: map[*gate]struct{}{},
		errEmpty: busError(name, fmt.Errorf("receive: %w", ErrEmpty)),
		errFull:  busError(name, fmt.Errorf("send: %w", ErrFull))}
	b.data = ring.NewDoorbell(seg, layout.OffDataSeq, b.sleeper(0),
		layout.Word64(seg, layout.OffConsumerSleeps), layout.Word64(seg, layout.OffConsumerWakes))
	for i := range g.Lanes {
		b.lanes = append(b.lanes, ring.NewLane(seg, &b.g, i, b.sleeper(1+i)))
	}
	b.peers = newPeerTable(seg, &b.g)
	if g.Subscriptions > 0 {
		b.attachFanOut()
	}
	return b
}

// Name is the bus's name.
func (b *Bus) Name() string { return b.name }

// Path is the segment file's path; for a bus without one (a memfd bus, or
// one attached with OpenFile) it is a label: "memfd:shmbus.NAME" or
// "fd:shmbus.NAME".
func (b *Bus) Path() string { return b.m.Path() }

// File is the open segment file: to pass its descriptor to another process
// (see OpenFile), or to read its owner and mode. It stays owned by the bus
// and is closed by Close; do not close it.
func (b *Bus) File() *os.File { return b.m.File() }

// Anonymous says whether the bus has no file in a directory: a memfd bus,
// or one attached with OpenFile.
func (b *Bus) Anonymous() bool { return b.m.Anonymous() }

// Priorities is the number of priority levels (0 is the least urgent).
func (b *Bus) Priorities() int { return len(b.lanes) }

// MaxMessage is the largest message the bus accepts.
func (b *Bus) MaxMessage() int { return int(b.hdr.MaxMessage) }

// MaxRecordPayload is the largest message that fits in one record.
func (b *Bus) MaxRecordPayload() int { return b.lanes[0].MaxPayload() }

// WakeMode is how the bus's sleepers are woken.
func (b *Bus) WakeMode() WakeMode { return WakeMode(b.hdr.WakeMode) }

const closingBit = 1 << 62

// enter registers a call that uses the mapping; Close waits for it to exit
// before unmapping. It fails once Close has begun.
func (b *Bus) enter() error {
	if b.calls.Add(1)&closingBit != 0 {
		b.exit()
		return b.errClosed()
	}
	return nil
}

func (b *Bus) exit() {
	if b.calls.Add(-1) == closingBit {
		b.drainOnce.Do(func() { close(b.drained) })
	}
}

func (b *Bus) errClosed() error { return busError(b.name, ErrClosed) }

// Close detaches from the bus: every blocked call of this process returns
// ErrClosed, the roles and peer slots this process holds are released, and
// the segment is unmapped. The bus itself stays (see Remove).
func (b *Bus) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if b.calls.Add(closingBit) == closingBit {
		b.drainOnce.Do(func() { close(b.drained) })
	}
	b.kickAll()
	<-b.drained
	b.waitGates()
	// No call is running now. Reservations a producer has not committed
	// become padding: its slot is freed below, and a free slot's claim
	// would never be recovered.
	err := segment.Guard(func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		for p := range b.producers {
			p.abandon()
		}
		if b.consumer != nil {
			b.consumer.abandon()
		}
		for s := range b.subscriptions {
			s.abandon()
		}
		b.peers.releaseAll()
		return nil
	})
	return errors.Join(err, b.m.Close())
}

// kickAll wakes every sleeper on the bus so that this process's sleepers
// see that it is closing (sleepers of other processes re-check and sleep
// again).
func (b *Bus) kickAll() {
	segment.Guard(func() error {
		b.data.Kick()
		for _, l := range b.lanes {
			l.Space().Kick()
		}
		return nil
	})
}

// Remove closes b and deletes the bus: the segment file and, in sem mode,
// its semaphore set. Other attached processes keep their mapping until
// they close it, but their sleepers are woken with errors in sem mode.
func (b *Bus) Remove() error {
	path, set, anon := b.m.Path(), b.sems, b.m.Anonymous()
	err := b.Close()
	if set != nil {
		err = errors.Join(err, set.Remove())
	}
	if anon {
		return err // a memfd goes with its last descriptor and mapping
	}
	removeAsmFiles(path)
	return errors.Join(err, segment.Remove(path))
}

// Remove deletes the bus called name in dir ("" for the default): its
// segment file and, in sem mode, its semaphore set. A segment too damaged to
// read (truncated, a header overwritten) is removed all the same, and its
// set is still found: by the key derived from the file's device and inode
// (see createSems), and by the id and cookie at their places in the header,
// each checked with the kernel (cookie and creator), so that an unrelated
// set is never removed. A set it finds and cannot prove to be the bus's, or
// cannot remove, is left, and the error names it with the command that
// removes it; the segment file is removed even then.
func Remove(dir, name string) error {
	if err := segment.ValidateName(name); err != nil {
		return opError("remove", "bus", name, err)
	}
	path := segment.Path(dir, name)
	semErr := removeSems(path)
	removeAsmFiles(path)
	if err := segment.Remove(path); err != nil {
		return opError("remove", "bus", name, errors.Join(err, semErr))
	}
	if semErr != nil {
		return &Error{Op: "remove", Kind: "bus", Name: name, Err: semErr}
	}
	return nil
}

// List returns the names of the buses in dir ("" for the default).
func List(dir string) ([]string, error) {
	if dir == "" {
		dir = segment.Dir()
	}
	return segment.List(dir)
}
