package layout

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func goldenConfig() Config {
	return Config{Lanes: 3, LaneCapacity: 8192, PeerSlots: 5, MaxMessage: 1 << 24,
		Flags: FlagMultiProducer, WakeMode: WakeSem}
}

// TestGoldenHeader pins format v2 for a queue bus: the header page of a fixed
// configuration, byte for byte. A change here is a format change and needs
// a new version number.
func TestGoldenHeader(t *testing.T) {
	g, err := Plan(goldenConfig())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHeader(g)
	h.SemID = 0x1234
	h.SemCookie = 777
	h.CreatedNano = 0x0102030405060708
	h.CreatorPID = 4242
	h.CreatorStart = 99
	h.Ready = ReadyValue
	b := make([]byte, HeaderSize)
	h.Encode(b)
	// Only the used prefix: magic .. lane table.
	used := b[:LaneTableOffset+len(g.Lanes)*LaneEntrySize]
	got := hex.Dump(used)
	path := filepath.Join("testdata", "header-v2.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("header v2 bytes changed:\n%s\nwant:\n%s", got, want)
	}
	if !bytes.Equal(b[len(used):], make([]byte, HeaderSize-len(used))) {
		t.Fatal("bytes after the lane table are not zero")
	}
	// The geometry is pinned too.
	want2 := Geometry{Config: g.Config, PeerTableOff: 0x8000, PeerSlotSize: 256, TotalSize: 0x9000}
	if g.PeerTableOff != want2.PeerTableOff || g.PeerSlotSize != want2.PeerSlotSize || g.TotalSize != want2.TotalSize {
		t.Fatalf("geometry %+v", g)
	}
	for i, e := range g.Lanes {
		want := LaneEntry{CtrlOff: 0x1000 + uint64(i)*0x200, DataOff: 0x2000 + uint64(i)*0x2000, Capacity: 8192, RecordLimit: 1024}
		if e != want {
			t.Fatalf("lane %d: %+v, want %+v", i, e, want)
		}
	}
	if PeerSlotSize(64) != 2176 || (Record{Length: 9, Type: TypeData, Flags: 3, Producer: 0x0102}).Meta() != 0x01020301 {
		t.Fatal("slot size or record meta encoding changed")
	}
}

