//go:build linux

package cclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/daemon"
)

// The C client through the daemon (shmbus_daemon_open, shmbus-c's
// daemon:SOCKET:NAME): a daemon server of internal/daemon runs in this
// process on a temporary socket, with its buses in a temporary directory;
// C processes get their descriptors from it, Go peers from the same
// daemon through daemon.Client.

type testDaemon struct {
	socket, dir string
	cancel      context.CancelFunc
	done        chan error
}

// startDaemon serves the daemon protocol on DIR/shmbus.sock (the name the
// default socket rule gives under XDG_RUNTIME_DIR=DIR), buses in DIR/buses.
// Directories and socket are open to every user, for the test that runs
// the C tool as another one.
func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	base, err := os.MkdirTemp("", "shmbus-cd-") // short: sun_path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	d := &testDaemon{socket: filepath.Join(base, "shmbus.sock"), dir: filepath.Join(base, "buses"), done: make(chan error, 1)}
	if err := os.Mkdir(d.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d.socket, 0o666)
	srv := daemon.New(daemon.Config{Dir: d.dir, PollInterval: 20 * time.Millisecond, Version: "cclient-test"})
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		d.cancel()
		select {
		case err := <-d.done:
			if err != nil {
				t.Errorf("daemon: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("daemon did not stop")
		}
		if left, _ := filepath.Glob(filepath.Join(d.dir, "*")); len(left) > 0 {
			t.Errorf("files left in the daemon's directory: %v", left)
		}
		os.RemoveAll(base)
	})
	return d
}

func (d *testDaemon) dial(t *testing.T) *daemon.Client {
	t.Helper()
	c, err := daemon.Dial(d.socket, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// target is the shmbus-c BUS argument for bus name through d.
func (d *testDaemon) target(name string) string { return "daemon:" + d.socket + ":" + name }

// create makes a bus through the daemon (removed at cleanup, through the
// daemon) and attaches this process to it with the descriptor the daemon
// passed.
func (d *testDaemon) create(t *testing.T, c *daemon.Client, m daemon.Create) *shmbus.Bus {
	t.Helper()
	m.Flags |= daemon.FlagWantFD
	info, f, err := c.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Remove(m.Name); err != nil {
			t.Errorf("remove %s: %v", m.Name, err)
		}
	})
	if f == nil {
		t.Fatalf("create %s: no descriptor (%+v)", m.Name, info)
	}
	bus, err := shmbus.OpenFile(m.Name, f, nil)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	if bus.WakeMode() == shmbus.WakeSem {
		semMu.Lock()
		semIDs = append(semIDs, bus.Config().SemID)
		semMu.Unlock()
	}
	return bus
}

// waitEvent returns the next event of c for pid.
func waitEvent(t *testing.T, c *daemon.Client, pid int) daemon.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, err := c.NextEvent(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for an event of pid %d: %v", pid, err)
		}
		if ev.PID == uint32(pid) {
			return ev
		}
	}
}

// TestDaemonCProducerGoConsumer: a C producer whose only way to the bus is
// the descriptor the daemon passed it sends checksummed messages, small and
// fragmented, to a Go consumer attached by the descriptor the daemon passed
// this process: a sealed memfd bus (reachable only so) and a file bus in
// sem wake mode. The daemon sees the producer join and leave (its lease
// ended cleanly, no CRASH).
func TestDaemonCProducerGoConsumer(t *testing.T) {
	needC(t)
	d := startDaemon(t)
	g := gen{Min: tmHeader, Max: 3000, BigEvery: 150, BigSize: 200<<10 + 3, Prio: "cycle"}
	const n = 600
	for _, tc := range []struct {
		name string
		m    daemon.Create
		kind string
	}{
		{"memfd", daemon.Create{Flags: daemon.FlagMemfd, Wake: 1}, "memfd"},
		{"file-sem", daemon.Create{Wake: 2}, "file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, sub := d.dial(t), d.dial(t)
			m := tc.m
			m.Name, m.Priorities, m.LaneCapacity, m.MaxMessage, m.Mode = "cd-"+tc.name, 3, 64<<10, 1<<20, 0o600
			bus := d.create(t, a, m)
			if err := sub.Subscribe(m.Name); err != nil {
				t.Fatal(err)
			}
			out := startC(t, cSan, "info", d.target(m.Name)).wait(t, 10*time.Second)
			if !strings.Contains(out, "priorities=3 capacity=65536") || !strings.Contains(out, "daemon kind="+tc.kind+" size=") {
				t.Fatalf("info through the daemon: %s", out)
			}
			prod := startC(t, cSan, append([]string{"produce", d.target(m.Name), "--id", "5", "--count", strconv.Itoa(n),
				"--pause-every", "200", "--pause-us", "20000"}, g.args()...)...)
			ck := newChecker()
			if err := goConsume(bus, n, ck, 20*time.Second); err != nil {
				t.Fatalf("%v\nC producer: %s", err, prod.errb.String())
			}
			prod.wait(t, 10*time.Second)
			if err := ck.complete(5, n); err != nil {
				t.Fatal(err)
			}
			checkStats(t, bus, n)
			pid := prod.Process.Pid
			if ev := waitEvent(t, sub, pid); ev.Kind != daemon.EventJoin || ev.Bus != m.Name {
				t.Errorf("first event of the C producer: %+v, want JOIN", ev)
			}
			if ev := waitEvent(t, sub, pid); ev.Kind != daemon.EventLeave || ev.Role != 1 {
				t.Errorf("last event of the C producer: %+v, want LEAVE as producer", ev)
			}
		})
	}
}

