//go:build linux

package daemon

// Boards through the socket: BOARD_GET, BOARD_PUT, BOARD_CAS, BOARD_DELETE
// and BOARD_WATCH of docs/daemon-protocol.md, for peers that do not map
// the board. The daemon opens a board of its directory on the first
// request that names it and keeps it open; every request is one call of the
// shmbus.Board API, made for the client after its permission is checked
// against the board file's owner, group and mode.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/segment"
)

// BoardKey names a key of a board: the payload of BOARD_GET and
// BOARD_DELETE.
type BoardKey struct {
	Board string
	Key   string
}

func (m BoardKey) encode() []byte {
	var e enc
	e.str(m.Board)
	e.key(m.Key)
	return e.b
}

func decodeBoardKey(p []byte) (m BoardKey, err error) {
	d := dec{b: p}
	m.Board, m.Key = d.str(), d.key()
	return m, d.done()
}

// BoardPut is the payload of BOARD_PUT, and of BOARD_CAS with Revision,
// the revision the key must still have.
type BoardPut struct {
	Board    string
	Key      string
	Revision uint64 // BOARD_CAS only
	Value    []byte
}

func (m BoardPut) encode(cas bool) []byte {
	var e enc
	e.b = make([]byte, 0, 16+len(m.Board)+len(m.Key)+len(m.Value))
	e.str(m.Board)
	e.key(m.Key)
	if cas {
		e.u64(m.Revision)
	}
	e.bytes(m.Value)
	return e.b
}

func decodeBoardPut(p []byte, cas bool) (m BoardPut, err error) {
	d := dec{b: p}
	m.Board, m.Key = d.str(), d.key()
	if cas {
		m.Revision = d.u64()
	}
	m.Value = d.bytes()
	return m, d.done()
}

// BoardWatch is the payload of BOARD_WATCH.
type BoardWatch struct {
	Board     string
	Key       string
	After     uint64 // reply once the key's revision is past this
	TimeoutMS uint32 // 0: as long as it takes
}

func (m BoardWatch) encode() []byte {
	var e enc
	e.str(m.Board)
	e.key(m.Key)
	e.u64(m.After)
	e.u32(m.TimeoutMS)
	return e.b
}

func decodeBoardWatch(p []byte) (m BoardWatch, err error) {
	d := dec{b: p}
	m.Board, m.Key, m.After, m.TimeoutMS = d.str(), d.key(), d.u64(), d.u32()
	return m, d.done()
}

// entryHead is the size of an ENTRY payload before the value's bytes:
// revision, deleted, value length.
const entryHead = 8 + 1 + 4

// BoardEntry is the ENTRY reply: a key's value at a revision, or its
// tombstone (Deleted, no value).
type BoardEntry struct {
	Revision uint64
	Deleted  bool
	Value    []byte
}

func decodeBoardEntry(p []byte) (m BoardEntry, err error) {
	d := dec{b: p}
	m.Revision, m.Deleted, m.Value = d.u64(), d.u8() != 0, d.bytes()
	return m, d.err // later versions may add fields
}

func decodeRevision(p []byte) (uint64, error) {
	d := dec{b: p}
	rev := d.u64()
	return rev, d.err
}

// boardEntry is a board the daemon has open.
type boardEntry struct {
	name    string
	board   *shmbus.Board
	watches atomic.Uint64 // BOARD_WATCH requests on it (metrics)
}

// current says whether e's segment is still the file its name leads to.
func (e *boardEntry) current(dir string) bool {
	fi, err := os.Stat(segment.BoardPath(dir, e.name))
	if err != nil {
		return false
	}
	mine, err := e.board.File().Stat()
	return err == nil && os.SameFile(fi, mine)
}

// lookupBoard returns the open board called name, opening it from the
// directory if the daemon does not have it open (or has a board of that
// name that was removed behind its back).
func (s *Server) lookupBoard(name string) (*boardEntry, error) {
	if err := segment.ValidateName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &Error{CodeShutdown, "the daemon is shutting down"}
	}
	stale := s.boards[name]
	if stale != nil && stale.current(s.cfg.Dir) {
		s.mu.Unlock()
		return stale, nil
	}
	if stale != nil {
		delete(s.boards, name)
	}
	s.mu.Unlock()
	if stale != nil {
		stale.board.Close() // waits for the requests using it
	}
	b, err := shmbus.OpenBoard(name, &shmbus.OpenOptions{Dir: s.cfg.Dir})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		b.Close()
		return nil, &Error{CodeShutdown, "the daemon is shutting down"}
	}
	if other := s.boards[name]; other != nil {
		b.Close()
		return other, nil
	}
	e := &boardEntry{name: name, board: b}
	s.boards[name] = e
	return e, nil
}

