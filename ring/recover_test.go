package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/shmbus/shmbus/layout"
)

func payloads(t *testing.T, c *Consumer) []byte {
	t.Helper()
	var got []byte
	if _, err := c.Poll(0, func(_ layout.Record, b []byte) { got = append(got, b[0]) }); err != nil {
		t.Fatal(err)
	}
	return got
}

func mustRecover(t *testing.T, c *Consumer, peers Peers, want bool) {
	t.Helper()
	got, err := c.Recover(peers)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Recover = %v, want %v", got, want)
	}
}

// A producer dies holding a confirmed claim (between claim and publish):
// nothing is recovered while it lives; once it is dead its span becomes
// padding and records claimed after it by others are delivered.
func TestRecoverConfirmedClaim(t *testing.T) {
	for _, multi := range []bool{false, true} {
		cfg := layout.Config{Lanes: 1, LaneCapacity: 4096}
		if multi {
			cfg.Flags = layout.FlagMultiProducer
		}
		s := newTestSeg(t, cfg, 1<<32-1024)
		victim, c := s.producer(0, 0), s.consumer(t, 0)
		victim.Send([]byte{1})
		b, err := victim.Reserve(100, layout.FragBegin|layout.FragEnd)
		if err != nil {
			t.Fatal(err)
		}
		b[0] = 0xEE // written, never published
		var other *Producer
		if multi {
			other = s.producer(0, 1)
		} else {
			// The successor of a dead single producer takes the lane over.
			other = s.producer(0, 1)
		}
		other.Send([]byte{2})
		if got := payloads(t, c); string(got) != "\x01" {
			t.Fatalf("before recovery got %v", got)
		}
		if !c.InFlight() {
			t.Fatal("lane should be in flight")
		}
		mustRecover(t, c, s.peers, false) // victim alive: wait for it
		s.peers.states[0] = PeerDead
		mustRecover(t, c, s.peers, true)
		if got := payloads(t, c); string(got) != "\x02" {
			t.Fatalf("after recovery got %v", got)
		}
		if s.lanes[0].Stats().Recovered != 1 {
			t.Fatal("recovery not counted")
		}
		if s.lanes[0].ClaimPending(ClaimAt(s.seg, &s.g, 0, 0)) {
			t.Fatal("victim's claim still pending after its span was released")
		}
	}
}

// A producer dies in the middle of publishing a batch: what it published is
// delivered, the rest of its claim is skipped.
func TestRecoverPartlyPublishedBatch(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	victim, c := s.producer(0, 0), s.consumer(t, 0)
	if err := victim.Batch(3 * RecordSize(8)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		b, _ := victim.Reserve(8, layout.FragBegin|layout.FragEnd)
		b[0] = byte(10 + i)
	}
	// Publish only the first record, as a producer killed inside Commit would.
	r := victim.recs[0]
	s.lanes[0].lengthWord(r.off).Store(r.length)
	s.producer(0, 1).Send([]byte{99})
	s.peers.states[0] = PeerDead
	if got := payloads(t, c); string(got) != "\x0a" {
		t.Fatalf("got %v", got)
	}
	mustRecover(t, c, s.peers, true)
	if got := payloads(t, c); string(got) != "\x63" {
		t.Fatalf("after recovery got %v", got)
	}
}

// setClaim writes a claim record and moves the tail as a producer that
// died at a given step of claimSpan would have left them.
func setClaim(s *testSeg, slot int, pos, end, ok uint64, moveTail bool) {
	cl := ClaimAt(s.seg, &s.g, slot, 0)
	cl.Pos.Store(pos)
	cl.End.Store(end)
	cl.OK.Store(ok)
	if moveTail {
		s.lanes[0].tail.Store(end)
	}
}

// The claimant moved the tail and died before confirming (rule b).
func TestRecoverUnconfirmedClaim(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 4096)
	c := s.consumer(t, 0)
	setClaim(s, 0, 4096, 4096+64, 0, true)
	s.peers.states[0] = PeerDead
	// A live producer whose claim record says Pos == 4096 may be the
	// claimant: wait.
	setClaim(s, 1, 4096, 4096+32, 0, false)
	s.peers.states[1] = PeerAlive
	mustRecover(t, c, s.peers, false)
	s.peers.states[1] = PeerFree
	mustRecover(t, c, s.peers, true)
	if c.Ready() != true {
		t.Fatal("padding not published")
	}
	s.producer(0, 2).Send([]byte{5})
	if got := payloads(t, c); string(got) != "\x05" {
		t.Fatalf("got %v", got)
	}
}

// Two dead producers both claim to have tried position c: one succeeded,
// the other failed its CAS and died. The true one is told by its End.
func TestRecoverAmbiguousDeadClaims(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	c := s.consumer(t, 0)
	setClaim(s, 0, 0, 48, 0, false) // failed CAS: would have ended at 48
	setClaim(s, 1, 0, 64, 0, true)  // the winner: tail is 64
	s.peers.states[0], s.peers.states[1] = PeerDead, PeerDead
	mustRecover(t, c, s.peers, true)
	p := s.producer(0, 2)
	p.Send([]byte{7})
	if got := payloads(t, c); string(got) != "\x07" {
		t.Fatalf("got %v", got)
	}
	// Both ends consistent (tail and a published record at each): wait.
	s2 := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	c2 := s2.consumer(t, 0)
	setClaim(s2, 0, 0, 48, 0, false)
	setClaim(s2, 1, 0, 64, 0, true)
	s2.lanes[0].putRecord(48, 16, layout.TypePadding, 3)
	s2.peers.states[0], s2.peers.states[1] = PeerDead, PeerDead
	mustRecover(t, c2, s2.peers, false)
}

