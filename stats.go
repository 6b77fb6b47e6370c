package shmbus

import (
	"os"

	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

func osGetpid() int { return os.Getpid() }

// LaneStats are the counters of one priority level.
type LaneStats = ring.Stats

// Stats is a snapshot of a bus's statistics, readable by any attached
// process. Counters are added to the segment every 256 messages and when a
// producer or consumer goes idle or closes, so they lag slightly while
// traffic flows.
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
			s.Lanes = append(s.Lanes, l.Stats())
		}
		s.ConsumerSleeps = layout.Word64(b.seg, layout.OffConsumerSleeps).Load()
		s.ConsumerWakes = layout.Word64(b.seg, layout.OffConsumerWakes).Load()
		s.Dropped = layout.Word64(b.seg, layout.OffDropped).Load()
		s.Peers = b.peers.list()
		return nil
	})
	return s, err
}
