//go:build !linux

package segment

import "os"

// allocate gives f exactly size bytes. Without fallocate the blocks are not
// reserved: on these systems a full file system shows up when pages are
// first touched (prefault does that under Guard).
func allocate(f *os.File, size int64, step func() error) error { return f.Truncate(size) }

// prefault faults in every page of b by reading one byte a page under
// Guard.
func prefault(b []byte, creating bool) error {
	return Guard(func() error { touchPages(b); return nil })
}
