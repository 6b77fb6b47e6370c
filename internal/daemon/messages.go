//go:build linux

package daemon

import "fmt"

// Payloads of the requests, replies and events of docs/daemon-protocol.md,
// with their encodings. Decoders are strict: every field present, nothing
// left over.

// Hello is the HELLO request.
type Hello struct {
	Version uint16
	Client  string
}

func (m Hello) encode() []byte {
	var e enc
	e.u16(m.Version)
	e.str(m.Client)
	return e.b
}

func decodeHello(p []byte) (m Hello, err error) {
	d := dec{b: p}
	m.Version, m.Client = d.u16(), d.str()
	return m, d.done()
}

// Welcome is the reply to HELLO.
type Welcome struct {
	Version       uint16
	MaxPayload    uint32
	Server        string
	PID, UID, GID uint32
}

func (m Welcome) encode() []byte {
	var e enc
	e.u16(m.Version)
	e.u32(m.MaxPayload)
	e.str(m.Server)
	e.u32(m.PID)
	e.u32(m.UID)
	e.u32(m.GID)
	return e.b
}

func decodeWelcome(p []byte) (m Welcome, err error) {
	d := dec{b: p}
	m.Version, m.MaxPayload, m.Server = d.u16(), d.u32(), d.str()
	m.PID, m.UID, m.GID = d.u32(), d.u32(), d.u32()
	return m, d.err // later versions may add fields
}

// Create is the CREATE request.
type Create struct {
	Name         string
	Priorities   uint16
	Producers    uint8 // 0 MPSC, 1 SPSC
	Wake         uint8 // 0 default, 1 futex, 2 sem
	LaneCapacity uint32
	MaxMessage   uint32
	Mode         uint16
	Flags        uint8
	// Subscriptions makes a fan-out bus with this many subscription slots
	// (1..64); 0 a queue bus. An optional field: sent only if not 0.
	Subscriptions uint8
}

func (m Create) encode() []byte {
	var e enc
	e.str(m.Name)
	e.u16(m.Priorities)
	e.u8(m.Producers)
	e.u8(m.Wake)
	e.u32(m.LaneCapacity)
	e.u32(m.MaxMessage)
	e.u16(m.Mode)
	e.u8(m.Flags)
	if m.Subscriptions != 0 {
		e.u8(m.Subscriptions)
	}
	return e.b
}

func decodeCreate(p []byte) (m Create, err error) {
	d := dec{b: p}
	m.Name, m.Priorities, m.Producers, m.Wake = d.str(), d.u16(), d.u8(), d.u8()
	m.LaneCapacity, m.MaxMessage, m.Mode, m.Flags = d.u32(), d.u32(), d.u16(), d.u8()
	if d.err == nil && len(d.b) > 0 {
		// One encoding per request: the field is sent only if not 0.
		if m.Subscriptions = d.u8(); m.Subscriptions == 0 {
			return m, fmt.Errorf("%w: subscriptions field of 0 (leave it out)", errDecode)
		}
	}
	return m, d.done()
}

// Open is the OPEN request.
type Open struct {
	Name  string
	Flags uint8
}

func (m Open) encode() []byte {
	var e enc
	e.str(m.Name)
	e.u8(m.Flags)
	return e.b
}

func decodeOpen(p []byte) (m Open, err error) {
	d := dec{b: p}
	m.Name, m.Flags = d.str(), d.u8()
	return m, d.done()
}

// Bus kinds.
const (
	KindFile  = 1
	KindMemfd = 2
)

// BusInfo is the reply to CREATE and OPEN.
type BusInfo struct {
	Name       string
	Kind       uint8
	Producers  uint8
	Wake       uint8
	FD         uint8 // 1 if a descriptor came with the frame
	Priorities uint16
	Mode       uint16
	UID, GID   uint32
	Size       uint64
	MaxMessage uint64
	MaxRecord  uint32
	// Subscriptions is the number of subscription slots of a fan-out bus,
	// 0 for a queue bus.
	Subscriptions uint8
}

func (m BusInfo) encode() []byte {
	var e enc
	e.str(m.Name)
	e.u8(m.Kind)
	e.u8(m.Producers)
	e.u8(m.Wake)
	e.u8(m.FD)
	e.u16(m.Priorities)
	e.u16(m.Mode)
	e.u32(m.UID)
	e.u32(m.GID)
	e.u64(m.Size)
	e.u64(m.MaxMessage)
	e.u32(m.MaxRecord)
	e.u8(m.Subscriptions)
	return e.b
}

