// Package testutil holds what several packages' tests need alike: the
// child-process role dispatch of TestMain (RunRole), checks
// that a test run left no segment files or System V semaphore sets behind,
// and a buffer a child process writes while the test reads it. Only tests
// import it.
package testutil

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// ShmFiles lists the shmbus segment files (buses and boards) in /dev/shm.
func ShmFiles() []string {
	m, _ := filepath.Glob("/dev/shm/shmbus.*")
	b, _ := filepath.Glob("/dev/shm/shmbus-board.*")
	return append(m, b...)
}

// LiveSems returns the ids among ids of System V semaphore sets that still
// exist (nil where /proc/sysvipc/sem cannot be read).
func LiveSems(ids []int) []int {
	data, err := os.ReadFile("/proc/sysvipc/sem")
	if err != nil {
		return nil
	}
	live := map[int]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 1 {
			if id, err := strconv.Atoi(f[1]); err == nil {
				live[id] = true
			}
		}
	}
	var out []int
	for _, id := range ids {
		if live[id] {
			out = append(out, id)
		}
	}
	return out
}

// SyncBuffer is a bytes.Buffer safe for a process to write while a test
// reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
