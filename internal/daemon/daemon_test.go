//go:build linux

package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/failpoint"
)

func init() {
	roles["fd-producer"] = roleFDProducer
	roles["truncate-memfd"] = roleTruncateMemfd
	roles["other-user"] = roleOtherUser
}

// msg is message seq of producer k: k, seq, CRC-32 of the body, and a
// body whose size and bytes follow from (k, seq).
func msg(k, seq uint32, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(k), uint64(seq)))
	n := 12 + r.IntN(max(size-12, 0)+1)
	b := make([]byte, n)
	for i := 12; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	binary.LittleEndian.PutUint32(b[0:], k)
	binary.LittleEndian.PutUint32(b[4:], seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[12:]))
	return b
}

// checkMsg verifies a message made by msg and returns its producer and
// sequence number.
func checkMsg(b []byte) (k, seq uint32, err error) {
	if len(b) < 12 {
		return 0, 0, errors.New("message shorter than its header")
	}
	k, seq = binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:])
	if crc32.ChecksumIEEE(b[12:]) != binary.LittleEndian.Uint32(b[8:]) {
		return k, seq, errors.New("checksum mismatch")
	}
	return k, seq, nil
}

// roleFDProducer dials the daemon, opens DAEMON_BUS with its descriptor,
// maps it itself and sends DAEMON_N messages as producer DAEMON_K; with
// DAEMON_STOP_AT it stops for ever after claiming the space of that
// message, holding the claim (the test kills it there).
func roleFDProducer() error {
	c, err := Dial(os.Getenv("DAEMON_SOCKET"), "fd-producer")
	if err != nil {
		return err
	}
	name := os.Getenv("DAEMON_BUS")
	_, f, err := c.Open(name, true)
	if err != nil {
		return err
	}
	bus, err := shmbus.OpenFile(name, f, nil)
	f.Close()
	if err != nil {
		return err
	}
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	k, _ := strconv.Atoi(os.Getenv("DAEMON_K"))
	n, _ := strconv.Atoi(os.Getenv("DAEMON_N"))
	stopAt := -1
	if s := os.Getenv("DAEMON_STOP_AT"); s != "" {
		stopAt, _ = strconv.Atoi(s)
	}
	out := bufio.NewWriter(os.Stdout)
	for seq := 0; seq < n; seq++ {
		if seq == stopAt {
			failpoint.AfterClaim.Set(func() {
				out.WriteString("claimed\n")
				out.Flush()
				select {}
			})
		}
		if err := p.Send(context.Background(), msg(uint32(k), uint32(seq), 2000), 0); err != nil {
			return err
		}
	}
	out.WriteString("done\n")
	out.Flush()
	p.Close()
	return bus.Close()
}

// roleTruncateMemfd receives the descriptor of DAEMON_BUS and tries to
// shrink and grow it, printing what the kernel said.
func roleTruncateMemfd() error {
	c, err := Dial(os.Getenv("DAEMON_SOCKET"), "truncate")
	if err != nil {
		return err
	}
	_, f, err := c.Open(os.Getenv("DAEMON_BUS"), true)
	if err != nil {
		return err
	}
	name := func(err error) string {
		var e unix.Errno
		if errors.As(err, &e) {
			return unix.ErrnoName(e)
		}
		return "ok"
	}
	_, err = os.Stdout.WriteString(name(f.Truncate(4096)) + " " + name(f.Truncate(1<<30)) + "\n")
	return err
}

// roleOtherUser runs as another user: it tries OPEN (with and without a
// descriptor), SEND and RECV on DAEMON_BUS and prints each result's code.
func roleOtherUser() error {
	c, err := Dial(os.Getenv("DAEMON_SOCKET"), "other")
	if err != nil {
		return err
	}
	name := os.Getenv("DAEMON_BUS")
	code := func(err error) string {
		var de *Error
		if errors.As(err, &de) {
			return de.Code.String()
		}
		if err != nil {
			return err.Error()
		}
		return "OK"
	}
	_, _, e1 := c.Open(name, false)
	_, f, e2 := c.Open(name, true)
	if f != nil {
		f.Close()
	}
	e3 := c.Send(name, 0, []byte("x"), true, 0)
	_, _, e4 := c.Recv(name, true, 0)
	_, err = os.Stdout.WriteString(strings.Join([]string{code(e1), code(e2), code(e3), code(e4)}, " ") + "\n")
	return err
}