func validHeader(t *testing.T) ([]byte, Geometry) {
	g, err := Plan(goldenConfig())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHeader(g)
	h.SemID = 1
	h.Ready = ReadyValue
	b := make([]byte, HeaderSize)
	h.Encode(b)
	return b, g
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(b []byte)
		size   int64
		want   error
	}{
		{"valid", func([]byte) {}, 0x9000, nil},
		{"bad magic", func(b []byte) { b[1] = 'X' }, 0x9000, ErrCorrupt},
		{"version 1", func(b []byte) { le.PutUint32(b[OffVersion:], 1) }, 0x9000, ErrVersion},
		{"version 3", func(b []byte) { le.PutUint32(b[OffVersion:], 3) }, 0x9000, ErrVersion},
		{"subscriptions on a queue", func(b []byte) { le.PutUint32(b[OffSubSlots:], 1) }, 0x9000, ErrCorrupt},
		{"subscriptions 2^32-1", func(b []byte) { le.PutUint32(b[OffSubSlots:], 0xFFFFFFFF) }, 0x9000, ErrCorrupt},
		{"subscription table on a queue", func(b []byte) { le.PutUint64(b[OffSubTable:], 0x9000) }, 0x9000, ErrCorrupt},
		{"subscription entry size on a queue", func(b []byte) { le.PutUint32(b[OffSubEntrySize:], 128) }, 0x9000, ErrCorrupt},
		{"not ready", func(b []byte) { le.PutUint32(b[OffReady:], 0) }, 0x9000, ErrNotReady},
		{"file shorter", func([]byte) {}, 0x8000, ErrCorrupt},
		{"file longer", func([]byte) {}, 0xA000, ErrCorrupt},
		{"total size lies", func(b []byte) { le.PutUint64(b[OffTotalSize:], 0x10000) }, 0x10000, ErrCorrupt},
		{"lane count 0", func(b []byte) { le.PutUint32(b[OffLaneCount:], 0) }, 0x9000, ErrCorrupt},
		{"lane count 65", func(b []byte) { le.PutUint32(b[OffLaneCount:], 65) }, 0x9000, ErrCorrupt},
		{"lane moved", func(b []byte) { le.PutUint64(b[LaneTableOffset+8:], 0x2008) }, 0x9000, ErrCorrupt},
		{"capacity not power of two", func(b []byte) { le.PutUint64(b[LaneTableOffset+16:], 8000) }, 0x9000, ErrCorrupt},
		{"lanes differ", func(b []byte) { le.PutUint64(b[LaneTableOffset+32+16:], 4096) }, 0x9000, ErrCorrupt},
		{"huge capacity", func(b []byte) { le.PutUint64(b[LaneTableOffset+16:], 1<<62) }, 0x9000, ErrCorrupt},
		{"record limit too big", func(b []byte) { le.PutUint32(b[LaneTableOffset+24:], 8192) }, 0x9000, ErrCorrupt},
		{"unknown flag", func(b []byte) { le.PutUint32(b[OffFlags:], 1<<7) }, 0x9000, ErrCorrupt},
		{"wake mode 9", func(b []byte) { le.PutUint32(b[OffWakeMode:], 9) }, 0x9000, ErrCorrupt},
		{"sem without set", func(b []byte) { le.PutUint32(b[OffSemID:], 0xFFFFFFFF) }, 0x9000, ErrCorrupt},
		{"peer table moved", func(b []byte) { le.PutUint64(b[OffPeerTable:], 0x100) }, 0x9000, ErrCorrupt},
		{"peer slots 0", func(b []byte) { le.PutUint32(b[OffPeerSlots:], 0) }, 0x9000, ErrCorrupt},
		{"header size", func(b []byte) { le.PutUint32(b[OffHeaderSize:], 8192) }, 0x9000, ErrCorrupt},
		{"control block size", func(b []byte) { le.PutUint32(b[OffCtrlSize:], 64) }, 0x9000, ErrCorrupt},
		{"reserved lane flags", func(b []byte) { le.PutUint32(b[LaneTableOffset+28:], 1) }, 0x9000, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := validHeader(t)
			tc.mutate(b)
			h, err := DecodeHeader(b)
			if err == nil {
				_, err = h.Validate(tc.size)
			}
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := DecodeHeader(make([]byte, 100)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short header: %v", err)
	}
}

func TestConfigLimits(t *testing.T) {
	ok := Config{Lanes: 1, LaneCapacity: 1024, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex}
	if _, err := Plan(ok); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{
		{Lanes: 0, LaneCapacity: 1024, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 1000, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 512, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 2 << 30, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 1024, PeerSlots: 0, MaxMessage: 1, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 1024, PeerSlots: 1, MaxMessage: 0, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 1024, RecordLimit: 1020, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex},
		{Lanes: 1, LaneCapacity: 1024, PeerSlots: 1, MaxMessage: 1, WakeMode: 3},
	} {
		if _, err := Plan(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
	if !strings.Contains(WakeSem.String(), "sem") || WakeMode(7).String() != "wake(7)" {
		t.Fatal("wake mode names")
	}
}

func TestRecordCheck(t *testing.T) {
	for _, tc := range []struct {
		r    Record
		off  uint64
		span uint64
		ok   bool
	}{
		{Record{Length: 9, Type: TypeData, Flags: FragBegin | FragEnd}, 0, 16, true},
		{Record{Length: 16, Type: TypePadding}, 1008, 16, true},
		{Record{Length: 24, Type: TypePadding}, 1008, 0, false},
		{Record{Length: 9, Type: TypeData, Flags: FragEnd}, 0, 16, true},
		{Record{Length: 8, Type: TypeData, Flags: 3}, 0, 8, true},
		{Record{Length: 7, Type: TypeData, Flags: 3}, 0, 0, false},
		{Record{Length: 200, Type: TypeData, Flags: 3}, 0, 0, false},
	} {
		span, err := tc.r.Check(tc.off, 1024, 128)
		if (err == nil) != tc.ok || span != tc.span {
			t.Errorf("%+v at %d: span %d err %v", tc.r, tc.off, span, err)
		}
	}
}

// FuzzHeader decodes and validates arbitrary header pages against
// arbitrary file sizes: never a panic, and a geometry that passes stays
// inside the file.
func FuzzHeader(f *testing.F) {
	g, _ := Plan(goldenConfig())
	h := NewHeader(g)
	h.SemID = 1
	h.Ready = ReadyValue
	b := make([]byte, HeaderSize)
	h.Encode(b)
	f.Add(b, int64(g.TotalSize))
	fc := goldenConfig()
	fc.Subscriptions = 3
	fg, _ := Plan(fc)
	fh := NewHeader(fg)
	fh.SemID = 1
	fh.Ready = ReadyValue
	fb := make([]byte, HeaderSize)
	fh.Encode(fb)
	f.Add(fb, int64(fg.TotalSize))
	f.Add(b[:200], int64(0))
	f.Add([]byte{}, int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		page := make([]byte, HeaderSize)
		copy(page, data)
		if len(data) < 8 {
			copy(page, Magic[:])
		}
		h, err := DecodeHeader(page)
		if err != nil {
			return
		}
		g, err := h.Validate(size)
		if err != nil {
			return
		}
		for _, e := range g.Lanes {
			if e.DataOff+e.Capacity > uint64(size) || e.CtrlOff+CtrlSize > e.DataOff {
				t.Fatalf("lane %+v outside a %d-byte file", e, size)
			}
		}
		if g.PeerTableOff+uint64(g.PeerSlots)*g.PeerSlotSize > uint64(size) {
			t.Fatalf("peer table outside the file")
		}
		if g.Subscriptions > 0 && (g.SubTableOff < g.PeerTableOff+uint64(g.PeerSlots)*g.PeerSlotSize ||
			g.SubTableOff+uint64(g.Subscriptions)*g.SubEntrySize > uint64(size)) {
			t.Fatalf("subscription table outside the file")
		}
	})
}

// TestGoldenFanOut pins the fan-out additions of format v2: the header
// words naming the subscription table, and where the table and its entries
// lie for a fixed configuration.
func TestGoldenFanOut(t *testing.T) {
	c := goldenConfig()
	c.Subscriptions = 3
	g, err := Plan(c)
	if err != nil {
		t.Fatal(err)
	}
	// 3 lanes: entries of 128 + 3*16 bytes, rounded to 256; the table
	// starts on the page after the peer table (which ends at 0x8500).
	if g.PeerTableOff != 0x8000 || g.SubTableOff != 0x9000 || g.SubEntrySize != 256 || g.TotalSize != 0xA000 {
		t.Fatalf("geometry: peer table %#x, subscription table %#x of %d-byte entries, total %#x",
			g.PeerTableOff, g.SubTableOff, g.SubEntrySize, g.TotalSize)
	}
	if g.SubOff(2) != 0x9200 || g.SubLaneOff(1, 2) != 0x9100+0x80+0x20 {
		t.Fatalf("entry offsets %#x %#x", g.SubOff(2), g.SubLaneOff(1, 2))
	}
	h := NewHeader(g)
	h.SemID = 1
	h.Ready = ReadyValue
	b := make([]byte, HeaderSize)
	h.Encode(b)
	want := "03000000" + "00010000" + "0090000000000000"
	if got := hex.EncodeToString(b[OffSubSlots : OffSubTable+8]); got != want {
		t.Fatalf("subscription words % x, want %s", b[OffSubSlots:OffSubTable+8], want)
	}
	h2, err := DecodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Validate(int64(g.TotalSize)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint32{0, 17, 65} {
		le.PutUint32(b[OffSubSlots:], n)
		h3, _ := DecodeHeader(b)
		if _, err := h3.Validate(int64(g.TotalSize)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d subscriptions in a 3-subscription segment: %v", n, err)
		}
	}
	if SubEntrySize(64) != 1152 || SubEntrySize(1) != 256 {
		t.Fatal("entry size changed")
	}
	if _, err := Plan(Config{Lanes: 1, LaneCapacity: 1024, PeerSlots: 1, MaxMessage: 1, WakeMode: WakeFutex, Subscriptions: 65}); !errors.Is(err, ErrConfig) {
		t.Fatalf("65 subscriptions: %v", err)
	}
}
