package ring

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/shmbus/shmbus/layout"
)

func fanSeg(t testing.TB, subs int) (*testSeg, *SubTable) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, Flags: layout.FlagMultiProducer, PeerSlots: 4, Subscriptions: subs}, 0)
	return s, NewSubTable(s.seg, &s.g, s.lanes, s.peers)
}

// makeSub makes entry e active from the lane's head, as the root package
// does (without a name).
func makeSub(t testing.TB, st *SubTable, e, self int, flags uint32) *SubReader {
	t.Helper()
	en := &st.Entries[e]
	en.Flags.Store(flags)
	en.State.Store(layout.SubCreating)
	if err := st.Start(e, self, true, nil); err != nil {
		t.Fatal(err)
	}
	r, err := st.Reader(e, 0, self)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSubCleaning: the head moves only as far as the slowest blocking
// subscription released, a producer that finds the lane full cleans it
// itself, and a lossy subscription that fell behind is told exactly how
// many messages it missed.
func TestSubCleaning(t *testing.T) {
	s, st := fanSeg(t, 3)
	s.peers.states[0], s.peers.states[1], s.peers.states[2] = PeerAlive, PeerAlive, PeerAlive
	fast, slow := makeSub(t, st, 0, 1, 0), makeSub(t, st, 1, 2, 0)
	lossy := makeSub(t, st, 2, 3, layout.SubLossy)
	p := s.producer(0, 0)
	msg := make([]byte, 56) // 64-byte records: 16 fill the lane
	send := func(seq uint32) error {
		binary.LittleEndian.PutUint32(msg, seq)
		return p.Send(msg)
	}
	read := func(r *SubReader) uint32 {
		rec, pl, err := r.Peek()
		if err != nil {
			t.Fatal(err)
		}
		r.Next(rec)
		return binary.LittleEndian.Uint32(pl)
	}
	for i := range 16 {
		if err := send(uint32(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := send(16); err != ErrFull {
		t.Fatalf("17th record in a lane of 16: %v", err)
	}
	for i := range 16 {
		if v := read(fast); v != uint32(i) {
			t.Fatalf("fast: %d, want %d", v, i)
		}
	}
	fast.Release()
	if err := send(16); err != ErrFull {
		t.Fatalf("full lane, slow subscriber at the head: %v", err)
	}
	for i := range 4 {
		if v := read(slow); v != uint32(i) {
			t.Fatalf("slow: %d, want %d", v, i)
		}
	}
	slow.Release()
	for i := 16; i < 20; i++ {
		if err := send(uint32(i)); err != nil {
			t.Fatalf("send %d after the slow subscriber released 4: %v", i, err)
		}
	}
	if h := s.lanes[0].head.Load(); h != 4*64 {
		t.Fatalf("head %d, want %d", h, 4*64)
	}
	if err := send(20); err != ErrFull {
		t.Fatalf("full again: %v", err)
	}
	buf := make([]byte, 64)
	_, _, err := lossy.PeekCopy(buf)
	o, ok := IsOverrun(err)
	if !ok || o.Missed != 4 {
		t.Fatalf("lossy subscriber behind the head: %v", err)
	}
	rec, n, err := lossy.PeekCopy(buf)
	if err != nil || binary.LittleEndian.Uint32(buf[:n]) != 4 {
		t.Fatalf("lossy after overrun: %v, %d", err, binary.LittleEndian.Uint32(buf))
	}
	lossy.Next(rec)
	if lossy.Begun() != 5 {
		t.Fatalf("lossy counted %d messages", lossy.Begun())
	}
	// Without blocking subscriptions, a full lane overwrites its oldest.
	st.Entries[0].State.Store(layout.SubFree)
	st.Entries[1].State.Store(layout.SubFree)
	for i := 20; i < 100; i++ {
		if err := send(uint32(i)); err != nil {
			t.Fatalf("send %d with only a lossy subscriber: %v", i, err)
		}
	}
	_, _, err = lossy.PeekCopy(buf)
	if o, ok := IsOverrun(err); !ok || o.Missed == 0 {
		t.Fatalf("lossy subscriber overwritten: %v", err)
	}
	got := uint32(0)
	for {
		rec, n, err := lossy.PeekCopy(buf)
		if err == ErrEmpty {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = binary.LittleEndian.Uint32(buf[:n])
		lossy.Next(rec)
	}
	if got != 99 || lossy.Begun() != 100 {
		t.Fatalf("lossy ended at %d having counted %d", got, lossy.Begun())
	}
}

// TestCleanerDied: a cleaner that died holding the lock, in each phase of a
// clean, is taken over and its clean finished: the head ends at the
// releasing position, counts consistent, the space zeroed.
func TestCleanerDied(t *testing.T) {
	for _, phase := range []string{"odd", "zeroing", "head moved"} {
		t.Run(phase, func(t *testing.T) {
			s, st := fanSeg(t, 1)
			p := s.producer(0, 0)
			for range 4 {
				if err := p.Send(make([]byte, 56)); err != nil {
					t.Fatal(err)
				}
			}
			l, c := s.lanes[0], &st.clean[0]
			c.cleaner.Store(3) // slot 2, dead
			s.peers.states[2] = PeerDead
			switch phase {
			case "odd":
				c.seq.Store(1)
				c.releasing.Store(128)
			case "zeroing":
				c.seq.Store(2)
				c.releasing.Store(128)
				c.relMsgs.Store(2)
				clear(l.data[:64])
			case "head moved":
				c.seq.Store(2)
				c.releasing.Store(128)
				c.relMsgs.Store(2)
				clear(l.data[:128])
				l.head.Store(128)
			}
			if got, err := st.lock(0, 1, false); got || err != nil {
				t.Fatalf("a lock held by a slot not proven dead was taken: %v", err)
			}
			if got, err := st.lock(0, 1, true); !got || err != nil {
				t.Fatalf("a dead cleaner's lock was not taken: %v", err)
			}
			st.Unlock(0)
			pos, msgs, err := st.ReleasingPoint(0, 1)
			if err != nil || pos != 128 || msgs != 2 {
				t.Fatalf("releasing point %d %d: %v", pos, msgs, err)
			}
			if l.head.Load() != 128 || c.cleaned.Load() != 2 || c.cleaner.Load() != 0 || c.seq.Load()&1 != 0 {
				t.Fatalf("head %d, cleaned %d, lock %d, seq %d", l.head.Load(), c.cleaned.Load(), c.cleaner.Load(), c.seq.Load())
			}
			for i, v := range l.data[:128] {
				if v != 0 {
					t.Fatalf("byte %d not zeroed", i)
				}
			}
		})
	}
}

// FuzzSubTable: whatever the subscription entries, cursors, clean words
// and ring bytes say, readers, cleaners and statistics return records or
// errors (ErrCorrupt for what cannot be), never panic, never read outside
// the lane, and always end.
func FuzzSubTable(f *testing.F) {
	f.Add(uint64(0), uint64(128), uint64(0), uint64(0), uint32(0), uint32(2), uint32(0), uint64(64), uint32(2), uint32(1), uint64(0), []byte{64, 0, 0, 0, 1, 3, 0, 0})
	f.Add(uint64(64), uint64(1088), uint64(64), uint64(1), uint32(3), uint32(2), uint32(0), uint64(1<<63), uint32(2), uint32(1), uint64(7), []byte{16, 0, 0, 0, 2, 0})
	f.Add(uint64(1<<64-64), uint64(64), uint64(0), uint64(5), uint32(9), uint32(7), uint32(0xff), uint64(8), uint32(1), uint32(0), uint64(1<<64-8), []byte{255, 255, 255, 255, 1, 1})
	f.Fuzz(func(t *testing.T, head, tail, releasing, seq uint64, cleaner, st0, fl0 uint32, cur0 uint64, st1, fl1 uint32, cur1 uint64, data []byte) {
		s, st := fanSeg(t, 2)
		l, c := s.lanes[0], &st.clean[0]
		for i := 0; i < len(l.data); i += max(len(data), 1) {
			copy(l.data[i:], data)
		}
		l.head.Store(head)
		l.tail.Store(tail)
		c.releasing.Store(releasing)
		c.seq.Store(seq % 4) // an odd sequence makes readers wait for a repair: keep it short
		c.cleaner.Store(cleaner % 8)
		s.peers.states[0] = PeerAlive
		for i, e := range []struct {
			st, fl uint32
			cur    uint64
		}{{st0, fl0, cur0}, {st1, fl1, cur1}} {
			en := &st.Entries[i]
			en.State.Store(e.st % 5)
			en.Flags.Store(e.fl)
			en.Cursor[0].Store(e.cur)
			en.NameLen.Store(e.fl)
			copy(en.Name, data)
		}
		for i := range st.Entries {
			st.Entries[i].NameString()
			r, err := st.Reader(i, 0, 0)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("reader: %v", err)
				}
				continue
			}
			buf := make([]byte, l.MaxPayload())
			for range 200 {
				var rec layout.Record
				if r.lossy {
					rec, _, err = r.PeekCopy(buf)
				} else {
					var p []byte
					rec, p, err = r.Peek()
					if len(p) > l.MaxPayload() {
						t.Fatalf("payload of %d bytes", len(p))
					}
				}
				if _, ok := IsOverrun(err); ok {
					continue
				}
				if err != nil {
					break
				}
				r.Next(rec)
			}
			r.Ready()
			r.InFlight()
			r.Release()
		}
		st.Releasable(0)
		st.Begun(0)
		if _, err := st.Clean(0, 0, 64); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("clean: %v", err)
		}
		if _, err := st.CleanDead(0, 1, 0); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("clean: %v", err)
		}
	})
}
