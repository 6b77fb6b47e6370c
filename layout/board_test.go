package layout

import (
	"errors"
	"testing"
)

func TestPlanBoard(t *testing.T) {
	tests := []struct {
		name string
		c    BoardConfig
		cell uint64
		ok   bool
	}{
		{"64-byte values", BoardConfig{Cells: 16, MaxValue: 64, WakeMode: WakeFutex}, 640, true},
		{"keys only", BoardConfig{Cells: 1, MaxValue: 0, WakeMode: WakeSem}, 512, true},
		{"1 KiB values", BoardConfig{Cells: 256, MaxValue: 1024, WakeMode: WakeFutex}, 2560, true},
		{"no cells", BoardConfig{Cells: 0, MaxValue: 64, WakeMode: WakeFutex}, 0, false},
		{"too large a value", BoardConfig{Cells: 1, MaxValue: MaxBoardValue + 1, WakeMode: WakeFutex}, 0, false},
		{"too large a board", BoardConfig{Cells: MaxBoardCells, MaxValue: MaxBoardValue, WakeMode: WakeFutex}, 0, false},
		{"no wake mode", BoardConfig{Cells: 1, MaxValue: 1}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := PlanBoard(tc.c)
			if !tc.ok {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("got %v, want ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.CellSize != tc.cell || g.CellSize%CellAlign != 0 || g.TotalSize%PageSize != 0 {
				t.Fatalf("cell %d (want %d), total %d", g.CellSize, tc.cell, g.TotalSize)
			}
			if g.CopyOff(tc.c.Cells-1, 1)+g.CopySize > g.TotalSize {
				t.Fatal("last copy outside the segment")
			}
		})
	}
}

// TestBoardGolden pins the header bytes docs/layout.md describes.
func TestBoardGolden(t *testing.T) {
	g, err := PlanBoard(BoardConfig{Cells: 16, MaxValue: 64, WakeMode: WakeFutex})
	if err != nil {
		t.Fatal(err)
	}
	h := NewBoardHeader(g)
	h.Ready = ReadyValue
	b := make([]byte, HeaderSize)
	h.Encode(b)
	checks := []struct {
		off  int
		want []byte
	}{
		{0x000, []byte{0x89, 'S', 'H', 'M', 'B', 'R', 'D', '\n'}},
		{0x008, []byte{1, 0, 0, 0, 0x00, 0x10, 0, 0}},
		{0x010, le.AppendUint64(nil, 16384)},
		{0x01C, []byte{1, 0, 0, 0, 16, 0, 0, 0, 64, 0, 0, 0}},
		{0x028, []byte{0x80, 0x02, 0, 0, 0x80, 0, 0, 0}},
		{0x030, le.AppendUint64(nil, 4096)},
		{0x038, []byte{0xff, 0xff, 0xff, 0xff}},
		{0x07C, []byte{'R', 'E', 'D', 'Y'}},
	}
	for _, c := range checks {
		if got := b[c.off : c.off+len(c.want)]; string(got) != string(c.want) {
			t.Errorf("bytes at %#x: % x, want % x", c.off, got, c.want)
		}
	}
	d, err := DecodeBoardHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Validate(int64(g.TotalSize)); err != nil {
		t.Fatal(err)
	}
	copy(b, Magic[:])
	if _, err := DecodeBoardHeader(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a bus header as a board: %v", err)
	}
}

func FuzzBoardHeader(f *testing.F) {
	g, _ := PlanBoard(BoardConfig{Cells: 16, MaxValue: 64, WakeMode: WakeSem})
	h := NewBoardHeader(g)
	h.SemID = 3
	h.Ready = ReadyValue
	b := make([]byte, HeaderSize)
	h.Encode(b)
	f.Add(b[:0x80], int64(g.TotalSize))
	f.Add([]byte{}, int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		page := make([]byte, HeaderSize)
		copy(page, b)
		copy(page[8:], data) // everything past the magic is the fuzzer's
		h, err := DecodeBoardHeader(page)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("decode: %v wraps neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		g, err := h.Validate(size)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotReady) {
				t.Fatalf("validate: %v", err)
			}
			return
		}
		if g.CopyOff(g.Cells-1, 1)+g.CopySize > uint64(size) || g.TotalSize != uint64(size) {
			t.Fatalf("geometry %+v outside a %d-byte file", g, size)
		}
	})
}
