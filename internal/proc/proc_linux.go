package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
)

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return stat{}, fmt.Errorf("read stat of pid %d: %w: %w", pid, ErrNoProcess, err)
		}
		return stat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return stat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	if st.pid != pid {
		return stat{}, fmt.Errorf("parse /proc/%d/stat: %w: pid field is %d", pid, errMalformed, st.pid)
	}
	return st, nil
}

var self = sync.OnceValues(func() (Identity, error) { return Lookup(os.Getpid()) })

// Self returns the identity of the calling process. The result is computed once and cached.
func Self() (Identity, error) { return self() }

// Lookup returns the identity of the process with the given pid (zombies included), or an
// error wrapping ErrNoProcess if there is none.
func Lookup(pid int) (Identity, error) {
	if pid <= 0 {
		return Identity{}, fmt.Errorf("proc: invalid pid %d: %w", pid, ErrNoProcess)
	}
	st, err := readStat(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, Start: st.start}, nil
}

// Check reports whether the process named by id is alive. It returns Dead only with proof:
// /proc/PID/stat missing (ENOENT/ESRCH), a start time different from id.Start (pid reused), or
// state zombie 'Z' or dead 'X'/'x'. Any other failure to read or parse /proc gives Unknown.
// A pid <= 0 gives Unknown.
func Check(id Identity) State {
	if id.PID <= 0 {
		return Unknown
	}
	st, err := readStat(id.PID)
	switch {
	case errors.Is(err, ErrNoProcess):
		return Dead
	case err != nil:
		return Unknown
	case st.start != id.Start:
		return Dead
	}
	switch st.state {
	case 'Z', 'X', 'x':
		return Dead
	}
	return Alive
}
