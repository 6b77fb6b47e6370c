package segment

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14), spelled out for
// older copies of x/sys.
const madvPopulateWrite = 23

// allocate gives f exactly size bytes with every block reserved, so running
// out of room fails here instead of as SIGBUS on first touch. File systems
// without fallocate get a plain ftruncate. It reserves createChunk bytes at
// a time and calls step (if not nil) after each: an error from step stops it.
func allocate(f *os.File, size int64, step func() error) error {
	fd := int(f.Fd())
	var err error
	for off := int64(0); off < size && err == nil; {
		n := min(createChunk, size-off)
		for {
			err = unix.Fallocate(fd, 0, off, n)
			if err != unix.EINTR {
				break
			}
		}
		if err == nil {
			off += n
			if step != nil && off < size {
				if err := step(); err != nil {
					return err
				}
			}
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("%w: fallocate %d bytes: %w", ErrNoSpace, size, err)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		if err := f.Truncate(size); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return fmt.Errorf("%w: %w", ErrNoSpace, err)
			}
			return err
		}
		return nil
	default:
		return fmt.Errorf("fallocate %d bytes: %w", size, err)
	}
}

// prefault faults in every page of b, for writing where the kernel can
// (MADV_POPULATE_WRITE), else by reading one byte a page under Guard.
// creating says b is a new segment: a failure to populate then means the
// file system is out of room, else that the file was truncated.
func prefault(b []byte, creating bool) error {
	var err error
	for {
		err = unix.Madvise(b, madvPopulateWrite)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		// Kernel older than 5.14.
		return Guard(func() error { touchPages(b); return nil })
	case errors.Is(err, unix.ENOMEM), creating && errors.Is(err, unix.EFAULT):
		return fmt.Errorf("%w: prefault %d bytes: %w", ErrNoSpace, len(b), err)
	case errors.Is(err, unix.EFAULT):
		return fmt.Errorf("%w: prefault %d bytes: %w", ErrTruncated, len(b), err)
	default:
		return fmt.Errorf("prefault %d bytes: %w", len(b), err)
	}
}
