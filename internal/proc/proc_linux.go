package proc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// With /proc mounted hidepid=1 or 2, another user's live process
		// is missing from it: only the kernel's ESRCH for kill(pid, 0)
		// proves there is no such process.
		if (errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)) && unix.Kill(pid, 0) == unix.ESRCH {
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
// no such process (/proc/PID/stat missing and kill(PID, 0) failing with ESRCH, so that a
// process hidden by hidepid is not taken for dead), a start time different from id.Start
// (pid reused), or state dead 'X'/'x', or zombie 'Z' with no thread left running. Any other
// failure to read or parse /proc gives Unknown.
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
	case 'X', 'x':
		return Dead
	case 'Z':
		// A zombie leader whose other threads still run (it called
		// pthread_exit) is a live process.
		if tasks, err := os.ReadDir("/proc/" + strconv.Itoa(id.PID) + "/task"); err == nil && len(tasks) > 1 {
			return Alive
		}
		return Dead
	}
	return Alive
}
