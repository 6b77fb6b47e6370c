package segment

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Room says how many bytes a new segment in dir ("" means Dir()) can take:
// the file system's free space for an unprivileged user (statfs f_bavail)
// and, where files live in memory (tmpfs, ramfs), also the memory the
// kernel says is available (MemAvailable in /proc/meminfo), whichever is
// less. what names the limit for messages: "free space" or "available
// memory".
func Room(dir string) (room uint64, what string, err error) {
	if dir == "" {
		dir = Dir()
	}
	var st unix.Statfs_t
	for {
		err = unix.Statfs(dir, &st)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	room, what = st.Bavail*uint64(st.Bsize), "free space"
	if st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		if avail, err := memAvailable(); err == nil && avail < room {
			room, what = avail, "available memory"
		}
	}
	return room, what, nil
}

// memAvailable is MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemAvailable:" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil || kb > 1<<54 {
				return 0, fmt.Errorf("/proc/meminfo: MemAvailable %q", f[1])
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no MemAvailable")
}
