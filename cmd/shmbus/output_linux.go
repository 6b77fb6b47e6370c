package main

import "golang.org/x/sys/unix"

// writev writes iov with one writev(2).
func writev(fd int, iov [][]byte) (int, error) { return unix.Writev(fd, iov) }