// Stale claims of dead producers whose records were all published never
// trigger recovery.
func TestRecoverIgnoresStaleClaims(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	p.Send([]byte{1})
	s.peers.states[0] = PeerDead
	payloads(t, c)
	live := s.producer(0, 1)
	live.Reserve(8, layout.FragBegin|layout.FragEnd) // in flight, alive
	mustRecover(t, c, s.peers, false)
	live.Commit()
	if got := payloads(t, c); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestCorruptRecords(t *testing.T) {
	cases := []struct {
		name         string
		length, meta uint32
	}{
		{"type zero", 16, 0},
		{"unknown type", 16, 9},
		{"length past ring end", 8192, layout.TypeData | 3<<8},
		{"data shorter than its header", 4, layout.TypeData | 3<<8},
		{"unknown flags", 16, layout.TypeData | 0x80<<8},
		{"padding with flags", 16, layout.TypePadding | 1<<8},
		{"padding of odd length", 13, layout.TypePadding},
		{"length over record limit", 1000, layout.TypeData | 3<<8},
		{"reserved high bit", 1<<31 | 16, layout.TypeData | 3<<8},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096}, 0)
			c := s.consumer(t, 0)
			s.lanes[0].setMeta(0, tc.meta)
			s.lanes[0].lengthWord(0).Store(tc.length)
			if _, _, err := c.Next(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Next = %v, want ErrCorrupt", err)
			}
		})
	}
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096}, 0)
	s.lanes[0].tail.Store(1 << 40)
	if _, err := NewConsumer(s.lanes[0]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("consumer over bad positions: %v", err)
	}
	p := s.producer(0, 0)
	if err := p.Send(make([]byte, 8)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("producer over bad positions: %v", err)
	}
}

// FuzzDrain drains a lane whose data, positions and peer claims are
// arbitrary bytes: it must never panic or read outside the ring.
func FuzzDrain(f *testing.F) {
	seed := make([]byte, 256)
	binary.LittleEndian.PutUint32(seed[16:], 24)
	binary.LittleEndian.PutUint32(seed[20:], layout.TypeData|3<<8)
	f.Add(uint64(0), uint64(64), uint64(0), uint64(64), seed)
	f.Add(uint64(8), uint64(1<<20), uint64(8), uint64(40), []byte{24, 0, 0, 0, 2, 0, 0, 0, 255})
	f.Add(uint64(1<<64-16), uint64(32), uint64(1<<64-16), uint64(16), []byte{16, 0, 0, 0, 1, 3})
	f.Fuzz(func(t *testing.T, head, tail, claimPos, claimEnd uint64, data []byte) {
		s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, Flags: layout.FlagMultiProducer}, 0)
		l := s.lanes[0]
		copy(l.data, data)
		head &^= 7
		l.head.Store(head)
		l.releasing.Store(head)
		l.tail.Store(tail)
		setClaim(s, 0, claimPos, claimEnd, claimPos+1, false)
		s.peers.states[0] = PeerDead
		c, err := NewConsumer(l)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("NewConsumer: %v", err)
			}
			return
		}
		for i := 0; i < 300; i++ {
			_, err := c.Poll(16, func(_ layout.Record, b []byte) {
				if len(b) > l.MaxPayload() {
					t.Fatalf("payload of %d bytes", len(b))
				}
			})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Poll: %v", err)
				}
				return
			}
			if ok, err := c.Recover(s.peers); err != nil || !ok {
				return
			}
		}
	})
}

// A consumer killed inside Release (bytes partly zeroed, head not moved)
// leaves its successor a release to finish, not zeroed headers to read.
func TestInterruptedRelease(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	for i := byte(1); i <= 5; i++ {
		p.Send([]byte{i, i, i})
	}
	for i := 0; i < 3; i++ {
		c.Next()
	}
	// What Release does up to the point of death: announce, zero part.
	l := s.lanes[0]
	l.releasing.Store(c.pos)
	clear(l.data[:c.pos/2])
	c2, err := NewConsumer(l)
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(t, c2); string(got) != "\x04\x05" {
		t.Fatalf("successor got %v, want records 4 and 5", got)
	}
	if !bytes.Equal(l.data, make([]byte, 4096)) {
		t.Fatal("released bytes not zeroed")
	}
}

// Rule (b) where the dead claim ends exactly at position 0: positions wrap
// at 2^64, and an end of 0 is as good as any other.
func TestRecoverUnconfirmedClaimEndingAtZero(t *testing.T) {
	start := uint64(1<<64 - 64)
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, start)
	c := s.consumer(t, 0)
	setClaim(s, 0, start, 0, 0, true)
	s.peers.states[0] = PeerDead
	mustRecover(t, c, s.peers, true)
	s.producer(0, 2).Send([]byte{7})
	if got := payloads(t, c); string(got) != "\x07" {
		t.Fatalf("got %v after the recovered claim", got)
	}
}
