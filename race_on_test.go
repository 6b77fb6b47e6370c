//go:build race

package shmbus

// raceEnabled: this test binary has the race detector (its children too),
// which makes every shared access many times slower.
const raceEnabled = true
