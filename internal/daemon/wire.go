//go:build linux

package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// The wire format of docs/daemon-protocol.md, version 1.

// Version is the protocol version this package speaks.
const Version = 1

// headerLen is the size of a frame's fixed part: length, type, flags, id.
const headerLen = 12

// DefaultMaxPayload is the largest frame payload accepted unless the server
// is told otherwise: a 64 MiB message and its fields.
const DefaultMaxPayload = 64<<20 + 64<<10

// Frame types. Replies are 0x8000 | the request type.
const (
	TypeHello       uint16 = 0x0001
	TypeCreate      uint16 = 0x0002
	TypeOpen        uint16 = 0x0003
	TypeSend        uint16 = 0x0004
	TypeRecv        uint16 = 0x0005
	TypeRelease     uint16 = 0x0006
	TypeStat        uint16 = 0x0007
	TypeList        uint16 = 0x0008
	TypeSubscribe   uint16 = 0x0009
	TypeUnsubscribe uint16 = 0x000A
	TypeRemove      uint16 = 0x000B
	TypeBoardGet    uint16 = 0x000C
	TypeBoardPut    uint16 = 0x000D
	TypeBoardCAS    uint16 = 0x000E
	TypeBoardDelete uint16 = 0x000F
	TypeBoardWatch  uint16 = 0x0010

	TypeOK       uint16 = 0x8000
	TypeWelcome  uint16 = 0x8001
	TypeBus      uint16 = 0x8002
	TypeMessage  uint16 = 0x8005
	TypeStats    uint16 = 0x8007
	TypeNames    uint16 = 0x8008
	TypeEvent    uint16 = 0x8009
	TypeEntry    uint16 = 0x800C // BOARD_GET, BOARD_WATCH
	TypeRevision uint16 = 0x800D // BOARD_PUT, BOARD_CAS, BOARD_DELETE
	TypeError    uint16 = 0x80FF
)

// typeNames name request types for metrics and logs.
var typeNames = map[uint16]string{
	TypeHello: "hello", TypeCreate: "create", TypeOpen: "open", TypeSend: "send", TypeRecv: "recv",
	TypeRelease: "release", TypeStat: "stat", TypeList: "list", TypeSubscribe: "subscribe",
	TypeUnsubscribe: "unsubscribe", TypeRemove: "remove",
	TypeBoardGet: "board_get", TypeBoardPut: "board_put", TypeBoardCAS: "board_cas",
	TypeBoardDelete: "board_delete", TypeBoardWatch: "board_watch",
}

// Flags of CREATE, OPEN, SEND and RECV.
const (
	FlagMemfd    = 1 << 0 // CREATE: an anonymous sealed memfd bus
	FlagFailFast = 1 << 1 // CREATE: a full lane fails sends
	FlagWantFD   = 1 << 2 // CREATE, OPEN: pass the segment's descriptor
	FlagNoWait   = 1 << 0 // SEND, RECV: do not wait
)

// Event kinds.
const (
	EventJoin  = 1
	EventLeave = 2
	EventCrash = 3
)

// Code is an error code of an ERROR frame.
type Code uint16

// Error codes.
const (
	CodeBadFrame      Code = 1
	CodeUnknownType   Code = 2
	CodeTooLarge      Code = 3
	CodeBadVersion    Code = 4
	CodeHelloRequired Code = 5
	CodeNotFound      Code = 6
	CodeExists        Code = 7
	CodePermission    Code = 8
	CodeBadName       Code = 9
	CodeBadArgument   Code = 10
	CodeBusy          Code = 11
	CodeFull          Code = 12
	CodeEmpty         Code = 13
	CodeTimeout       Code = 14
	CodeNoSlot        Code = 15
	CodeCorrupt       Code = 16
	CodeUnsupported   Code = 17
	CodeShutdown      Code = 18
	CodeInternal      Code = 19
	CodeConnLimit     Code = 20
	CodeOverloaded    Code = 21
	CodeNoKey         Code = 22
	CodeRevision      Code = 23
	CodeBadKey        Code = 24
)

var codeNames = [...]string{
	CodeBadFrame: "BAD_FRAME", CodeUnknownType: "UNKNOWN_TYPE", CodeTooLarge: "TOO_LARGE",
	CodeBadVersion: "BAD_VERSION", CodeHelloRequired: "HELLO_REQUIRED", CodeNotFound: "NOT_FOUND",
	CodeExists: "EXISTS", CodePermission: "PERMISSION", CodeBadName: "BAD_NAME",
	CodeBadArgument: "BAD_ARGUMENT", CodeBusy: "BUSY", CodeFull: "FULL", CodeEmpty: "EMPTY",
	CodeTimeout: "TIMEOUT", CodeNoSlot: "NO_SLOT", CodeCorrupt: "CORRUPT",
	CodeUnsupported: "UNSUPPORTED", CodeShutdown: "SHUTDOWN", CodeInternal: "INTERNAL",
	CodeConnLimit: "CONN_LIMIT", CodeOverloaded: "OVERLOADED", CodeNoKey: "NO_KEY",
	CodeRevision: "REVISION", CodeBadKey: "BAD_KEY",
}

