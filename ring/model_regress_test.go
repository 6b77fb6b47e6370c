package ring

import (
	"testing"

	"github.com/shmbus/shmbus/layout"
)

// hookPeers runs a hook inside State, to place a peer's action between
// Recover's steps.
type hookPeers struct {
	*testPeers
	hook func(i int)
}

func (p *hookPeers) State(i int) PeerState {
	if p.hook != nil {
		p.hook(i)
	}
	return p.testPeers.State(i)
}

// Finding 1.1 (rule a): a producer publishes and dies after Recover
// loaded the length at c, before it read the producer's state: rule (a)
// pads over the published record.
func TestModelPublishThenDieDuringRecover(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 4096)
	victim, c := s.producer(0, 0), s.consumer(t, 0)
	b, err := victim.Reserve(8, layout.FragBegin|layout.FragEnd)
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 42
	hp := &hookPeers{testPeers: s.peers}
	hp.hook = func(i int) {
		if i == 0 && hp.hook != nil {
			hp.hook = nil
			victim.Commit()              // publishes
			s.peers.states[0] = PeerDead // and exits
		}
	}
	ok, err := c.Recover(hp)
	t.Logf("Recover = %v, %v", ok, err)
	got := payloads(t, c)
	if len(got) != 1 {
		t.Errorf("published record lost: got %v, want [42]", got)
	}
}

// Finding 1.2: lanes start at 0 and every claim record is reset to Pos 0. A
// producer that dies between its tail CAS and OK on the first claim of a
// lane is never recovered while any live slot still has Pos 0 (the
// consumer's own slot always does).
func TestModelRuleBAtPositionZero(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	c := s.consumer(t, 0)
	ClaimAt(s.seg, &s.g, 1, 0).Reset() // a live slot just taken (e.g. the consumer's own)
	s.peers.states[1] = PeerAlive
	setClaim(s, 0, 0, 64, 0, true) // died between CAS and OK
	s.peers.states[0] = PeerDead
	for i := 0; i < 3; i++ {
		ok, err := c.Recover(s.peers)
		t.Logf("Recover = %v, %v", ok, err)
		if ok {
			return
		}
	}
	t.Errorf("claim of a dead producer at position 0 never recovered while a live slot has a reset claim record")
}

// Finding 1.3: padding skipped by Peek is not released by Receive/Peek when
// nothing follows; the head lags behind and producers see the lane full
// while the consumer has nothing to read.
func TestModelTrailingPaddingNotReleased(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	n := p.MaxPayload()
	for i := 0; i < 8; i++ {
		if _, err := p.Reserve(n, layout.FragBegin|layout.FragEnd); err != nil {
			t.Logf("reserve %d: %v", i, err)
			break
		}
		p.Abort()
		// the consumer polls with Receive, as the bus's receive does
		var buf [4096]byte
		if _, _, err := c.Receive(buf[:]); err != ErrEmpty {
			t.Fatalf("Receive: %v", err)
		}
	}
	st := s.lanes[0].Stats()
	t.Logf("head %d tail %d pos %d ready %v inflight %v hasroom %v", st.Head, st.Tail, c.Position(), c.Ready(), c.InFlight(), p.HasRoom(RecordSize(8)))
	if !p.HasRoom(RecordSize(8)) && !c.Ready() && !c.InFlight() {
		t.Errorf("lane full with nothing to read: producers wait for room, the consumer for data")
	}
}

// Finding 1.1 (rule b). A dead slot left Pos = c, End = c+8 (it
// died between its claim record and its CAS). The live claimant of c
// publishes and starts its next claim between Recover's length load and
// its read of the claimant's slot; the dead slot's End falls on the
// payload of the published record, whose bytes are not zero, so it looks
// consistent: Recover pads over the published record.
func TestModelRuleBPadsOverPublished(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 4096)
	live, c := s.producer(0, 0), s.consumer(t, 0)
	setClaim(s, 1, 4096, 4096+8, 0, false) // died after set, before its CAS
	s.peers.states[1] = PeerDead
	b, err := live.Reserve(8, layout.FragBegin|layout.FragEnd) // [4096, 4112)
	if err != nil {
		t.Fatal(err)
	}
	b[0] = 42
	hp := &hookPeers{testPeers: s.peers}
	hp.hook = func(i int) {
		if i == 0 && hp.hook != nil {
			hp.hook = nil
			live.Commit()                                    // publishes [4096, 4112)
			live.Reserve(8, layout.FragBegin|layout.FragEnd) // next claim: Pos = 4112
		}
	}
	ok, err := c.Recover(hp)
	t.Logf("Recover = %v, %v", ok, err)
	live.Commit()
	var got []byte
	_, err = c.Poll(0, func(_ layout.Record, b []byte) { got = append(got, b[0]) })
	t.Logf("Poll: %v, %v", got, err)
	if len(got) == 0 || got[0] != 42 {
		t.Errorf("published record lost (got %v, err %v)", got, err)
	}
}
