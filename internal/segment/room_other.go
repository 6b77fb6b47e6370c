//go:build !linux

package segment

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Room says how many bytes a new segment in dir ("" means Dir()) can take:
// the file system's free space for an unprivileged user (statfs f_bavail).
func Room(dir string) (room uint64, what string, err error) {
	if dir == "" {
		dir = Dir()
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), "free space", nil
}
