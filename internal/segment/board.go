package segment

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/shmbus/shmbus/layout"
)

// BoardPrefix is the start of every board segment's file name. Boards and
// buses have names of their own: a board and a bus may both be called
// "config", and List never shows a board.
const BoardPrefix = "shmbus-board."

// BoardPath is the segment file of board name in dir ("" means Dir()). It
// does not validate name; call ValidateName first.
func BoardPath(dir, name string) string {
	if dir == "" {
		dir = Dir()
	}
	return filepath.Join(dir, BoardPrefix+name)
}

// OpenBoard maps the existing board segment at path and validates its
// header against the real file size, with the guarantees and errors of
// Open. A bus segment there is ErrCorrupt ("a bus, not a board").
func OpenBoard(path string, wait time.Duration) (*Mapping, layout.BoardHeader, layout.BoardGeometry, error) {
	f, err := openPath(path)
	if err == nil {
		var m *Mapping
		var h layout.BoardHeader
		var g layout.BoardGeometry
		if m, h, g, err = openBoard(f, path, false, wait); err == nil {
			return m, h, g, nil
		}
		f.Close()
	}
	return nil, layout.BoardHeader{}, layout.BoardGeometry{}, fmt.Errorf("open board segment %q: %w", path, err)
}

// OpenBoardFD is OpenBoard for a board open in f (a memfd board handed over
// by another process, say); as OpenFD, f is not kept.
func OpenBoardFD(f *os.File, label string, wait time.Duration) (*Mapping, layout.BoardHeader, layout.BoardGeometry, error) {
	if label == "" {
		label = fmt.Sprintf("fd:%d", f.Fd())
	}
	dup, err := dupDescriptor(f, label)
	if err == nil {
		var m *Mapping
		var h layout.BoardHeader
		var g layout.BoardGeometry
		if m, h, g, err = openBoard(dup, label, true, wait); err == nil {
			return m, h, g, nil
		}
		dup.Close()
	}
	return nil, layout.BoardHeader{}, layout.BoardGeometry{}, fmt.Errorf("open board segment %q: %w", label, err)
}

func openBoard(f *os.File, path string, anon bool, wait time.Duration) (*Mapping, layout.BoardHeader, layout.BoardGeometry, error) {
	var h layout.BoardHeader
	var g layout.BoardGeometry
	mm, err := attachKind(f, wait, boardKind, func(page []byte, size int64) (uint64, error) {
		var err error
		if h, err = layout.DecodeBoardHeader(page); err != nil {
			return 0, err
		}
		if g, err = h.Validate(size); err != nil {
			return 0, err
		}
		return h.TotalSize, nil
	})
	if err != nil {
		return nil, h, g, err
	}
	return &Mapping{mm: mm, file: f, path: path, anon: anon}, h, g, nil
}

// ListBoards returns the names, sorted, of the board segment files in dir
// ("" means Dir()).
func ListBoards(dir string) ([]string, error) {
	if dir == "" {
		dir = Dir()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list boards: %w", err)
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), BoardPrefix)
		if !ok || ValidateName(name) != nil || !e.Type().IsRegular() {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}
