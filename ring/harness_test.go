package ring

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/sem"
)

// forModes runs f once per wake mode.
func forModes(t *testing.T, f func(t *testing.T, mode layout.WakeMode)) {
	for _, m := range []layout.WakeMode{layout.WakeFutex, layout.WakeSem} {
		t.Run(m.String(), func(t *testing.T) { f(t, m) })
	}
}

// testPeers is a peer table whose states the test decides.
type testPeers struct {
	seg    []byte
	g      *layout.Geometry
	states []PeerState
}

func (p *testPeers) Slots() int              { return len(p.states) }
func (p *testPeers) State(i int) PeerState   { return p.states[i] }
func (p *testPeers) Claim(i, lane int) Claim { return ClaimAt(p.seg, p.g, i, lane) }

// testSeg is a segment in an anonymous shared mapping (outside the Go heap,
// like a real one), with its lanes, data doorbell and peers.
type testSeg struct {
	seg   []byte
	g     layout.Geometry
	lanes []*Lane
	data  *Doorbell
	peers *testPeers
}

func newTestSeg(t testing.TB, cfg layout.Config, start uint64) *testSeg {
	t.Helper()
	if cfg.PeerSlots == 0 {
		cfg.PeerSlots = 8
	}
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = 1 << 20
	}
	if cfg.WakeMode == 0 {
		cfg.WakeMode = layout.WakeFutex
	}
	g, err := layout.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := unix.Mmap(-1, 0, int(g.TotalSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(seg) })
	h := layout.NewHeader(g)
	h.Encode(seg)
	s := &testSeg{seg: seg, g: g}
	sleeper := func(int) Sleeper { return futex.Sleeper{} }
	if cfg.WakeMode == layout.WakeSem {
		set, err := sem.Create(1+len(g.Lanes), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { set.Remove() })
		sleeper = func(i int) Sleeper { return set.Sleeper(i) }
	}
	for i := range g.Lanes {
		InitLane(seg, &g, i, start)
		s.lanes = append(s.lanes, NewLane(seg, &g, i, sleeper(1+i)))
	}
	s.data = NewDoorbell(seg, layout.OffDataSeq, sleeper(0), layout.Word64(seg, layout.OffConsumerSleeps), layout.Word64(seg, layout.OffConsumerWakes))
	s.peers = &testPeers{seg: seg, g: &s.g, states: make([]PeerState, cfg.PeerSlots)}
	return s
}

func (s *testSeg) producer(lane, slot int) *Producer {
	s.peers.states[slot] = PeerAlive
	return NewProducer(s.lanes[lane], uint16(slot), ClaimAt(s.seg, &s.g, slot, lane), s.data)
}

func (s *testSeg) consumer(t testing.TB, lane int) *Consumer {
	c, err := NewConsumer(s.lanes[lane])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Payloads carry producer id, sequence number and a CRC of the rest, so a
// consumer can check every one for loss, duplication, order and corruption.
const msgHeader = 16

func fillMsg(b []byte, producer, seq uint32) {
	binary.LittleEndian.PutUint32(b[0:], producer)
	binary.LittleEndian.PutUint32(b[4:], seq)
	x := seq*2654435761 + producer
	for i := msgHeader; i < len(b); i++ {
		x = x*1103515245 + 12345
		b[i] = byte(x >> 16)
	}
	binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[msgHeader:]))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(b)))
}

// checkMsg returns producer and sequence of a payload made by fillMsg.
func checkMsg(t testing.TB, b []byte) (uint32, uint32) {
	t.Helper()
	if len(b) < msgHeader {
		t.Fatalf("payload of %d bytes", len(b))
	}
	if n := binary.LittleEndian.Uint32(b[12:]); int(n) != len(b) {
		t.Fatalf("payload length %d, carried %d", len(b), n)
	}
	if c := crc32.ChecksumIEEE(b[msgHeader:]); c != binary.LittleEndian.Uint32(b[8:]) {
		t.Fatalf("payload checksum mismatch (producer %d seq %d)", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]))
	}
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
}
