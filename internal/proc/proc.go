// Package proc names processes in a way that survives pid reuse, and decides whether such a
// process is still alive.
//
// Contract:
//
//   - An Identity is a pid plus the process start time (clock ticks since boot on Linux; 0 on
//     platforms where no start time is available, where pid reuse cannot be detected).
//   - Check returns Dead only with proof that the named process no longer runs: it is gone, its
//     pid now belongs to a process with another start time, or it is a zombie. Whenever the
//     evidence is incomplete (unreadable /proc, malformed content, permission problems, invalid
//     pid) it returns Unknown, never Dead. Callers that reclaim resources must treat Unknown as
//     alive.
//   - Nothing here panics on unexpected /proc content.
package proc

import (
	"errors"
	"fmt"
)

// ErrNoProcess means no process with the requested pid exists.
var ErrNoProcess = errors.New("proc: no such process")

// Identity names a process: its pid and its start time (clock ticks since boot on Linux,
// field 22 of /proc/PID/stat; 0 where the platform has no start time).
type Identity struct {
	PID   int
	Start uint64
}

// State is the result of Check.
type State int

const (
	// Unknown means liveness could not be established either way.
	Unknown State = iota
	// Alive means the process exists and (where start times are available) is the same one.
	Alive
	// Dead means there is proof that the process no longer runs.
	Dead
)

// String returns "unknown", "alive" or "dead" (or "State(N)" for other values).
func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Alive:
		return "alive"
	case Dead:
		return "dead"
	}
	return fmt.Sprintf("State(%d)", int(s))
}
