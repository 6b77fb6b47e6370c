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

// TestCheckEveryFault damages two lanes and the role word at once: Check
// names all three faults, not only the first, and Bus.Check agrees.
func TestCheckEveryFault(t *testing.T) {
	bus := newBus(t, &Options{Priorities: 2, LaneCapacity: 4096})
	f, err := os.OpenFile(bus.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	writeU64(f, int64(bus.g.Lanes[0].CtrlOff+layout.CtrlTail), ^uint64(7))
	writeU32(f, int64(bus.g.Lanes[1].DataOff+128), 16)
	writeU32(f, layout.OffConsumer, 5000)
	for _, check := range []struct {
		name string
		run  func() error
	}{{"Check", func() error { return Check("", bus.Name()) }}, {"Bus.Check", bus.Check}} {
		err := check.run()
		var ce *CheckError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s = %v, want a *CheckError wrapping ErrCorrupt", check.name, err)
		}
		want := []string{"consumer role word 5000", "lane 0: segment corrupt: tail", "lane 1: segment corrupt: non-zero record header at position 128"}
		if len(ce.Faults) != len(want) {
			t.Fatalf("%s found %d faults, want %d: %v", check.name, len(ce.Faults), len(want), err)
		}
		for i, w := range want {
			if !strings.Contains(ce.Faults[i].Error(), w) || !errors.Is(ce.Faults[i], ErrCorrupt) {
				t.Errorf("%s fault %d = %v, want ErrCorrupt naming %q", check.name, i, ce.Faults[i], w)
			}
		}
	}
}

// TestCheckMemfd checks a memfd bus, which has no name to open, through
// its handle.
func TestCheckMemfd(t *testing.T) {
	bus, err := Create("check-memfd", &Options{Memfd: true, LaneCapacity: 4096})
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	p, _ := bus.NewProducer()
	if err := p.TrySend([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if err := bus.Check(); err != nil {
		t.Fatalf("consistent memfd bus: %v", err)
	}
	layout.Word32(bus.seg, bus.g.Lanes[0].DataOff+4096-8).Store(16) // a header in free space
	if err := bus.Check(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged memfd bus: %v", err)
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
