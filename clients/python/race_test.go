//go:build race

package pyclient_test

// raceEnabled: this test binary has the race detector, so the shmbus
// command it builds for the daemon gets it too.
const raceEnabled = true
