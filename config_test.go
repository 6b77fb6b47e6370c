package shmbus

import (
	"github.com/shmbus/shmbus/layout"
	"testing"
	"time"
)

// TestConfig checks that Config reports what Create was asked for, with
// the defaults filled in.
func TestConfig(t *testing.T) {
	before := time.Now()
	b := newBus(t, &Options{Priorities: 3, LaneCapacity: 64 << 10, RecordLimit: 4096, MaxMessage: 1 << 20,
		Producers: SingleProducer, FailFast: true, Wake: WakeSem, Mode: 0o640, PeerSlots: 8})
	c := b.Config()
	want := Config{Priorities: 3, LaneCapacity: 64 << 10, RecordLimit: 4096, MaxRecordPayload: 4096 - 8,
		MaxMessage: 1 << 20, Producers: SingleProducer, Wake: WakeSem, FailFast: true, PeerSlots: 8, Mode: 0o640,
		Created: c.Created, CreatorPID: c.CreatorPID, Size: c.Size, FormatVersion: layout.Version, SemID: c.SemID}
	if c != want {
		t.Errorf("Config() = %+v, want %+v", c, want)
	}
	if c.Created.Before(before.Add(-time.Second)) || c.Created.After(time.Now()) || c.CreatorPID != selfIdentity().PID || c.SemID < 0 {
		t.Errorf("Config() = %+v: created, creator or semaphore set id wrong", c)
	}
	if size, err := SegmentSize(&Options{Priorities: 3, LaneCapacity: 64 << 10, RecordLimit: 4096, PeerSlots: 8}); err != nil || c.Size != size {
		t.Errorf("Config().Size = %d, SegmentSize says %d (%v)", c.Size, size, err)
	}

	d := newBus(t, nil).Config()
	if d.Priorities != 1 || d.LaneCapacity != DefaultLaneCapacity || d.MaxMessage != DefaultMaxMessage ||
		d.Producers != MultiProducer || d.Wake != DefaultWake || d.FailFast || d.PeerSlots != DefaultPeerSlots ||
		d.Mode != DefaultMode || (d.Wake == WakeSem) != (d.SemID >= 0) {
		t.Errorf("Config() of a default bus = %+v", d)
	}
}
