package shmbus

import (
	"fmt"
	"os"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
)

func osGetpid() int { return os.Getpid() }

// LaneStats are the counters of one priority level.
type LaneStats struct {
	Head, Tail        uint64 // release and claim positions
	MsgsIn, BytesIn   uint64 // published by producers
	MsgsOut, BytesOut uint64 // taken by the consumer
	FullEvents        uint64 // claims that found the lane full
	Recovered         uint64 // dead producers' claims padded by the consumer
	SpaceSleeps       uint64 // producers' sleeps waiting for room
	SpaceWakes        uint64 // rings of the space doorbell that woke somebody
	DataWakes         uint64 // rings of the data doorbell after publishing here that woke the consumer
	SpaceSleepersNow  int    // producers asleep waiting for room now
	Capacity          uint64 // bytes of the lane
}

// Used is the number of ring bytes between head and tail (claimed or
// published and not yet released).
func (s LaneStats) Used() uint64 { return s.Tail - s.Head }

// Stats is a snapshot of a bus's statistics, readable by any attached
// process. Counters are added to the segment every 256 messages and when a
// producer or consumer goes idle or closes, so they lag slightly while
// traffic flows, and a peer killed in mid-flight never adds its last
// batch: MsgsIn-MsgsOut is not the number of messages waiting. For that,
// use Waiting, which counts them in the lanes. Head, Tail and Used are
// positions and always exact.
type Stats struct {
	Lanes          []LaneStats // index = priority
	ConsumerSleeps uint64      // times the consumer went to sleep
	ConsumerWakes  uint64      // times a producer woke it
	Dropped        uint64      // large messages the consumer could not hold and skipped (ErrDropped)
	Peers          []PeerInfo
}

// Depth is the number of ring bytes in use over all lanes.
func (s Stats) Depth() uint64 {
	var d uint64
	for _, l := range s.Lanes {
		d += l.Used()
	}
	return d
}

// Stats reads the bus's statistics.
func (b *Bus) Stats() (Stats, error) {
	if err := b.enter(); err != nil {
		return Stats{}, err
	}
	defer b.exit()
	var s Stats
	err := segment.Guard(func() error {
		for _, l := range b.lanes {
			s.Lanes = append(s.Lanes, LaneStats(l.Stats()))
		}
		s.ConsumerSleeps = layout.Word64(b.seg, layout.OffConsumerSleeps).Load()
		s.ConsumerWakes = layout.Word64(b.seg, layout.OffConsumerWakes).Load()
		s.Dropped = layout.Word64(b.seg, layout.OffDropped).Load()
		s.Peers = b.peers.list()
		return nil
	})
	return s, err
}

// LaneDepth is what waits in one lane, counted by walking its records.
type LaneDepth struct {
	Bytes    uint64 // ring bytes between head and tail: exact
	Messages uint64 // complete messages published (whole records and last fragments)
	// Unfinished counts messages whose fragments are in the lane but whose
	// last fragment is not (yet): a large message being sent, or one whose
	// producer gave up or died (the consumer drops it).
	Unfinished int
	// Unpublished is the ring bytes from the first claimed-but-unpublished
	// record to the tail: producers writing, or dead ones not yet
	// recovered. The walk cannot see past it, so Messages counts only what
	// lies before.
	Unpublished uint64
	// Unreadable is set when the walk met a record it could not decode (the
	// lane moved under it, or is damaged); the counts are of what came
	// before.
	Unreadable bool
}

// Waiting walks every lane (index = priority) between its release and
// claim positions and counts the messages there: published and not yet
// released by the consumer, so including one the consumer holds while it
// writes it out. Unlike the counters in Stats it cannot drift; while
// traffic flows it is a snapshot of moving positions. It reads the whole
// of every lane's used space: a cost proportional to the messages
// waiting, for inspection rather than hot paths.
func (b *Bus) Waiting() ([]LaneDepth, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	var d []LaneDepth
	err := segment.Guard(func() error {
		for _, l := range b.lanes {
			d = append(d, LaneDepth(l.Depth()))
		}
		return nil
	})
	if err != nil {
		return nil, busError(b.name, fmt.Errorf("waiting: %w", err))
	}
	return d, nil
}
