package shmbus

import (
	"fmt"
	"os"
	"time"

	"github.com/shmbus/shmbus/layout"
)

// WakeMode is how a sleeping peer is woken.
type WakeMode int

const (
	WakeFutex WakeMode = WakeMode(layout.WakeFutex) // Linux futexes in the segment (default on Linux)
	WakeSem   WakeMode = WakeMode(layout.WakeSem)   // a System V semaphore set made with the bus
)

func (m WakeMode) String() string { return layout.WakeMode(m).String() }

// Config is a bus's configuration, fixed when it was made: what Create's
// Options chose, with every default filled in, as the segment's header
// records it (and the file's mode as it is now).
type Config struct {
	Priorities       int          // priority levels (lanes)
	LaneCapacity     int          // bytes per lane
	RecordLimit      int          // largest record in a lane, its 8-byte header included
	MaxRecordPayload int          // largest message that fits in one record
	MaxMessage       int          // largest message
	Producers        ProducerMode // MultiProducer or SingleProducer
	Wake             WakeMode
	FailFast         bool        // a full lane fails Send with ErrFull instead of blocking
	PeerSlots        int         // peers that may be attached at once
	Mode             os.FileMode // permission bits of the segment file now (0 if they cannot be read)
	Created          time.Time
	CreatorPID       int
	Size             int64 // bytes of the segment
	FormatVersion    int   // the segment format's version (docs/layout.md)
	SemID            int   // the System V semaphore set's id in WakeSem mode; -1 otherwise

	// Subscriptions: the fan-out work adds the bus's subscription
	// configuration here.
}

// Config returns the bus's configuration. It reads the segment file's mode
// with fstat; everything else comes from the header the bus was attached
// with.
func (b *Bus) Config() Config {
	h := &b.hdr
	c := Config{
		Priorities:       len(b.g.Lanes),
		MaxRecordPayload: b.MaxRecordPayload(),
		MaxMessage:       int(h.MaxMessage),
		Producers:        SingleProducer,
		Wake:             WakeMode(h.WakeMode),
		FailFast:         h.Flags&layout.FlagFailFast != 0,
		PeerSlots:        int(h.PeerSlots),
		Created:          time.Unix(0, h.CreatedNano),
		CreatorPID:       int(h.CreatorPID),
		Size:             int64(h.TotalSize),
		FormatVersion:    int(h.Version),
		SemID:            -1,
	}
	if len(h.Lanes) > 0 {
		c.LaneCapacity = int(h.Lanes[0].Capacity)
		c.RecordLimit = int(h.Lanes[0].RecordLimit)
	}
	if h.Flags&layout.FlagMultiProducer != 0 {
		c.Producers = MultiProducer
	}
	if h.WakeMode == layout.WakeSem {
		c.SemID = int(h.SemID)
	}
	if fi, err := b.m.File().Stat(); err == nil {
		c.Mode = fi.Mode().Perm()
	}
	return c
}

func (m ProducerMode) String() string {
	switch m {
	case MultiProducer:
		return "multi"
	case SingleProducer:
		return "single"
	}
	return fmt.Sprintf("producers(%d)", int(m))
}
