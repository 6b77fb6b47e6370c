//go:build linux

package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	roles["connect-as-other"] = roleConnectAsOther
	roles["send-as-other"] = roleSendAsOther
}

// roleSendAsOther sends DAEMON_SIZE bytes to DAEMON_BUS and prints the
// result.
func roleSendAsOther() error {
	c, err := Dial(os.Getenv("DAEMON_SOCKET"), "other")
	if err != nil {
		return err
	}
	defer c.Close()
	n, _ := strconv.Atoi(os.Getenv("DAEMON_SIZE"))
	err = c.Send(os.Getenv("DAEMON_BUS"), 0, make([]byte, n), false, 5*time.Second)
	_, werr := os.Stdout.WriteString(codeName(err) + "\n")
	return werr
}

// roleConnectAsOther connects to DAEMON_SOCKET as whatever user it runs as
// and prints the result of HELLO and LIST.
func roleConnectAsOther() error {
	c, err := Dial(os.Getenv("DAEMON_SOCKET"), "other")
	if err != nil {
		_, werr := os.Stdout.WriteString(codeName(err) + "\n")
		return werr
	}
	defer c.Close()
	_, err = c.List()
	_, werr := os.Stdout.WriteString(codeName(err) + "\n")
	return werr
}

func codeName(err error) string {
	var de *Error
	switch {
	case errors.As(err, &de):
		return de.Code.String()
	case err != nil:
		return err.Error()
	}
	return "OK"
}

