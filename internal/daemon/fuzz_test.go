//go:build linux

package daemon

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzFrame feeds arbitrary bytes to the frame reader and to every payload
// decoder. Nothing may panic, a frame is accepted only within its limits,
// and every request that decodes encodes back to the same bytes (the
// decoders accept exactly one encoding).
func FuzzFrame(f *testing.F) {
	f.Add(AppendFrame(nil, TypeHello, 1, Hello{Version: 1, Client: "fuzz"}.encode()))
	f.Add(AppendFrame(nil, TypeSend, 2, Send{Name: "bus", Priority: 1, Message: []byte("hello")}.encode()))
	f.Add(AppendFrame(nil, TypeCreate, 3, Create{Name: "bus", Priorities: 4, Flags: FlagMemfd | FlagWantFD}.encode()))
	f.Add(AppendFrame(nil, TypeRecv, 4, Recv{Name: "bus", TimeoutMS: 10}.encode()))
	f.Add(AppendFrame(nil, TypeOpen, 5, Open{Name: "bus", Flags: FlagWantFD}.encode()))
	f.Add(AppendFrame(nil, TypeStat, 6, named("bus")))
	f.Add(AppendFrame(nil, TypeEvent, 0, Event{Kind: EventCrash, Bus: "bus", PID: 7}.encode()))
	f.Add(AppendFrame(nil, TypeBoardGet, 8, BoardKey{"board", "key"}.encode()))
	f.Add(AppendFrame(nil, TypeBoardPut, 9, BoardPut{Board: "board", Key: "key", Value: []byte("v")}.encode(false)))
	f.Add(AppendFrame(nil, TypeBoardCAS, 10, BoardPut{Board: "board", Key: "key", Revision: 3, Value: []byte("v")}.encode(true)))
	f.Add(AppendFrame(nil, TypeBoardWatch, 11, BoardWatch{Board: "board", Key: "key", After: 3, TimeoutMS: 5}.encode()))
	f.Add(AppendFrame(nil, TypeCreate, 12, Create{Name: "fan", Subscriptions: 4}.encode()))
	f.Add(AppendFrame(nil, TypeSubOpen, 13, SubOpen{Bus: "fan", Subscription: "billing", Flags: SubLossy | SubEvents}.encode()))
	f.Add(AppendFrame(nil, TypeSubRecv, 14, SubRecv{Bus: "fan", Subscription: "billing", Flags: FlagNoWait, Max: 8, TimeoutMS: 5}.encode()))
	f.Add(AppendFrame(nil, TypeSubAck, 15, SubAck{Bus: "fan", Subscription: "billing", Priority: 1, Position: 4096}.encode()))
	f.Add(AppendFrame(nil, TypeSubClose, 16, SubClose{Bus: "fan", Subscription: "billing", Flags: SubCloseRemove}.encode()))
	f.Add(AppendFrame(nil, TypeBatch, 17, []byte{2, 0, ItemMessage, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'x', ItemEvent, 3, 0, 0, 0, 1, 2, 3}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 1 << 16
		fr, err := ReadFrame(bytes.NewReader(data), max)
		if err == nil {
			if len(fr.Payload) > max {
				t.Fatalf("accepted a payload of %d bytes over the limit %d", len(fr.Payload), max)
			}
			if got := AppendFrame(nil, fr.Type, fr.ID, fr.Payload); !bytes.Equal(got, data[:len(got)]) {
				t.Fatalf("frame re-encodes differently")
			}
		} else if errors.Is(err, ErrFrame) || errors.Is(err, ErrTooLarge) {
			// refused: fine
		}
		p := data
		if err == nil {
			p = fr.Payload
		}
		roundTrip := func(name string, enc []byte, err error) {
			if err == nil && !bytes.Equal(enc, p) {
				t.Fatalf("%s: decoded, but encodes back to %x, not %x", name, enc, p)
			}
		}
		if m, err := decodeHello(p); err == nil {
			roundTrip("hello", m.encode(), nil)
		}
		if m, err := decodeCreate(p); err == nil {
			roundTrip("create", m.encode(), nil)
		}
		if m, err := decodeOpen(p); err == nil {
			roundTrip("open", m.encode(), nil)
		}
		if m, err := decodeSend(p); err == nil {
			roundTrip("send", m.encode(), nil)
		}
		if m, err := decodeRecv(p); err == nil {
			roundTrip("recv", m.encode(), nil)
		}
		if n, err := decodeNamed(p); err == nil {
			roundTrip("named", named(n), nil)
		}
		if m, err := decodeBoardKey(p); err == nil {
			roundTrip("board key", m.encode(), nil)
		}
		if m, err := decodeBoardPut(p, false); err == nil {
			roundTrip("board put", m.encode(false), nil)
		}
		if m, err := decodeBoardPut(p, true); err == nil {
			roundTrip("board cas", m.encode(true), nil)
		}
		if m, err := decodeBoardWatch(p); err == nil {
			roundTrip("board watch", m.encode(), nil)
		}
		if m, err := decodeSubOpen(p); err == nil {
			roundTrip("sub open", m.encode(), nil)
		}
		if m, err := decodeSubRecv(p); err == nil {
			roundTrip("sub recv", m.encode(), nil)
		}
		if m, err := decodeSubAck(p); err == nil {
			roundTrip("sub ack", m.encode(), nil)
		}
		if m, err := decodeSubClose(p); err == nil {
			roundTrip("sub close", m.encode(), nil)
		}
		// Reply decoders (the client's side) tolerate trailing fields but
		// must not panic.
		decodeWelcome(p)
		decodeBusInfo(p)
		decodeMessage(p)
		decodeEvent(p)
		decodeError(p)
		decodeNames(p)
		decodeBoardEntry(p)
		decodeRevision(p)
		decodeSubInfo(p)
		decodeBatch(p)
		LaggedMissed(p)
	})
}
