//go:build !race

package pyclient_test

const raceEnabled = false
