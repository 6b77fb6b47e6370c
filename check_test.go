package shmbus

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/shmbus/shmbus/layout"
)

func TestCheck(t *testing.T) {
	b := newBus(t, &Options{Priorities: 2, LaneCapacity: 4096})
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	for i := 0; i < 1000; i++ { // several laps, then leave some messages
		p.TrySend(make([]byte, 1+i%300), i%2)
		if i < 990 {
			c.TryReceive(make([]byte, 512))
		}
	}
	if _, err := p.Reserve(1, 40); err != nil { // a claim being written is no fault
		t.Fatal(err)
	}
	if err := Check("", b.Name()); err != nil {
		t.Fatalf("consistent bus: %v", err)
	}
	p.Commit()

	cases := []struct {
		name  string
		write func(f *os.File, g *layout.Geometry)
		want  string
	}{
		{"garbage record", func(f *os.File, g *layout.Geometry) {
			head := readU64(f, int64(g.Lanes[1].CtrlOff+layout.CtrlHead))
			writeU32(f, int64(g.Lanes[1].DataOff+head%4096), 999999)
		}, "lane 1: record at position"},
		{"tail before head", func(f *os.File, g *layout.Geometry) {
			writeU64(f, int64(g.Lanes[0].CtrlOff+layout.CtrlTail), ^uint64(7)) // before the head
		}, "lane 0: segment corrupt: tail"},
		{"header in free space", func(f *os.File, g *layout.Geometry) {
			tail := readU64(f, int64(g.Lanes[0].CtrlOff+layout.CtrlTail))
			writeU32(f, int64(g.Lanes[0].DataOff+(tail+64)%4096), 16)
		}, "in free space"},
		{"consumer role out of range", func(f *os.File, g *layout.Geometry) {
			writeU32(f, layout.OffConsumer, 5000)
		}, "consumer role word"},
		{"bad magic", func(f *os.File, g *layout.Geometry) { f.WriteAt([]byte("XXXX"), 0) }, "bad magic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bus := newBus(t, &Options{Priorities: 2, LaneCapacity: 4096})
			p, _ := bus.NewProducer()
			for i := 0; i < 5; i++ {
				p.TrySend([]byte("some messages"), i%2)
			}
			f, err := os.OpenFile(bus.Path(), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tc.write(f, &bus.g)
			err = Check("", bus.Name())
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want ErrCorrupt naming %q", err, tc.want)
			}
		})
	}
	if err := Check("", "no-such-bus"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing bus: %v", err)
	}
}

func readU64(f *os.File, off int64) uint64 {
	var b [8]byte
	f.ReadAt(b[:], off)
	return binary.LittleEndian.Uint64(b[:])
}

func writeU64(f *os.File, off int64, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	f.WriteAt(b[:], off)
}

func writeU32(f *os.File, off int64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	f.WriteAt(b[:], off)
}

// A fragment naming a producer slot the bus does not have is corruption,
// reported as an error, never a crash.
func TestHostileProducerField(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 4096})
	c, _ := b.NewConsumer()
	f, _ := os.OpenFile(b.Path(), os.O_RDWR, 0)
	defer f.Close()
	e := b.g.Lanes[0]
	writeU32(f, int64(e.DataOff+4), layout.TypeData|layout.FragBegin<<8|5000<<16)
	writeU64(f, int64(e.DataOff+8), 1<<20) // total length of the "message"
	writeU32(f, int64(e.DataOff), 24)
	writeU64(f, int64(e.CtrlOff+layout.CtrlTail), 24)
	if _, _, err := c.TryReceive(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fragment from slot 5000: %v", err)
	}
}
