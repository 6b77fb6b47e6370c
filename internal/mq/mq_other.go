//go:build !(linux && (amd64 || arm64))

package mq

import "time"

// Queue is unavailable on this platform.
type Queue struct{}

func Create(string, Attr) (*Queue, error)                   { return nil, ErrUnsupported }
func Open(string) (*Queue, error)                           { return nil, ErrUnsupported }
func Unlink(string) error                                   { return ErrUnsupported }
func (*Queue) Close() error                                 { return ErrUnsupported }
func (*Queue) Unlink() error                                { return ErrUnsupported }
func (*Queue) Send([]byte, uint, time.Time) error           { return ErrUnsupported }
func (*Queue) Receive([]byte, time.Time) (int, uint, error) { return 0, 0, ErrUnsupported }
