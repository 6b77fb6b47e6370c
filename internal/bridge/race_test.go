//go:build race

package bridge

// raceEnabled: the race detector slows every process of a test several
// times over; the longest tests carry fewer messages under it.
const raceEnabled = true