// readError reads frames from c until an ERROR, and returns it; it fails
// the test if the connection ends first.
func readError(t *testing.T, c *Client) *Error {
	t.Helper()
	c.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := c.read()
		if err != nil {
			t.Fatalf("no ERROR before the connection ended: %v", err)
		}
		if f.Type == TypeError {
			e, err := decodeError(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
	}
}

// lastError reads frames from c until the daemon closes it, and returns
// the last ERROR among them (nil if none).
func lastError(t *testing.T, c *Client) *Error {
	t.Helper()
	c.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	var last *Error
	for {
		f, err := c.read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the daemon did not close the connection")
		}
		if err != nil {
			return last
		}
		if f.Type == TypeError {
			if last, err = decodeError(f.Payload); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// closedByDaemon says whether the daemon closed c (read returns EOF).
func closedByDaemon(c *Client) bool {
	c.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	_, err := c.Conn().Read(b[:])
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// sendHeader writes HELLO, then the header of a SEND declaring n payload
// bytes and the first part of them.
func sendHeader(t *testing.T, c *Client, n, part int) {
	t.Helper()
	out := AppendFrame(nil, TypeHello, 1, Hello{Version: 1}.encode())
	out = binary.LittleEndian.AppendUint32(out, uint32(8+n))
	out = binary.LittleEndian.AppendUint16(out, TypeSend)
	out = binary.LittleEndian.AppendUint16(out, 0)
	out = binary.LittleEndian.AppendUint32(out, 2)
	out = append(out, make([]byte, part)...)
	if _, err := c.Conn().Write(out); err != nil {
		t.Fatal(err)
	}
}

func TestDeadlinesAndHelloLimit(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) {
		c.HelloTimeout = 300 * time.Millisecond
		c.FrameTimeout = 300 * time.Millisecond
		c.IdleTimeout = 2 * time.Second
	})
	for _, tc := range []struct {
		name string
		send []byte
		want Code
		text string
	}{
		{"silent before hello", nil, CodeTimeout, "no HELLO"},
		{"half a hello", AppendFrame(nil, TypeHello, 1, Hello{Version: 1}.encode())[:13], CodeTimeout, "no HELLO"},
		{"requests but no hello", AppendFrame(nil, TypeList, 1, nil), CodeTimeout, "no HELLO"},
		{"large frame before hello", AppendFrame(nil, TypeHello, 1, make([]byte, HelloMaxPayload+1)), CodeTooLarge, "at most 4096"},
		{"stalled frame", append(AppendFrame(nil, TypeHello, 1, Hello{Version: 1}.encode()), 100, 0, 0, 0, 4, 0), CodeTimeout, "stalled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialRaw(d.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Conn().Write(tc.send)
			e := lastError(t, c)
			if e == nil || e.Code != tc.want || !strings.Contains(e.Message, tc.text) {
				t.Errorf("last ERROR before the daemon closed the connection: %v, want %v saying %q", e, tc.want, tc.text)
			}
		})
	}
	// A greeted connection may wait between requests as long as
	// IdleTimeout, and not longer.
	c := d.dial(t)
	time.Sleep(600 * time.Millisecond) // past the hello and frame timeouts
	if _, err := c.List(); err != nil {
		t.Fatalf("a greeted connection, quiet for less than the idle timeout: %v", err)
	}
	if e := readError(t, c); e.Code != CodeTimeout || !strings.Contains(e.Message, "idle") {
		t.Errorf("after the idle timeout: %v, want TIMEOUT saying idle", e)
	}
}

func TestConnectionLimits(t *testing.T) {
	d := startDaemonWith(t, func(c *Config) { c.MaxConns = 5; c.MaxConnsPerUID = 3 })
	var open []*Client
	for i := 0; i < 3; i++ {
		open = append(open, d.dial(t))
	}
	over, err := dialRaw(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if e := readError(t, over); e.Code != CodeConnLimit || !strings.Contains(e.Message, "--max-conns-per-uid") {
		t.Errorf("a fourth connection of one user: %v, want CONN_LIMIT naming --max-conns-per-uid", e)
	}
	if !closedByDaemon(over) {
		t.Error("the refused connection is still open")
	}
	// The connections admitted are served, and one that closes makes room.
	if _, err := open[0].List(); err != nil {
		t.Fatal(err)
	}
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := Dial(d.socket, "again")
		if err == nil {
			open[0] = c
			defer c.Close()
			break
		}
		if code(errors.Unwrap(err)) != CodeConnLimit || time.Now().After(deadline) {
			t.Fatalf("a connection after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the closed one is being cleaned up
	}
	if os.Geteuid() != 0 {
		t.Log("not root: the per-user and total limits for a second user are not checked")
		return
	}
	// Another user is not held back by the first one's limit; the total
	// limit holds for everyone.
	exe := copyExecutable(t)
	other := func() string {
		cmd := child(t, "connect-as-other", "DAEMON_SOCKET="+d.socket)
		cmd.Path, cmd.Args[0] = exe, exe
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as uid 65534: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := other(); got != "OK" {
		t.Errorf("another user while uid 0 is at its limit: %s, want OK", got)
	}
	d.srv.mu.Lock()
	d.srv.cfg.MaxConns = 3 // the three of uid 0 fill it now
	d.srv.mu.Unlock()
	if got := other(); !strings.Contains(got, "CONN_LIMIT") {
		t.Errorf("another user with the daemon at its limit: %s, want CONN_LIMIT", got)
	}
}

// TestMemoryBudget: frames are held within the budget; a request over it
// is refused with OVERLOADED on a connection that stays usable, and goes
// through once the budget has room again.
func TestMemoryBudget(t *testing.T) {
	const budget = 2 << 20
	d := startDaemonWith(t, func(c *Config) { c.MaxMemory = budget; c.FrameTimeout = time.Minute })
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "budget", LaneCapacity: 4 << 20, MaxMessage: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("budget")
	if want := uint32(budget - budget/8); a.Welcome.MaxPayload != want {
		t.Errorf("WELCOME announces max_payload %d; a budget of %d holds no frame larger than %d", a.Welcome.MaxPayload, budget, want)
	}
	// A hog holds most of the budget with an unfinished frame.
	hog, err := dialRaw(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	// Its buffer grows to the frame's 1.5 MiB, leaving 512 KiB.
	sendHeader(t, hog, 3<<19, 5<<18)
	waitFor(t, "the hog's frame to be held", func() bool { return d.srv.mem.used.Load() >= 3<<19 })
	big := bytes.Repeat([]byte{0xA5}, 1<<20)
	err = a.Send("budget", 0, big, false, 5*time.Second)
	if code(err) != CodeOverloaded {
		t.Fatalf("a SEND over the budget: %v, want OVERLOADED", err)
	}
	if used := d.srv.mem.used.Load(); used > budget {
		t.Errorf("%d bytes held, over the budget of %d", used, budget)
	}
	// The connection is still usable.
	if err := a.Send("budget", 0, []byte("small"), false, 5*time.Second); err != nil {
		t.Fatalf("a small SEND after the refusal: %v", err)
	}
	if _, got, err := a.Recv("budget", true, 0); err != nil || string(got) != "small" {
		t.Fatalf("recv: %q, %v", got, err)
	}
	// Once the hog is gone, the large message goes through, both ways.
	hog.Close()
	waitFor(t, "the hog's frame to be given back", func() bool { return d.srv.mem.used.Load() <= smallMessage+5 })
	if err := a.Send("budget", 0, big, false, 5*time.Second); err != nil {
		t.Fatalf("a large SEND within the budget: %v", err)
	}
	if _, got, err := a.Recv("budget", true, 0); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("recv of the large message: %d bytes, %v", len(got), err)
	}
	// A RECV the budget has no room for leaves the message on the bus.
	if err := a.Send("budget", 0, big, false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	hog2, err := dialRaw(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer hog2.Close()
	sendHeader(t, hog2, 3<<19, 5<<18)
	waitFor(t, "the second hog's frame to be held", func() bool { return d.srv.mem.used.Load() >= 3<<19 })
	if _, _, err := a.Recv("budget", true, 0); code(err) != CodeOverloaded {
		t.Fatalf("a RECV over the budget: %v, want OVERLOADED", err)
	}
	hog2.Close()
	waitFor(t, "the second hog's frame to be given back", func() bool { return d.srv.mem.used.Load() <= smallMessage+5 })
	if _, got, err := a.Recv("budget", true, 0); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("recv after the refusal: %d bytes, %v; want the message kept", len(got), err)
	}
	a.Release("budget")
	waitFor(t, "every buffer to be given back", func() bool { return d.srv.mem.used.Load() <= smallMessage+5 })
}

// waitFor polls cond, backing off, for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	pause := time.Millisecond
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// TestMemoryPerUser: one user's large requests stay within its share of the
// budget, while its small ones, and another user's large ones, still fit.
func TestMemoryPerUser(t *testing.T) {
	const budget, share = 4 << 20, 1 << 20
	d := startDaemonWith(t, func(c *Config) { c.MaxMemory, c.MaxMemoryPerUID = budget, share; c.FrameTimeout = time.Minute })
	a := d.dial(t)
	if _, _, err := a.Create(Create{Name: "share", LaneCapacity: 4 << 20, MaxMessage: 1 << 20, Mode: 0o666}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("share")
	hog, err := dialRaw(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer hog.Close()
	sendHeader(t, hog, share-64<<10, share-128<<10) // holds 960 KiB of its user's 1 MiB
	waitFor(t, "the hog's frame to be held", func() bool { return d.srv.mem.used.Load() >= share-64<<10 })
	err = a.Send("share", 0, make([]byte, 256<<10), false, 5*time.Second)
	if code(err) != CodeOverloaded || !strings.Contains(err.Error(), "--max-memory-per-uid") {
		t.Fatalf("a large SEND past the user's share: %v, want OVERLOADED naming --max-memory-per-uid", err)
	}
	if err := a.Send("share", 0, []byte("small"), false, 5*time.Second); err != nil {
		t.Fatalf("a small SEND of the same user: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: another user's share is not checked")
		return
	}
	exe := copyExecutable(t)
	cmd := child(t, "send-as-other", "DAEMON_SOCKET="+d.socket, "DAEMON_BUS=share", "DAEMON_SIZE="+strconv.Itoa(256<<10))
	cmd.Path, cmd.Args[0] = exe, exe
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as uid 65534: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != "OK" {
		t.Errorf("another user's 256 KiB SEND while uid 0 holds its share: %s, want OK", got)
	}
}
