//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Client is a Go client of the daemon protocol, for tests and tools. It is
// safe for concurrent use, but requests are executed one at a time (as the
// daemon does for one connection).
type Client struct {
	c       *net.UnixConn
	Welcome Welcome

	mu     sync.Mutex // one request at a time
	nextID uint32
	buf    []byte     // bytes read and not yet framed
	fds    []*os.File // descriptors received and not yet claimed
	events []Event    // events read while waiting for replies
}

// Dial connects to the daemon at path and says HELLO as client.
func Dial(path, client string) (*Client, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to daemon: %w", err)
	}
	cl := &Client{c: c}
	f, err := cl.Do(TypeHello, Hello{Version: Version, Client: client}.encode())
	if err == nil {
		cl.Welcome, err = decodeWelcome(f.Payload)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("daemon hello: %w", err)
	}
	return cl, nil
}

// Close closes the connection (ending its leases).
func (c *Client) Close() error {
	c.mu.Lock()
	for _, f := range c.fds {
		f.Close()
	}
	c.fds = nil
	c.mu.Unlock()
	return c.c.Close()
}

// Conn is the underlying socket (tests write raw bytes on it).
func (c *Client) Conn() *net.UnixConn { return c.c }

// fill reads more bytes, keeping any descriptors that come with them.
func (c *Client) fill() error {
	p := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.c.ReadMsgUnix(p, oob)
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, fd := range fds {
						unix.CloseOnExec(fd)
						c.fds = append(c.fds, os.NewFile(uintptr(fd), "shmbus-segment"))
					}
				}
			}
		}
	}
	if n > 0 {
		c.buf = append(c.buf, p[:n]...)
	}
	if n <= 0 && err == nil {
		err = errors.New("connection closed")
	}
	return err
}

// read reads the next frame.
func (c *Client) read() (Frame, error) {
	for len(c.buf) < headerLen {
		if err := c.fill(); err != nil {
			return Frame{}, err
		}
	}
	typ, id, n, err := ParseHeader(c.buf[:headerLen], 1<<31-1)
	if err != nil {
		return Frame{}, err
	}
	for len(c.buf) < headerLen+n {
		if err := c.fill(); err != nil {
			return Frame{}, err
		}
	}
	f := Frame{Type: typ, ID: id, Payload: append([]byte(nil), c.buf[headerLen:headerLen+n]...)}
	c.buf = c.buf[headerLen+n:]
	return f, nil
}

// Do sends a request and returns its reply; an ERROR reply is returned as
// an *Error. Events read meanwhile are kept for NextEvent.
func (c *Client) Do(typ uint16, payload []byte) (Frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	id := c.nextID
	if _, err := c.c.Write(AppendFrame(nil, typ, id, payload)); err != nil {
		// The daemon may have said why it closed the connection.
		c.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		f, rerr := c.read()
		c.c.SetReadDeadline(time.Time{})
		if rerr == nil && f.Type == TypeError {
			if e, derr := decodeError(f.Payload); derr == nil {
				return f, e
			}
		}
		return Frame{}, err
	}
	for {
		f, err := c.read()
		if err != nil {
			return Frame{}, err
		}
		if f.Type == TypeEvent && f.ID == 0 {
			if ev, err := decodeEvent(f.Payload); err == nil {
				c.events = append(c.events, ev)
			}
			continue
		}
		// An ERROR of id 0 is about the connection (a limit, a deadline):
		// the answer to whatever was asked.
		if f.ID != id && (f.Type != TypeError || f.ID != 0) {
			return f, fmt.Errorf("reply for request %d while waiting for %d", f.ID, id)
		}
		if f.Type == TypeError {
			e, err := decodeError(f.Payload)
			if err != nil {
				return f, err
			}
			return f, e
		}
		return f, nil
	}
}

// Create makes a bus; the descriptor is returned with FlagWantFD.
func (c *Client) Create(m Create) (BusInfo, *os.File, error) {
	return c.busReply(c.Do(TypeCreate, m.encode()))
}

// Open opens a bus; with wantFD its segment's descriptor is returned too.
func (c *Client) Open(name string, wantFD bool) (BusInfo, *os.File, error) {
	var fl uint8
	if wantFD {
		fl = FlagWantFD
	}
	return c.busReply(c.Do(TypeOpen, Open{Name: name, Flags: fl}.encode()))
}

func (c *Client) busReply(f Frame, err error) (BusInfo, *os.File, error) {
	if err != nil {
		return BusInfo{}, nil, err
	}
	info, err := decodeBusInfo(f.Payload)
	if err != nil {
		return info, nil, err
	}
	if info.FD == 0 {
		return info, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fds) == 0 {
		return info, nil, errors.New("the reply says a descriptor came with it, but none did")
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return info, fd, nil
}

func millis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(max(1, d.Milliseconds()))
}

// Send sends msg at prio through the daemon.
func (c *Client) Send(name string, prio int, msg []byte, nowait bool, timeout time.Duration) error {
	m := Send{Name: name, Priority: uint8(prio), TimeoutMS: millis(timeout), Message: msg}
	if nowait {
		m.Flags = FlagNoWait
	}
	_, err := c.Do(TypeSend, m.encode())
	return err
}

// Recv receives a message through the daemon.
func (c *Client) Recv(name string, nowait bool, timeout time.Duration) (int, []byte, error) {
	m := Recv{Name: name, TimeoutMS: millis(timeout)}
	if nowait {
		m.Flags = FlagNoWait
	}
	f, err := c.Do(TypeRecv, m.encode())
	if err != nil {
		return 0, nil, err
	}
	msg, err := decodeMessage(f.Payload)
	return int(msg.Priority), msg.Data, err
}

// Release gives back what the daemon holds for this connection on name.
func (c *Client) Release(name string) error {
	_, err := c.Do(TypeRelease, named(name))
	return err
}

// Stat returns the bus's statistics document.
func (c *Client) Stat(name string) ([]byte, error) {
	f, err := c.Do(TypeStat, named(name))
	if err != nil {
		return nil, err
	}
	d := dec{b: f.Payload}
	js := d.bytes()
	return js, d.err
}

// List lists the buses.
func (c *Client) List() ([]string, error) {
	f, err := c.Do(TypeList, nil)
	if err != nil {
		return nil, err
	}
	return decodeNames(f.Payload)
}

// Subscribe asks for the peer events of name ("" for every bus).
func (c *Client) Subscribe(name string) error {
	_, err := c.Do(TypeSubscribe, named(name))
	return err
}

// Remove deletes a bus.
func (c *Client) Remove(name string) error {
	_, err := c.Do(TypeRemove, named(name))
	return err
}

// NextEvent returns the next peer event, waiting at most timeout.
func (c *Client) NextEvent(timeout time.Duration) (Event, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for len(c.events) == 0 {
		c.c.SetReadDeadline(deadline)
		f, err := c.read()
		c.c.SetReadDeadline(time.Time{})
		if err != nil {
			return Event{}, err
		}
		if f.Type != TypeEvent {
			return Event{}, fmt.Errorf("unexpected frame %#04x while waiting for events", f.Type)
		}
		ev, err := decodeEvent(f.Payload)
		if err != nil {
			return Event{}, err
		}
		c.events = append(c.events, ev)
	}
	ev := c.events[0]
	c.events = c.events[1:]
	return ev, nil
}
