// Package mq is a minimal binding of Linux POSIX message queues
// (mq_open, mq_timedsend, mq_timedreceive, mq_unlink) through raw system
// calls, for shmbus's differential tests and benchmarks: the kernel's
// queue is the reference for message-queue order. It works without
// /dev/mqueue mounted.
package mq

import "errors"

// ErrUnsupported is returned where POSIX message queues are not available.
var ErrUnsupported = errors.New("POSIX message queues not supported here")

// Attr are a queue's limits.
type Attr struct {
	MaxMsg  int // messages the queue holds (Linux default limit for non-root: 10)
	MsgSize int // largest message (default limit 8192)
}
