//go:build !race

package shmbus

const raceEnabled = false