func code(err error) Code {
	var de *Error
	if errors.As(err, &de) {
		return de.Code
	}
	return 0
}

func TestSendReceiveThroughSocket(t *testing.T) {
	d := startDaemon(t)
	a, b := d.dial(t), d.dial(t)
	if a.Welcome.PID != uint32(os.Getpid()) || a.Welcome.UID != uint32(os.Getuid()) {
		t.Errorf("WELCOME says pid %d uid %d, want %d %d", a.Welcome.PID, a.Welcome.UID, os.Getpid(), os.Getuid())
	}
	info, f, err := a.Create(Create{Name: "relay", Priorities: 3})
	if err != nil || f != nil {
		t.Fatalf("create: %v, fd %v", err, f)
	}
	if info.Priorities != 3 || info.Kind != KindFile || info.Mode != 0o600 || info.MaxRecord == 0 {
		t.Errorf("bus info %+v", info)
	}
	defer a.Remove("relay")
	if _, _, err := b.Create(Create{Name: "relay"}); code(err) != CodeExists {
		t.Errorf("second create: %v, want EXISTS", err)
	}
	// Messages larger than a record (128 KiB here) travel as fragments.
	const n = 200
	sizes := []int{12, 100, 9000, 300 << 10}
	for i := 0; i < n; i++ {
		if err := a.Send("relay", i%3, msg(1, uint32(i), sizes[i%len(sizes)]), false, 5*time.Second); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		prio, got, err := b.Recv("relay", false, 5*time.Second)
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if k, seq, err := checkMsg(got); err != nil || k != 1 || seq != uint32(i) || prio != i%3 {
			t.Fatalf("message %d: producer %d seq %d prio %d: %v", i, k, seq, prio, err)
		}
	}
	// Priority order: fill, then drain.
	for i := 0; i < 6; i++ {
		if err := a.Send("relay", i%3, []byte{byte(i)}, true, 0); err != nil {
			t.Fatal(err)
		}
	}
	var order []byte
	for i := 0; i < 6; i++ {
		_, got, err := b.Recv("relay", true, 0)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, got...)
	}
	if want := []byte{2, 5, 1, 4, 0, 3}; !bytes.Equal(order, want) {
		t.Errorf("receive order %v, want %v", order, want)
	}
	if _, _, err := b.Recv("relay", true, 0); code(err) != CodeEmpty {
		t.Errorf("recv on an empty bus: %v, want EMPTY", err)
	}
	if _, _, err := b.Recv("relay", false, 30*time.Millisecond); code(err) != CodeTimeout {
		t.Errorf("recv with a timeout: %v, want TIMEOUT", err)
	}
	if _, _, err := a.Recv("relay", true, 0); code(err) != CodeBusy {
		t.Errorf("a second consumer: %v, want BUSY", err)
	}
	if err := a.Send("relay", 7, []byte("x"), true, 0); code(err) != CodeBadArgument {
		t.Errorf("priority out of range: %v, want BAD_ARGUMENT", err)
	}
	if _, _, err := a.Open("nosuch", false); code(err) != CodeNotFound {
		t.Errorf("open a missing bus: %v, want NOT_FOUND", err)
	}
	if _, _, err := a.Open("../etc", false); code(err) != CodeBadName {
		t.Errorf("open a bad name: %v, want BAD_NAME", err)
	}
	names, err := a.List()
	if err != nil || len(names) != 1 || names[0] != "relay" {
		t.Errorf("list: %v, %v", names, err)
	}
	js, err := a.Stat("relay")
	var doc map[string]any
	if err != nil || json.Unmarshal(js, &doc) != nil || doc["name"] != "relay" {
		t.Errorf("stat: %s, %v", js, err)
	}
	// Releasing the consumer lets another client take it.
	if err := b.Release("relay"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Recv("relay", true, 0); code(err) != CodeEmpty {
		t.Errorf("recv after the other client released: %v, want EMPTY", err)
	}
}