// TestDaemonCProducerCrash: a C producer holding a descriptor from the
// daemon is stopped holding a claim (tail moved and unconfirmed, or
// confirmed) on a memfd bus and SIGKILLed. A subscriber sees its JOIN then
// its CRASH, the daemon releases its slot, and the bus flows again: the
// other C producer, blocked behind the claim on a full lane, finishes, and
// every message either published arrives once.
func TestDaemonCProducerCrash(t *testing.T) {
	needC(t)
	d := startDaemon(t)
	g := gen{Min: tmHeader, Max: 500, Prio: "0"}
	const n, stopAt = 1500, 400
	for _, stage := range []string{"claim", "tail"} {
		t.Run(stage, func(t *testing.T) {
			a, sub := d.dial(t), d.dial(t)
			name := "crash-" + stage
			bus := d.create(t, a, daemon.Create{Name: name, Priorities: 1, LaneCapacity: 32 << 10, Flags: daemon.FlagMemfd})
			if err := sub.Subscribe(name); err != nil {
				t.Fatal(err)
			}
			ck := newChecker()
			consErr := make(chan error, 1)
			go func() { consErr <- goConsume(bus, stopAt+n, ck, 20*time.Second) }()
			victim := startC(t, cBin, append([]string{"produce", d.target(name), "--id", "1", "--count", strconv.Itoa(n),
				"--stop-at", strconv.Itoa(stopAt), "--stop-stage", stage}, g.args()...)...)
			join := waitEvent(t, sub, victim.Process.Pid)
			if join.Kind != daemon.EventJoin {
				t.Fatalf("first event of the victim: %+v, want JOIN", join)
			}
			// 1500 messages of ~260 bytes do not fit a 32 KiB lane: the
			// other producer blocks behind the claim until it is recovered.
			other := startC(t, cBin, append([]string{"produce", d.target(name), "--id", "2", "--count", strconv.Itoa(n),
				"--pause-every", "100", "--pause-us", "500"}, g.args()...)...)
			stopAndKill(t, victim)
			crash := waitEvent(t, sub, victim.Process.Pid)
			if crash.Kind != daemon.EventCrash || crash.Slot != join.Slot || crash.Role != 1 {
				t.Errorf("event after SIGKILL: %+v, want CRASH of the producer in slot %d", crash, join.Slot)
			}
			if err := <-consErr; err != nil {
				t.Fatalf("%v\nother producer: %s", err, other.errb.String())
			}
			other.wait(t, 10*time.Second)
			if err := ck.complete(1, stopAt); err != nil {
				t.Error(err)
			}
			if err := ck.complete(2, n); err != nil {
				t.Error(err)
			}
			// Nothing more (no message twice, none from the dead claim).
			c, err := bus.NewConsumer()
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.TryReceive(make([]byte, 1<<16)); !errors.Is(err, shmbus.ErrEmpty) {
				t.Errorf("after every message: %v, want ErrEmpty", err)
			}
			c.Close()
			st, err := bus.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.Lanes[0].Recovered != 1 {
				t.Errorf("%d claims recovered, want 1", st.Lanes[0].Recovered)
			}
			// The daemon released the dead producer's slot.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				st, err := bus.Stats()
				if err != nil {
					t.Fatal(err)
				}
				held := false
				for _, p := range st.Peers {
					held = held || p.PID == victim.Process.Pid
				}
				if !held {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the dead producer's slot is still held: %+v", st.Peers)
				}
			}
		})
	}
}

