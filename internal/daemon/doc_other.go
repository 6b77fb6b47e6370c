//go:build !linux

// Package daemon is the shmbus daemon (Linux only: it needs SO_PEERCRED,
// pidfds and memfds). See daemon.go on Linux.
package daemon