// listedBoards returns the boards of the directory, opened; those the
// daemon may not open, or that vanish meanwhile, are left out.
func (s *Server) listedBoards() []*boardEntry {
	names, _ := shmbus.ListBoards(s.cfg.Dir)
	out := make([]*boardEntry, 0, len(names))
	for _, name := range names {
		if e, err := s.lookupBoard(name); err == nil {
			out = append(out, e)
		}
	}
	return out
}

func (s *Server) closeBoards() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, e := range s.boards {
		e.board.Close()
		delete(s.boards, name)
	}
}

// board returns the board called name if the client may do what with it.
func (c *conn) board(name string, want uint32, what string) (*boardEntry, error) {
	e, err := c.s.lookupBoard(name)
	if err != nil {
		return nil, err
	}
	fi, err := e.board.File().Stat()
	if err != nil {
		return nil, fmt.Errorf("board %q: %w", name, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("board %q: no owner information for %s", name, e.board.Path())
	}
	if missing := c.cred.missing(st, want); missing != "" {
		return nil, &Error{CodePermission, fmt.Sprintf("%s on board %q: uid %d gid %d lacks %s permission (board owned by uid %d gid %d, mode %#o)",
			what, name, c.cred.uid, c.cred.gid, missing, st.Uid, st.Gid, st.Mode&0o777)}
	}
	return e, nil
}

// entryBuf returns a buffer for an ENTRY reply of up to maxValue bytes of
// value: the connection's own for small ones, else one reserved from the
// memory budget for this reply (held bytes, to give back once it is
// written).
func (c *conn) entryBuf(what, name string, maxValue int) (buf []byte, held int, err error) {
	need := entryHead + maxValue
	if need <= smallMessage+5 {
		if c.rbuf == nil {
			if err := c.take(smallMessage+5, smallMessage+5); err != nil {
				return nil, 0, c.overloaded(what, name, smallMessage+5, err)
			}
			c.rbuf = make([]byte, smallMessage+5)
		}
		return c.rbuf, 0, nil
	}
	if int64(need) > c.s.mem.largest() {
		return nil, 0, &Error{CodeTooLarge, fmt.Sprintf("%s on board %q: its values of up to %d bytes are larger than the daemon's memory budget lets one request hold (%d bytes); map the board to read them",
			what, name, maxValue, c.s.mem.largest())}
	}
	if err := c.take(need, need); err != nil {
		return nil, 0, c.overloaded(what, name, need, err)
	}
	return make([]byte, need), need, nil
}

// entryReply fills buf (from entryBuf) with an ENTRY of value, which may
// already be in place at buf[entryHead:].
func (c *conn) entryReply(buf []byte, held int, rev uint64, deleted bool, value []byte) (uint16, []byte, *os.File, error) {
	if len(value) > len(buf)-entryHead {
		c.give(held)
		return 0, nil, nil, fmt.Errorf("board value of %d bytes over the %d reserved for it", len(value), len(buf)-entryHead)
	}
	n := copy(buf[entryHead:], value)
	binary.LittleEndian.PutUint64(buf, rev)
	buf[8] = 0
	if deleted {
		buf[8] = 1
	}
	binary.LittleEndian.PutUint32(buf[9:], uint32(n))
	if held > 0 {
		c.afterReply = func(error) { c.give(held) }
	}
	return TypeEntry, buf[:entryHead+n], nil, nil
}

func revisionReply(rev uint64) (uint16, []byte, *os.File, error) {
	var e enc
	e.u64(rev)
	return TypeRevision, e.b, nil, nil
}

func (c *conn) doBoardGet(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeBoardKey(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.board(m.Board, permRead, "get")
	if err != nil {
		return 0, nil, nil, err
	}
	buf, held, err := c.entryBuf("get", m.Board, e.board.MaxValue())
	if err != nil {
		return 0, nil, nil, err
	}
	// The value is copied straight into the reply.
	v, rev, err := e.board.Get(m.Key, buf[entryHead:entryHead:len(buf)])
	if err != nil {
		c.give(held)
		return 0, nil, nil, err
	}
	return c.entryReply(buf, held, rev, false, v)
}

func (c *conn) doBoardPut(p []byte, cas bool) (uint16, []byte, *os.File, error) {
	m, err := decodeBoardPut(p, cas)
	if err != nil {
		return 0, nil, nil, err
	}
	// The value is the request's payload, which the budget holds already.
	e, err := c.board(m.Board, permWrite, "put")
	if err != nil {
		return 0, nil, nil, err
	}
	var rev uint64
	if cas {
		rev, err = e.board.CompareAndPut(m.Key, m.Revision, m.Value)
	} else {
		rev, err = e.board.Put(m.Key, m.Value)
	}
	if err != nil {
		return 0, nil, nil, err
	}
	return revisionReply(rev)
}

func (c *conn) doBoardDelete(p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeBoardKey(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.board(m.Board, permWrite, "delete")
	if err != nil {
		return 0, nil, nil, err
	}
	rev, err := e.board.Delete(m.Key)
	if err != nil {
		return 0, nil, nil, err
	}
	return revisionReply(rev)
}

// doBoardWatch waits, as a RECV does, holding up the connection's later
// requests; the end of the connection or of the daemon ends the wait.
func (c *conn) doBoardWatch(ctx context.Context, p []byte) (uint16, []byte, *os.File, error) {
	m, err := decodeBoardWatch(p)
	if err != nil {
		return 0, nil, nil, err
	}
	e, err := c.board(m.Board, permRead, "watch")
	if err != nil {
		return 0, nil, nil, err
	}
	e.watches.Add(1)
	// Reserved before the wait, so that a change is never lost for want
	// of memory after it.
	buf, held, err := c.entryBuf("watch", m.Board, e.board.MaxValue())
	if err != nil {
		return 0, nil, nil, err
	}
	wctx, cancel := ctxFor(ctx, m.TimeoutMS)
	ent, err := e.board.Watch(wctx, m.Key, m.After)
	cancel()
	if err != nil {
		c.give(held)
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, nil, nil, &Error{CodeTimeout, fmt.Sprintf("watch %q on board %q: no revision past %d within %v",
				m.Key, m.Board, m.After, time.Duration(m.TimeoutMS)*time.Millisecond)}
		}
		return 0, nil, nil, err
	}
	return c.entryReply(buf, held, ent.Rev, ent.Deleted, ent.Value)
}

// Board requests of the Go client.

// BoardGet returns key's value and revision.
func (c *Client) BoardGet(board, key string) ([]byte, uint64, error) {
	f, err := c.Do(TypeBoardGet, BoardKey{board, key}.encode())
	if err != nil {
		return nil, 0, err
	}
	m, err := decodeBoardEntry(f.Payload)
	return m.Value, m.Revision, err
}

// BoardPut writes key's value and returns its revision.
func (c *Client) BoardPut(board, key string, value []byte) (uint64, error) {
	return c.revision(c.Do(TypeBoardPut, BoardPut{Board: board, Key: key, Value: value}.encode(false)))
}

// BoardCAS writes key's value if its revision is still rev (0: no value).
func (c *Client) BoardCAS(board, key string, rev uint64, value []byte) (uint64, error) {
	return c.revision(c.Do(TypeBoardCAS, BoardPut{Board: board, Key: key, Revision: rev, Value: value}.encode(true)))
}

// BoardDelete deletes key's value and returns the tombstone's revision.
func (c *Client) BoardDelete(board, key string) (uint64, error) {
	return c.revision(c.Do(TypeBoardDelete, BoardKey{board, key}.encode()))
}

// BoardWatch waits until key's revision is past after (for at most
// timeout; 0 is as long as it takes) and returns its entry.
func (c *Client) BoardWatch(board, key string, after uint64, timeout time.Duration) (BoardEntry, error) {
	f, err := c.Do(TypeBoardWatch, BoardWatch{Board: board, Key: key, After: after, TimeoutMS: millis(timeout)}.encode())
	if err != nil {
		return BoardEntry{}, err
	}
	return decodeBoardEntry(f.Payload)
}

func (c *Client) revision(f Frame, err error) (uint64, error) {
	if err != nil {
		return 0, err
	}
	return decodeRevision(f.Payload)
}