func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE_%d", uint16(c))
}

// Error is an ERROR frame: what the daemon refused and why.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("daemon: %s: %s", e.Code, e.Message) }

// Errors of the frame layer.
var (
	// ErrFrame means bytes that cannot be a frame: the stream is lost.
	ErrFrame = errors.New("malformed frame")
	// ErrTooLarge means a frame longer than the receiver accepts.
	ErrTooLarge = errors.New("frame too large")
	// errDecode means a payload that does not decode as its type says; the
	// stream itself is intact.
	errDecode = errors.New("payload does not decode")
)

// Frame is one frame: its type, request id and payload.
type Frame struct {
	Type    uint16
	ID      uint32
	Payload []byte
}

// ParseHeader decodes a frame's fixed part. It fails with ErrFrame for a
// length below the minimum or flags set, and with ErrTooLarge for a payload
// over max.
func ParseHeader(h []byte, max int) (typ uint16, id uint32, n int, err error) {
	length := binary.LittleEndian.Uint32(h[0:])
	typ = binary.LittleEndian.Uint16(h[4:])
	flags := binary.LittleEndian.Uint16(h[6:])
	id = binary.LittleEndian.Uint32(h[8:])
	switch {
	case length < headerLen-4:
		return typ, id, 0, fmt.Errorf("%w: length %d is below 8", ErrFrame, length)
	case uint64(length)-8 > uint64(max):
		return typ, id, 0, fmt.Errorf("%w: payload of %d bytes, at most %d accepted", ErrTooLarge, uint64(length)-8, max)
	case flags != 0:
		return typ, id, 0, fmt.Errorf("%w: flags %#x", ErrFrame, flags)
	}
	return typ, id, int(length) - 8, nil
}

// ReadFrame reads one frame of at most max payload bytes from r. The
// payload's buffer grows with the bytes that arrive: a header declaring a
// large payload costs nothing until its bytes come.
func ReadFrame(r io.Reader, max int) (Frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	typ, id, n, err := ParseHeader(h[:], max)
	if err != nil {
		return Frame{Type: typ, ID: id}, err
	}
	p, _, err := readPayload(n, func(b []byte) (int, error) { return r.Read(b) }, func(int, int) error { return nil })
	if err != nil {
		return Frame{}, err
	}
	return Frame{Type: typ, ID: id, Payload: p}, nil
}

// readPayload reads n bytes with read into a buffer that starts at
// firstChunk bytes and at most doubles each time it is full. grow is asked
// for the bytes each allocation adds (and the size it makes) first; when it
// refuses, readPayload
// returns its error with the bytes read so far. held is what grow
// granted (and the caller must give back), on error too.
func readPayload(n int, read func([]byte) (int, error), grow func(add, total int) error) (p []byte, held int, err error) {
	for len(p) < n {
		if len(p) == cap(p) {
			size := min(n, max(firstChunk, 2*cap(p)))
			if err := grow(size-cap(p), size); err != nil {
				return p, held, err
			}
			held += size - cap(p)
			bigger := make([]byte, len(p), size)
			copy(bigger, p)
			p = bigger
		}
		k, err := read(p[len(p):cap(p)])
		p = p[:len(p)+k]
		if err != nil && len(p) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return p, held, err
		}
	}
	return p, held, nil
}

// AppendFrame appends the encoding of a frame to b.
func AppendFrame(b []byte, typ uint16, id uint32, payload []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(8+len(payload)))
	b = binary.LittleEndian.AppendUint16(b, typ)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, id)
	return append(b, payload...)
}

// enc builds a payload.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

// str appends s, cut to the 65535 bytes a str can hold (on a rune boundary).
func (e *enc) str(s string) {
	if len(s) > 0xFFFF {
		s = s[:0xFFFF]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// key appends a board key: a u8 length and its bytes. A key longer than a
// u8 can say goes as the empty key, which the daemon refuses (BAD_KEY),
// rather than cut to another key.
func (e *enc) key(k string) {
	if len(k) > 0xFF {
		k = ""
	}
	e.u8(uint8(len(k)))
	e.b = append(e.b, k...)
}

func (e *enc) bytes(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}

// dec reads a payload. The first field that runs past the end sets err and
// makes every later read return zero; done checks that nothing is left.
type dec struct {
	b   []byte
	err error
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.err = fmt.Errorf("%w: field of %d bytes, %d left", errDecode, n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *dec) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *dec) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *dec) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (d *dec) str() string {
	n := d.u16()
	p := d.take(int(n))
	if d.err == nil && !utf8.Valid(p) {
		d.err = fmt.Errorf("%w: string is not UTF-8", errDecode)
	}
	return string(p)
}

// key reads a board key (any bytes; the board checks its length).
func (d *dec) key() string {
	n := d.u8()
	return string(d.take(int(n)))
}

// bytes returns a slice of the payload (not a copy).
func (d *dec) bytes() []byte {
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: bytes field of %d, %d left", errDecode, n, len(d.b))
		return nil
	}
	return d.take(int(n))
}

func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d bytes left over", errDecode, len(d.b))
	}
	return d.err
}
