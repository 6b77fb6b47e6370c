package segment

import (
	"fmt"
	"math"
	"os"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// Seals of a sealed memfd segment: its size is fixed for ever, and no
// further seal can be added (F_SEAL_FUTURE_WRITE would lock out every new
// peer).
const memfdSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// CreateMemfd makes an anonymous segment of exactly size bytes in a memfd
// called Prefix+name (the name is only a label, seen in /proc/PID/fd), maps
// it read-write shared and prefaults it, like Create. With seal, the memfd is
// sealed against shrinking and growing (and against further seals), so no
// process it is handed to can truncate it under the others. Its Path is
// "memfd:" followed by the label.
func CreateMemfd(name string, size int64, seal bool) (*Mapping, error) {
	m, err := createMemfd(name, size, seal)
	if err != nil {
		return nil, fmt.Errorf("create memfd segment %q: %w", name, err)
	}
	return m, nil
}

func createMemfd(name string, size int64, seal bool) (_ *Mapping, err error) {
	if size <= 0 || uint64(size) > math.MaxInt {
		return nil, fmt.Errorf("%w: size %d", os.ErrInvalid, size)
	}
	label := Prefix + name
	fd, err := unix.MemfdCreate(label, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	path := "memfd:" + label
	f := os.NewFile(uintptr(fd), path)
	var mm mmap.MMap
	defer func() {
		if err != nil {
			if mm != nil {
				_ = mm.Unmap()
			}
			_ = f.Close()
		}
	}()
	if err := allocate(f, size, nil); err != nil {
		return nil, err
	}
	if seal {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, memfdSeals); err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
	}
	mm, err = mmap.MapRegion(f, int(size), mmap.RDWR, 0, 0)
	if err != nil {
		mm = nil
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	if err := prefault(mm, true); err != nil {
		return nil, err
	}
	return &Mapping{mm: mm, file: f, path: path, anon: true}, nil
}

// Seals returns the seals of the segment's file (F_GET_SEALS): a bit set of
// unix.F_SEAL_*, 0 for a file that is not a sealable memfd.
func (m *Mapping) Seals() (int, error) {
	s, err := unix.FcntlInt(m.file.Fd(), unix.F_GET_SEALS, 0)
	if err == unix.EINVAL {
		return 0, nil
	}
	return s, err
}