func decodeBusInfo(p []byte) (m BusInfo, err error) {
	d := dec{b: p}
	m.Name, m.Kind, m.Producers, m.Wake, m.FD = d.str(), d.u8(), d.u8(), d.u8(), d.u8()
	m.Priorities, m.Mode, m.UID, m.GID = d.u16(), d.u16(), d.u32(), d.u32()
	m.Size, m.MaxMessage, m.MaxRecord = d.u64(), d.u64(), d.u32()
	if d.err == nil && len(d.b) > 0 { // a later field: older daemons do not send it
		m.Subscriptions = d.u8()
	}
	return m, d.err
}

// Send is the SEND request.
type Send struct {
	Name      string
	Priority  uint8
	Flags     uint8
	TimeoutMS uint32
	Message   []byte
}

func (m Send) encode() []byte {
	var e enc
	e.b = make([]byte, 0, 16+len(m.Name)+len(m.Message))
	e.str(m.Name)
	e.u8(m.Priority)
	e.u8(m.Flags)
	e.u32(m.TimeoutMS)
	e.bytes(m.Message)
	return e.b
}

func decodeSend(p []byte) (m Send, err error) {
	d := dec{b: p}
	m.Name, m.Priority, m.Flags, m.TimeoutMS, m.Message = d.str(), d.u8(), d.u8(), d.u32(), d.bytes()
	return m, d.done()
}

// Recv is the RECV request.
type Recv struct {
	Name      string
	Flags     uint8
	TimeoutMS uint32
}

func (m Recv) encode() []byte {
	var e enc
	e.str(m.Name)
	e.u8(m.Flags)
	e.u32(m.TimeoutMS)
	return e.b
}

func decodeRecv(p []byte) (m Recv, err error) {
	d := dec{b: p}
	m.Name, m.Flags, m.TimeoutMS = d.str(), d.u8(), d.u32()
	return m, d.done()
}

// Message is the reply to RECV.
type Message struct {
	Priority uint8
	Data     []byte
}

func decodeMessage(p []byte) (m Message, err error) {
	d := dec{b: p}
	m.Priority, m.Data = d.u8(), d.bytes()
	return m, d.err
}

// named encodes the requests whose payload is one name (RELEASE, STAT,
// SUBSCRIBE, UNSUBSCRIBE, REMOVE).
func named(name string) []byte {
	var e enc
	e.str(name)
	return e.b
}

func decodeNamed(p []byte) (string, error) {
	d := dec{b: p}
	name := d.str()
	return name, d.done()
}

func encodeNames(names []string) []byte {
	var e enc
	e.u32(uint32(len(names)))
	for _, n := range names {
		e.str(n)
	}
	return e.b
}

func decodeNames(p []byte) ([]string, error) {
	d := dec{b: p}
	n := d.u32()
	if uint64(n) > uint64(len(p))/2 {
		return nil, errDecode
	}
	out := make([]string, 0, n)
	for i := uint32(0); i < n && d.err == nil; i++ {
		out = append(out, d.str())
	}
	return out, d.err
}

// Event is an EVENT frame: a peer of a bus joined, left or died.
type Event struct {
	Kind   uint8
	Bus    string
	PID    uint32
	Slot   uint16
	Role   uint8  // 1 producer, 2 consumer, 0 none
	Client uint32 // pid of the daemon client the slot is held for, or 0
	Time   uint64 // Unix nanoseconds
}

func (m Event) encode() []byte {
	var e enc
	e.u8(m.Kind)
	e.str(m.Bus)
	e.u32(m.PID)
	e.u16(m.Slot)
	e.u8(m.Role)
	e.u32(m.Client)
	e.u64(m.Time)
	return e.b
}

func decodeEvent(p []byte) (m Event, err error) {
	d := dec{b: p}
	m.Kind, m.Bus, m.PID, m.Slot, m.Role, m.Client, m.Time = d.u8(), d.str(), d.u32(), d.u16(), d.u8(), d.u32(), d.u64()
	return m, d.err
}

func encodeError(code Code, msg string) []byte {
	var e enc
	e.u16(uint16(code))
	e.str(msg)
	return e.b
}

func decodeError(p []byte) (*Error, error) {
	d := dec{b: p}
	e := &Error{Code: Code(d.u16()), Message: d.str()}
	return e, d.err
}