func TestMemfdDescriptor(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	info, f, err := a.Create(Create{Name: "mem", Flags: FlagMemfd | FlagWantFD, Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove("mem")
	if info.Kind != KindMemfd || f == nil {
		t.Fatalf("bus info %+v, descriptor %v", info, f)
	}
	if _, err := os.Stat(d.dir + "/shmbus.mem"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a memfd bus has a file: %v", err)
	}
	fi, _ := f.Stat()
	if uint64(fi.Size()) != info.Size {
		t.Errorf("descriptor size %d, reply says %d", fi.Size(), info.Size)
	}
	// A Go peer maps the received descriptor and sends; another client
	// receives through the socket.
	bus, err := shmbus.OpenFile("mem", f, nil)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		defer p.Close()
		for i := 0; i < 10; i++ {
			if err := p.Send(context.Background(), msg(2, uint32(i), 300<<10), 0); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := 0; i < 10; i++ {
		_, got, err := a.Recv("mem", false, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, seq, err := checkMsg(got); err != nil || seq != uint32(i) {
			t.Fatalf("message %d: seq %d, %v", i, seq, err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// A peer process that received the descriptor cannot resize it.
	cmd := child(t, "truncate-memfd", "DAEMON_SOCKET="+d.socket, "DAEMON_BUS=mem")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "EPERM EPERM\n" {
		t.Errorf("shrink, grow of the sealed memfd: %q, want EPERM EPERM", out)
	}
	names, _ := a.List()
	if len(names) != 1 || names[0] != "mem" {
		t.Errorf("list: %v, want the memfd bus", names)
	}
}

func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	d := startDaemon(t)
	a := d.dial(t)
	// The test binary, where another user may run it.
	exe := copyExecutable(t)
	for _, tc := range []struct {
		mode uint16
		want string
	}{
		{0o600, "PERMISSION PERMISSION PERMISSION PERMISSION"}, // nothing for others
		// BUSY is past the permission check: the test holds the consumer.
		{0o604, "OK PERMISSION PERMISSION BUSY"}, // read only
		{0o606, "OK OK OK BUSY"},                 // read and write
	} {
		name := "cred" + strconv.FormatUint(uint64(tc.mode), 8)
		if _, _, err := a.Create(Create{Name: name, Mode: tc.mode}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { shmbus.Remove(d.dir, name) })
		if _, _, err := a.Recv(name, true, 0); code(err) != CodeEmpty {
			t.Fatal(err)
		}
		cmd := child(t, "other-user", "DAEMON_SOCKET="+d.socket, "DAEMON_BUS="+name)
		cmd.Path, cmd.Args[0] = exe, exe
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mode %#o: client as uid 65534: %v", tc.mode, err)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("mode %#o: uid 65534 got open, open+fd, send, recv = %s; want %s", tc.mode, got, tc.want)
		}
		a.Release(name)
		if err := a.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLeaseEndsWithCrash(t *testing.T) {
	d := startDaemon(t)
	a, sub := d.dial(t), d.dial(t)
	if _, _, err := a.Create(Create{Name: "lease", LaneCapacity: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("lease")
	if err := sub.Subscribe("lease"); err != nil {
		t.Fatal(err)
	}
	// Producer 1 maps the bus and stops for ever holding a claim after 50
	// messages; producer 2 sends 300 through the socket meanwhile.
	cmd := child(t, "fd-producer", "DAEMON_SOCKET="+d.socket, "DAEMON_BUS=lease", "DAEMON_K=1", "DAEMON_N=100", "DAEMON_STOP_AT=50")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "claimed\n" {
		t.Fatalf("producer: %q, %v", line, err)
	}
	ev := waitEvent(t, sub, func(ev Event) bool { return ev.PID == uint32(cmd.Process.Pid) })
	if ev.Kind != EventJoin || ev.Role != 1 || ev.Bus != "lease" {
		t.Errorf("first event of the producer: %+v, want JOIN as producer", ev)
	}
	next := map[uint32]uint32{}
	recvSome := func(n int) {
		for i := 0; i < n; i++ {
			_, got, err := a.Recv("lease", false, 10*time.Second)
			if err != nil {
				t.Fatalf("recv: %v (after %v)", err, next)
			}
			k, seq, err := checkMsg(got)
			if err != nil || seq != next[k] {
				t.Fatalf("producer %d: seq %d, want %d: %v", k, seq, next[k], err)
			}
			next[k]++
		}
	}
	recvSome(50)
	// The claim blocks the lane: producer 2's messages wait behind it.
	p2 := d.dial(t)
	for i := 0; i < 10; i++ {
		if err := p2.Send("lease", 0, msg(2, uint32(i), 2000), false, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := a.Recv("lease", true, 0); code(err) != CodeEmpty {
		t.Fatalf("recv behind a live claim: %v, want EMPTY", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	ev = waitEvent(t, sub, func(ev Event) bool { return ev.PID == uint32(cmd.Process.Pid) })
	if ev.Kind != EventCrash {
		t.Errorf("event after the kill: %+v, want CRASH", ev)
	}
	// The bus flows again: producer 2's messages arrive, and more.
	recvSome(10)
	for i := 10; i < 300; i++ {
		if err := p2.Send("lease", 0, msg(2, uint32(i), 2000), false, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		recvSome(1)
	}
	if next[1] != 50 || next[2] != 300 {
		t.Errorf("received %v, want 50 from the dead producer and 300 from the other", next)
	}
	// Its slot is released.
	deadline := time.Now().Add(10 * time.Second)
	for {
		js, err := a.Stat("lease")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Peers []struct{ PID int } `json:"peers"`
		}
		json.Unmarshal(js, &doc)
		held := false
		for _, p := range doc.Peers {
			held = held || p.PID == cmd.Process.Pid
		}
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead producer still holds a slot: %s", js)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Producer 2's slot is the daemon's, held for it: its connection ending
	// gives it back (LEAVE, naming the client).
	p2.Close()
	ev = waitEvent(t, sub, func(ev Event) bool { return ev.Client != 0 && ev.Kind == EventLeave && ev.Role == 1 })
	if ev.PID != uint32(os.Getpid()) || ev.Client != uint32(os.Getpid()) {
		t.Errorf("leave of the socket producer: %+v", ev)
	}
}

// copyExecutable copies the test binary to a directory every user may
// read, and returns its path.
func copyExecutable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := dir + "/daemon.test"
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// waitEvent returns the next event that match accepts, skipping others.
func waitEvent(t *testing.T, c *Client, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, err := c.NextEvent(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for an event: %v", err)
		}
		if match(ev) {
			return ev
		}
	}
}

func TestMalformedFrames(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.HelloTimeout = 500 * time.Millisecond })
	good := d.dial(t)
	if _, _, err := good.Create(Create{Name: "sturdy"}); err != nil {
		t.Fatal(err)
	}
	defer good.Remove("sturdy")
	frame := func(typ uint16, flags uint16, payload []byte) []byte {
		b := AppendFrame(nil, typ, 9, payload)
		binary.LittleEndian.PutUint16(b[6:], flags)
		return b
	}
	hello := frame(TypeHello, 0, Hello{Version: 1}.encode())
	for _, tc := range []struct {
		name   string
		send   []byte
		want   Code // 0: the connection is closed without a reply
		closed bool
	}{
		// A frame cut short before HELLO waits for the hello deadline.
		{"truncated header", []byte{20, 0, 0}, CodeTimeout, true},
		{"truncated payload", frame(TypeHello, 0, Hello{Version: 1}.encode())[:14], CodeTimeout, true},
		{"length below 8", []byte{4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, CodeBadFrame, true},
		{"oversized length", []byte{0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0, 0, 0, 0, 0}, CodeTooLarge, true},
		{"flags set", frame(TypeHello, 1, Hello{Version: 1}.encode()), CodeBadFrame, true},
		{"unknown type first", frame(0x0777, 0, nil), CodeUnknownType, false},
		{"request before hello", frame(TypeList, 0, nil), CodeHelloRequired, false},
		{"bad version", frame(TypeHello, 0, Hello{Version: 9}.encode()), CodeBadVersion, false},
		{"hello with trailing bytes", frame(TypeHello, 0, append(Hello{Version: 1}.encode(), 0)), CodeBadFrame, false},
		{"unknown type", append(hello, frame(0x0777, 0, nil)...), CodeUnknownType, false},
		{"short send", append(hello, frame(TypeSend, 0, []byte{5, 0, 'a'})...), CodeBadFrame, false},
		{"send length past the end", append(hello, frame(TypeSend, 0, Send{Name: "sturdy", Message: []byte("abc")}.encode()[:14])...), CodeBadFrame, false},
		{"invalid utf-8 name", append(hello, frame(TypeOpen, 0, []byte{2, 0, 0xff, 0xfe, 0})...), CodeBadFrame, false},
		{"list with payload", append(hello, frame(TypeList, 0, []byte{1})...), CodeBadFrame, false},
		{"bad create flags", append(hello, frame(TypeCreate, 0, Create{Name: "x", Flags: 0x80}.encode())...), CodeBadArgument, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialRaw(d.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Conn().Write(tc.send)
			c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
			var got Code
			for {
				f, err := c.read()
				if err != nil {
					if got == 0 && tc.want != 0 {
						t.Fatalf("no reply: %v", err)
					}
					break
				}
				if f.Type == TypeError {
					e, _ := decodeError(f.Payload)
					got = e.Code
					if !tc.closed {
						break
					}
				}
			}
			if got != tc.want {
				t.Errorf("got code %v, want %v", got, tc.want)
			}
			if tc.closed {
				if _, err := c.read(); err == nil {
					t.Errorf("the connection is still open")
				}
			}
		})
	}
	// Random bytes, many times: the daemon never falls over.
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		c, err := dialRaw(d.socket)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, r.IntN(300))
		for j := range junk {
			junk[j] = byte(r.Uint32())
		}
		if i%2 == 0 {
			junk = append(hello, junk...)
		}
		c.Conn().Write(junk)
		c.Conn().CloseWrite()
		c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c.Conn())
		c.Close()
	}
	// Everyone else was served all along.
	if err := good.Send("sturdy", 0, []byte("still here"), true, 0); err != nil {
		t.Fatal(err)
	}
	if _, got, err := good.Recv("sturdy", true, 0); err != nil || string(got) != "still here" {
		t.Fatalf("after the junk: %q, %v", got, err)
	}
}

// dialRaw connects without saying HELLO.
func dialRaw(path string) (*Client, error) {
	c, err := Dial(path, "")
	if err == nil {
		c.Close()
	}
	// Dial says HELLO; open a fresh connection by hand instead.
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return &Client{c: uc}, nil
}

func TestMetrics(t *testing.T) {
	d := startDaemon(t)
	scrape := func() string {
		rec := httptest.NewRecorder()
		d.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	check := func(body string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(body, w+"\n") {
				t.Errorf("metrics lack %s", w)
			}
		}
		if t.Failed() {
			t.Fatalf("metrics:\n%s", body)
		}
	}
	// Before any traffic: every series of known labels is there, at 0.
	check(scrape(),
		`shmbus_build_info{goversion="`+runtime.Version()+`",protocol="1",version="test"} 1`,
		`shmbus_daemon_connections_open 0`,
		`shmbus_daemon_connections_total 0`,
		`shmbus_daemon_frame_errors_total{kind="too_large"} 0`,
		`shmbus_daemon_frame_errors_total{kind="bad_frame"} 0`,
		`shmbus_daemon_frame_errors_total{kind="truncated"} 0`,
		`shmbus_daemon_connections_refused_total{reason="uid_limit"} 0`,
		`shmbus_daemon_connection_timeouts_total{kind="hello"} 0`,
		`shmbus_daemon_peer_events_total{kind="crash"} 0`,
		`shmbus_daemon_relayed_messages_total{direction="in"} 0`,
		`shmbus_daemon_buffered_bytes 0`,
		`shmbus_daemon_memory_budget_bytes `+strconv.FormatFloat(DefaultMaxMemory, 'g', -1, 64),
		`shmbus_daemon_memory_refusals_total 0`,
	)

	a, sub := d.dial(t), d.dial(t)
	if err := sub.Subscribe(""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Create(Create{Name: "metered", Priorities: 2}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("metered")
	for i := 0; i < 5; i++ {
		if err := a.Send("metered", 1, []byte("12345678"), true, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitEvent(t, sub, func(ev Event) bool { return ev.Kind == EventJoin && ev.Bus == "metered" && ev.Role == 1 })
	// The daemon's producer flushes its counters when it goes idle; the
	// consumer's counters show the messages at once on receive.
	for i := 0; i < 3; i++ {
		if _, _, err := a.Recv("metered", true, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A bus made outside the daemon, with a message waiting and a peer.
	outside, err := shmbus.Create("outside", &shmbus.Options{Dir: d.dir, Priorities: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Remove()
	p, err := outside.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.TrySend([]byte("waiting"), 0); err != nil {
		t.Fatal(err)
	}
	a.Release("metered")
	waitEvent(t, sub, func(ev Event) bool { return ev.Kind == EventLeave && ev.Bus == "metered" && ev.Role == 1 })
	check(scrape(),
		`shmbus_bus_messages_total{bus="metered",direction="in",priority="1"} 5`,
		`shmbus_bus_messages_total{bus="metered",direction="out",priority="1"} 3`,
		`shmbus_bus_bytes_total{bus="metered",direction="out",priority="1"} 24`,
		`shmbus_bus_depth_bytes{bus="metered",priority="0"} 0`,
		`shmbus_bus_waiting_messages{bus="metered",priority="1"} 2`,
		`shmbus_bus_waiting_messages{bus="metered",priority="0"} 0`,
		`shmbus_bus_peers{alive="true",bus="metered",role="consumer"} 0`,
		`shmbus_bus_waiting_messages{bus="outside",priority="0"} 1`,
		`shmbus_bus_peers{alive="true",bus="outside",role="producer"} 1`,
		`shmbus_bus_capacity_bytes{bus="outside",priority="0"} `+strconv.FormatFloat(shmbus.DefaultLaneCapacity, 'g', -1, 64),
		`shmbus_daemon_connections_open 2`,
		`shmbus_daemon_connections_total 2`,
		`shmbus_daemon_requests_total{result="OK",type="send"} 5`,
		`shmbus_daemon_relayed_messages_total{direction="in"} 5`,
		`shmbus_daemon_relayed_messages_total{direction="out"} 3`,
		`shmbus_daemon_relayed_bytes_total{direction="out"} 24`,
	)
	body := scrape()
	for _, kind := range []string{"join", "leave"} {
		series := `shmbus_daemon_peer_events_total{kind="` + kind + `"} `
		i := strings.Index(body, series)
		if i < 0 {
			t.Fatalf("no %s", series)
		}
		if n, _ := strconv.Atoi(body[i+len(series) : i+len(series)+strings.IndexByte(body[i+len(series):], '\n')]); n < 1 {
			t.Errorf("%s%d, want the events the subscriber saw", series, n)
		}
	}
	p.Close()
}

func TestShutdownEndsConnections(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "bye"}); err != nil {
		t.Fatal(err)
	}
	shmbus.Remove(d.dir, "bye") // the test removes it itself: the daemon only closes it
	errc := make(chan error, 1)
	go func() {
		_, _, err := a.Recv("bye", false, 0) // waits for ever
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	d.stop(t)
	select {
	case err := <-errc:
		if err == nil {
			t.Error("a waiting RECV returned a message after shutdown")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting RECV was not ended by the shutdown")
	}
	if _, err := Dial(d.socket, "late"); err == nil {
		t.Error("connected after shutdown")
	}
}

var _ = exec.Command

func TestBusRemovedBehindTheDaemon(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "again"}); err != nil {
		t.Fatal(err)
	}
	// Another program removes the bus and makes a new one of that name,
	// with two priorities this time: the daemon must serve the new one.
	if err := shmbus.Remove(d.dir, "again"); err != nil {
		t.Fatal(err)
	}
	b, err := shmbus.Create("again", &shmbus.Options{Dir: d.dir, Priorities: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	info, _, err := a.Open("again", false)
	if err != nil || info.Priorities != 2 {
		t.Fatalf("open after re-creation: %+v, %v; want the new bus with 2 priorities", info, err)
	}
	if err := a.Send("again", 1, []byte("new"), true, 0); err != nil {
		t.Fatal(err)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	if n, prio, err := c.TryReceive(buf); err != nil || string(buf[:n]) != "new" || prio != 1 {
		t.Fatalf("the new bus got %q at %d, %v", buf[:n], prio, err)
	}
}

// TestCreateAfterRemovedBehindTheDaemon: a bus the daemon made and another
// program removed can be made again through the daemon at once; CREATE
// looks at the directory, not at what the daemon still has open.
func TestCreateAfterRemovedBehindTheDaemon(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "phoenix"}); err != nil {
		t.Fatal(err)
	}
	if err := shmbus.Remove(d.dir, "phoenix"); err != nil {
		t.Fatal(err)
	}
	if names, err := a.List(); err != nil || len(names) != 0 {
		t.Fatalf("list after the removal: %v, %v; want none", names, err)
	}
	info, _, err := a.Create(Create{Name: "phoenix", Priorities: 3})
	if err != nil {
		t.Fatalf("create after the removal: %v; want a new bus", err)
	}
	defer a.Remove("phoenix")
	if info.Priorities != 3 {
		t.Errorf("bus info %+v, want the new bus's 3 priorities", info)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "shmbus.phoenix")); err != nil {
		t.Errorf("the new bus has no file: %v", err)
	}
	if err := a.Send("phoenix", 2, []byte("risen"), true, 0); err != nil {
		t.Fatal(err)
	}
	if prio, got, err := a.Recv("phoenix", true, 0); err != nil || prio != 2 || string(got) != "risen" {
		t.Errorf("round trip on the new bus: %q at %d, %v", got, prio, err)
	}
	// A name held by one of the daemon's memfd buses stays taken.
	if _, _, err := a.Create(Create{Name: "anon", Flags: FlagMemfd}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("anon")
	if _, _, err := a.Create(Create{Name: "anon"}); code(err) != CodeExists {
		t.Errorf("file create over a memfd bus's name: %v, want EXISTS", err)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "shmbus.anon")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused create left a file: %v", err)
	}
}

// TestRecvReplyNotWrittenKeepsMessage: RECV takes a message off the bus
// only once its reply is written. A client that closes its connection
// after a few bytes of a large reply leaves the message to the next
// consumer, which gets it whole; a client that reads slowly gets it whole.
func TestRecvReplyNotWrittenKeepsMessage(t *testing.T) {
	d := startDaemon(t)
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "keep", LaneCapacity: 1 << 20, MaxMessage: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("keep")
	// Larger than what the socket buffers between the daemon and a client
	// that reads nothing.
	first, second := msg(7, 0, 6<<20), msg(7, 1, 6<<20)
	sizes := []int{len(first), len(second)}
	sent := make(chan error, 1)
	go func() {
		for _, m := range [][]byte{first, second} {
			if err := a.Send("keep", 0, m, false, 20*time.Second); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()

	quitter, err := dialRaw(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	quitter.Conn().Write(AppendFrame(nil, TypeHello, 1, Hello{Version: 1}.encode()))
	quitter.Conn().Write(AppendFrame(nil, TypeRecv, 2, Recv{Name: "keep", TimeoutMS: 20000}.encode()))
	quitter.Conn().SetReadDeadline(time.Now().Add(20 * time.Second))
	var got int
	buf := make([]byte, 4096)
	for got < 64<<10 { // WELCOME, and the start of the MESSAGE
		n, err := quitter.Conn().Read(buf)
		if err != nil {
			t.Fatalf("reading the start of the reply: %v", err)
		}
		got += n
	}
	quitter.Conn().Close()
	t.Logf("closed after %d bytes", got)

	// The next consumer gets both messages, in order, whole; it reads its
	// replies slowly.
	b := d.dial(t)
	deadline := time.Now().Add(20 * time.Second)
	for seq := uint32(0); seq < 2; {
		_, got, err := b.Recv("keep", false, 10*time.Second)
		if code(err) == CodeBusy && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the quitter's lease ends soon
			continue
		}
		if err != nil {
			t.Fatalf("recv of message %d: %v", seq, err)
		}
		if k, s, err := checkMsg(got); err != nil || k != 7 || s != seq || len(got) != sizes[seq] {
			t.Fatalf("message %d: producer %d seq %d, %d bytes: %v", seq, k, s, len(got), err)
		}
		seq++
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Recv("keep", true, 0); code(err) != CodeEmpty {
		t.Errorf("after both messages: %v, want EMPTY", err)
	}
}

// TestRecvSlowReaderKeepsMessage: a client that stops reading a large
// reply for the write timeout loses its connection, not the message; one
// that keeps reading gets it whole, however long that takes.
func TestRecvSlowReaderKeepsMessage(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.WriteTimeout = 500 * time.Millisecond })
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "slow", LaneCapacity: 8 << 20, MaxMessage: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("slow")
	m := msg(8, 0, 6<<20)
	if err := a.Send("slow", 0, m, false, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	sleeper, err := dialRaw(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer sleeper.Close()
	sleeper.Conn().Write(AppendFrame(nil, TypeHello, 1, Hello{Version: 1}.encode()))
	sleeper.Conn().Write(AppendFrame(nil, TypeRecv, 2, Recv{Name: "slow", Flags: FlagNoWait}.encode()))
	time.Sleep(3 * time.Second) // reads nothing for six write timeouts
	// What it reads now is WELCOME, part of the MESSAGE, then the end.
	sleeper.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, sleeper.Conn())
	if err != nil || n >= int64(len(m)) {
		t.Fatalf("the sleeper read %d bytes, then %v; want less than the %d-byte message, then the end", n, err, len(m))
	}
	b := d.dial(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, got, err := b.Recv("slow", true, 0)
		if code(err) == CodeBusy && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("the next consumer: %d bytes, %v; want the message whole", len(got), err)
		}
		break
	}
}