// runC runs bin with exactly env and returns its output and exit code.
func runC(t *testing.T, env []string, cred *syscall.Credential, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v: still running after 30 s", args)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return o.String(), e.String(), 0
}

// baseEnv is the environment without the variables of the socket rule.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHMBUS_SOCKET=") && !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestDaemonOpenRefused: the daemon's refusals reach the C caller as the
// matching codes with the daemon's message (NOT_FOUND -> "no such bus",
// PERMISSION -> "permission denied"), OPEN without a descriptor works, and
// the socket is found by the default rule.
func TestDaemonOpenRefused(t *testing.T) {
	needC(t)
	d := startDaemon(t)
	a := d.dial(t)
	d.create(t, a, daemon.Create{Name: "there", Priorities: 2, LaneCapacity: 64 << 10, Mode: 0o600})
	env := baseEnv()

	_, errOut, code := runC(t, env, nil, cSan, "info", d.target("missing"))
	if code != 1 || !strings.Contains(errOut, `no such bus: daemon NOT_FOUND: `) || !strings.Contains(errOut, `"missing"`) {
		t.Errorf("OPEN of a missing bus: exit %d, stderr %q; want NOT_FOUND as \"no such bus\" with the daemon's message", code, errOut)
	}
	_, errOut, code = runC(t, env, nil, cSan, "info", d.target("bad..name"))
	if code != 2 || !strings.Contains(errOut, "bad bus name") { // a usage error, as for the shmbus command
		t.Errorf("bad name: exit %d, stderr %q", code, errOut)
	}
	out, errOut, code := runC(t, env, nil, cSan, "daemon-open", d.socket, "there", "--no-fd")
	if code != 0 || !strings.Contains(out, "kind=file priorities=2 multi=1 wake=futex") || !strings.Contains(out, "fd=no") {
		t.Errorf("OPEN without a descriptor: exit %d, %q %q", code, out, errOut)
	}
	// $SHMBUS_SOCKET, for daemon:NAME.
	out, errOut, code = runC(t, append(env, "SHMBUS_SOCKET="+d.socket), nil, cSan, "info", "daemon:there")
	if code != 0 || !strings.Contains(out, "priorities=2") {
		t.Errorf("daemon:NAME with $SHMBUS_SOCKET: exit %d, %q %q", code, out, errOut)
	}
	// No daemon there.
	_, errOut, code = runC(t, env, nil, cSan, "info", "daemon:"+d.dir+"/none.sock:there")
	if code != 1 || !strings.Contains(errOut, "system call failed: connect to the daemon at "+d.dir+"/none.sock") {
		t.Errorf("no daemon: exit %d, %q", code, errOut)
	}
	if os.Geteuid() != 0 {
		return
	}
	// Root ignores $XDG_RUNTIME_DIR: the system socket.
	xdg := append(env, "XDG_RUNTIME_DIR="+filepath.Dir(d.socket))
	if _, err := os.Stat("/run/shmbus/shmbus.sock"); errors.Is(err, os.ErrNotExist) {
		_, errOut, code = runC(t, xdg, nil, cSan, "daemon-open", "", "there", "--no-fd")
		if code != 1 || !strings.Contains(errOut, "/run/shmbus/shmbus.sock") {
			t.Errorf("root with $XDG_RUNTIME_DIR: exit %d, %q; want the system socket", code, errOut)
		}
	}
	// Another user finds the daemon under $XDG_RUNTIME_DIR, and may not
	// open a 0600 bus of root's.
	exe := filepath.Join(filepath.Dir(d.socket), "shmbus-c")
	data, err := os.ReadFile(cBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(exe)
	_, errOut, code = runC(t, xdg, &syscall.Credential{Uid: 65534, Gid: 65534}, exe, "info", "daemon:there")
	if code != 1 || !strings.Contains(errOut, "permission denied: daemon PERMISSION: ") {
		t.Errorf("uid 65534 opening a 0600 bus: exit %d, %q; want PERMISSION as \"permission denied\"", code, errOut)
	}
}

// ---- a fake daemon that answers badly ----

type wenc struct{ b []byte }

func (e *wenc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *wenc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *wenc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *wenc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *wenc) str(s string) { e.u16(uint16(len(s))); e.b = append(e.b, s...) }

func welcomePayload(version uint16) []byte {
	var e wenc
	e.u16(version)
	e.u32(64 << 20)
	e.str("fake")
	e.u32(1)
	e.u32(0)
	e.u32(0)
	return e.b
}

func busPayload(name string, kind, fd uint8, size uint64) []byte {
	var e wenc
	e.str(name)
	e.u8(kind)
	e.u8(0)  // MPSC
	e.u8(1)  // futex
	e.u8(fd) // a descriptor comes with it
	e.u16(2)
	e.u16(0o600)
	e.u32(0)
	e.u32(0)
	e.u64(size)
	e.u64(1 << 20)
	e.u32(1000)
	return e.b
}

func errorPayload(code uint16, msg string) []byte {
	var e wenc
	e.u16(code)
	e.str(msg)
	return e.b
}

func rawFrame(length uint32, typ, flags uint16, id uint32, payload []byte) []byte {
	var e wenc
	e.u32(length)
	e.u16(typ)
	e.u16(flags)
	e.u32(id)
	return append(e.b, payload...)
}

// fakeConn is one connection to the fake daemon.
type fakeConn struct {
	t *testing.T
	c *net.UnixConn
}

// request reads one frame and returns its type and id.
func (f *fakeConn) request() (uint16, uint32, bool) {
	var h [12]byte
	f.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(f.c, h[:]); err != nil {
		f.t.Errorf("fake daemon: reading a request: %v", err)
		return 0, 0, false
	}
	n := binary.LittleEndian.Uint32(h[:]) - 8
	if n > 1<<16 {
		f.t.Errorf("fake daemon: request of %d bytes", n)
		return 0, 0, false
	}
	if _, err := io.ReadFull(f.c, make([]byte, n)); err != nil {
		f.t.Errorf("fake daemon: reading a request: %v", err)
		return 0, 0, false
	}
	return binary.LittleEndian.Uint16(h[4:]), binary.LittleEndian.Uint32(h[8:]), true
}

// send writes b, with files as SCM_RIGHTS on its first byte.
func (f *fakeConn) send(b []byte, files ...*os.File) {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, fl := range files {
			fds[i] = int(fl.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := f.c.WriteMsgUnix(b, oob, nil); err != nil {
		f.t.Errorf("fake daemon: write: %v", err)
	}
}

// hangup closes the connection.
func (f *fakeConn) hangup() { f.c.Close() }

// hello reads HELLO and answers a good WELCOME.
func (f *fakeConn) hello() bool {
	typ, id, ok := f.request()
	if !ok || typ != daemon.TypeHello {
		f.t.Errorf("fake daemon: first request %#x, want HELLO", typ)
		return false
	}
	f.send(daemon.AppendFrame(nil, daemon.TypeWelcome, id, welcomePayload(1)))
	return true
}

// open reads OPEN and returns its id.
func (f *fakeConn) open() (uint32, bool) {
	typ, id, ok := f.request()
	if ok && typ != daemon.TypeOpen {
		f.t.Errorf("fake daemon: second request %#x, want OPEN", typ)
		return 0, false
	}
	return id, ok
}

// TestDaemonMalformedReplies: a fake daemon answers HELLO or OPEN with
// malformed, inconsistent or hostile replies; the C client (the
// ASan/UBSan build) fails each with its own error, never a crash, and
// accepts what a later protocol version may add (events before the reply,
// fields after the known ones).
func TestDaemonMalformedReplies(t *testing.T) {
	needC(t)
	// A real segment, to pass as the descriptor where one is wanted.
	bus, _ := newBus(t, shmbus.Options{Priorities: 2, LaneCapacity: 64 << 10, MaxMessage: 1 << 20})
	seg, err := os.OpenFile(bus.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	fi, _ := seg.Stat()
	size := uint64(fi.Size())
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()
	const name = "fake"

	welcome := func(f *fakeConn, b []byte) { // HELLO answered with b
		if _, _, ok := f.request(); ok {
			f.send(b)
		}
	}
	openReply := func(f *fakeConn, files []*os.File, mk func(id uint32) []byte) {
		if !f.hello() {
			return
		}
		if id, ok := f.open(); ok {
			f.send(mk(id), files...)
		}
	}
	bus2 := func(payload []byte) func(uint32) []byte {
		return func(id uint32) []byte { return daemon.AppendFrame(nil, daemon.TypeBus, id, payload) }
	}
	event := daemon.AppendFrame(nil, daemon.TypeEvent, 0, []byte{1, 0, 0}) // unknown-looking event: skipped unread

	cases := []struct {
		name  string
		serve func(f *fakeConn)
		args  []string // after "daemon-open SOCKET"; default NAME
		want  string   // in stderr; "" = success, then in stdout
	}{
		{"huge length", func(f *fakeConn) { welcome(f, rawFrame(0xFFFFFFFF, daemon.TypeWelcome, 0, 1, nil)) }, nil,
			"daemon protocol error: reply frame length 4294967295 outside 8..1048584"},
		{"length below 8", func(f *fakeConn) { welcome(f, rawFrame(3, daemon.TypeWelcome, 0, 1, nil)) }, nil,
			"reply frame length 3 outside"},
		{"flags set", func(f *fakeConn) { welcome(f, rawFrame(8+24, daemon.TypeWelcome, 1, 1, welcomePayload(1))) }, nil,
			"reply frame with flags 0x1"},
		{"welcome cut short", func(f *fakeConn) {
			p := welcomePayload(1)[:6]
			p = append(p, 0xF4, 0x01, 'a', 'b') // str of 500 bytes, 2 present
			welcome(f, daemon.AppendFrame(nil, daemon.TypeWelcome, 1, p))
		}, nil, "malformed WELCOME (10 bytes)"},
		{"welcome version 2", func(f *fakeConn) { welcome(f, daemon.AppendFrame(nil, daemon.TypeWelcome, 1, welcomePayload(2))) }, nil,
			"daemon protocol error: the daemon answered HELLO for protocol version 1 with version 2"},
		{"descriptor with welcome", func(f *fakeConn) {
			if _, _, ok := f.request(); ok {
				f.send(daemon.AppendFrame(nil, daemon.TypeWelcome, 1, welcomePayload(1)), devnull)
			}
		}, nil, "a descriptor came with WELCOME"},
		{"no reply", func(f *fakeConn) { f.request(); f.hangup() }, nil, "the daemon closed the connection"},
		{"reply cut mid-frame", func(f *fakeConn) {
			welcome(f, rawFrame(8+100, daemon.TypeWelcome, 0, 1, make([]byte, 10)))
			f.hangup()
		}, nil,
			"the daemon closed the connection"},
		{"wrong id", func(f *fakeConn) { welcome(f, daemon.AppendFrame(nil, daemon.TypeWelcome, 7, welcomePayload(1))) }, nil,
			"reply to request 7 while waiting for 1"},
		{"wrong type", func(f *fakeConn) { welcome(f, daemon.AppendFrame(nil, daemon.TypeBus, 1, welcomePayload(1))) }, nil,
			"reply of type 0x8002 to request 1, want 0x8001"},
		{"error cut short", func(f *fakeConn) { welcome(f, daemon.AppendFrame(nil, daemon.TypeError, 1, []byte{6, 0, 9})) }, nil,
			"malformed ERROR reply (3 bytes)"},
		{"error unknown code", func(f *fakeConn) {
			welcome(f, daemon.AppendFrame(nil, daemon.TypeError, 1, errorPayload(999, "bad\x00\x1b\nthing")))
		}, nil, "daemon error: daemon code 999: bad???thing"},
		{"error on id 0", func(f *fakeConn) {
			welcome(f, daemon.AppendFrame(nil, daemon.TypeError, 0, errorPayload(18, "going away")))
		}, nil, "daemon error: daemon SHUTDOWN: going away"},
		{"busy", func(f *fakeConn) {
			openReply(f, nil, func(id uint32) []byte { return daemon.AppendFrame(nil, daemon.TypeError, id, errorPayload(11, "held")) })
		}, nil, "role held: daemon BUSY: held"},
		{"fd flag, no descriptor", func(f *fakeConn) { openReply(f, nil, bus2(busPayload(name, 1, 1, size))) }, nil,
			"BUS reply says fd=1, 0 descriptor(s) came, one asked for"},
		{"descriptor without the flag", func(f *fakeConn) { openReply(f, []*os.File{seg}, bus2(busPayload(name, 1, 0, size))) }, nil,
			"BUS reply says fd=0, 1 descriptor(s) came, one asked for"},
		{"descriptor not asked for", func(f *fakeConn) { openReply(f, []*os.File{seg}, bus2(busPayload(name, 1, 1, size))) },
			[]string{name, "--no-fd"}, "BUS reply says fd=1, 1 descriptor(s) came, none asked for"},
		{"two descriptors", func(f *fakeConn) { openReply(f, []*os.File{seg, devnull}, bus2(busPayload(name, 1, 1, size))) }, nil,
			"fd=1, 2 descriptor(s) came"},
		{"many descriptors", func(f *fakeConn) {
			fl := []*os.File{}
			for i := 0; i < 12; i++ {
				fl = append(fl, devnull)
			}
			openReply(f, fl, bus2(busPayload(name, 1, 1, size)))
		}, nil, "more than 8 descriptors came with one reply"},
		{"pipe", func(f *fakeConn) { openReply(f, []*os.File{pr}, bus2(busPayload(name, 1, 1, size))) }, nil,
			"the daemon's descriptor is not a regular file"},
		{"size differs", func(f *fakeConn) { openReply(f, []*os.File{seg}, bus2(busPayload(name, 2, 1, size+4096))) }, nil,
			fmt.Sprintf("the daemon's descriptor has %d bytes; the reply says a segment of %d", size, size+4096)},
		{"bus cut short", func(f *fakeConn) { openReply(f, []*os.File{seg}, bus2(busPayload(name, 1, 1, size)[:30])) }, nil,
			"malformed BUS reply (30 bytes)"},
		{"bus name runs past the end", func(f *fakeConn) {
			p := busPayload(name, 1, 1, size)
			p[0], p[1] = 0xFF, 0xFF
			openReply(f, []*os.File{seg}, bus2(p))
		}, nil, "malformed BUS reply"},
		{"other bus", func(f *fakeConn) { openReply(f, []*os.File{seg}, bus2(busPayload("other\x01", 1, 1, size))) }, nil,
			`BUS reply for bus "other?", asked for "fake"`},
		{"bad kind", func(f *fakeConn) { openReply(f, []*os.File{seg}, bus2(busPayload(name, 7, 1, size))) }, nil,
			"BUS reply: kind 7"},
		{"events and later fields", func(f *fakeConn) {
			if _, id, ok := f.request(); ok {
				f.send(append(append([]byte{}, event...), daemon.AppendFrame(nil, daemon.TypeWelcome, id, append(welcomePayload(1), 1, 2, 3))...))
			}
			if id, ok := f.open(); ok {
				f.send(event)
				f.send(daemon.AppendFrame(nil, daemon.TypeBus, id, append(busPayload(name, 2, 1, size), 9, 9, 9, 9)), seg)
			}
		}, nil, ""},
	}

	dir, err := os.MkdirTemp("", "shmbus-cf-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "fake.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	env := baseEnv()
	for _, tc := range cases {
		served := make(chan struct{})
		go func() {
			defer close(served)
			l.SetDeadline(time.Now().Add(20 * time.Second))
			c, err := l.AcceptUnix()
			if err != nil {
				t.Errorf("%s: accept: %v", tc.name, err)
				return
			}
			defer c.Close()
			tc.serve(&fakeConn{t: t, c: c})
			// Let the client read everything and hang up first.
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			io.Copy(io.Discard, c)
		}()
		args := tc.args
		if args == nil {
			args = []string{name}
		}
		out, errOut, code := runC(t, env, nil, cSan, append([]string{"daemon-open", sock}, args...)...)
		<-served
		switch {
		case strings.Contains(errOut, "Sanitizer") || strings.Contains(errOut, "runtime error"):
			t.Errorf("%s: the C client crashed:\n%s", tc.name, errOut)
		case tc.want == "" && (code != 0 || !strings.Contains(out, "kind=memfd priorities=2") || !strings.Contains(out, "fd=yes")):
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want success", tc.name, code, out, errOut)
		case tc.want != "" && (code != 1 || !strings.Contains(errOut, tc.want)):
			t.Errorf("%s: exit %d, stderr %q; want %q", tc.name, code, errOut, tc.want)
		}
	}
}
