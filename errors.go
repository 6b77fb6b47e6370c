package shmbus

import (
	"errors"
	"strconv"
)

// Error is the error of an operation on a bus or a board. Its text has one
// prefix for this package, then what was done to which bus, then the
// cause, once:
//
//	shmbus: open bus "nope": no such bus
//	shmbus: bus "orders": receive: buffer too small: record needs 512 bytes, buffer has 64
//
// It wraps the cause, so that errors.Is finds the sentinels (ErrNotExist,
// ErrCorrupt, …) and the operating system's error beneath them, and
// errors.As finds the typed errors (*TooLargeError, *ShortBufferError, …).
// Programs that print errors for people use errors.As on an *Error to tell
// that a message already names its bus.
type Error struct {
	Op   string // what was done, for calls that name a bus: "create", "open", "remove", "check"; "" for a call on an attached bus, whose cause says what was done
	Kind string // "bus" or "board"
	Name string // the bus's or board's name
	Err  error  // the cause
}

func (e *Error) Error() string {
	s := "shmbus: "
	if e.Op != "" {
		s += e.Op + " "
	}
	return s + e.Kind + " " + strconv.Quote(e.Name) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// busError is the error of a call on the attached bus called name.
func busError(name string, err error) error { return &Error{Kind: "bus", Name: name, Err: err} }

// boardError is the error of a call on the attached board called name.
func boardError(name string, err error) error { return &Error{Kind: "board", Name: name, Err: err} }

// opError is the error of op ("open", "check", "remove") on the bus or
// board called name, whose only missing file can be its segment: a missing
// one reads "no such bus" instead of the file's path twice.
func opError(op, kind, name string, err error) error {
	if errors.Is(err, ErrNotExist) {
		err = &noSuchError{kind: kind, err: err}
	}
	return &Error{Op: op, Kind: kind, Name: name, Err: err}
}

// ShortBufferError says how large a buffer the next message needs; the
// message stays on the bus. It wraps ErrShortBuffer.
type ShortBufferError struct{ Need, Have int }

func (e *ShortBufferError) Error() string {
	return "buffer too small: record needs " + strconv.Itoa(e.Need) + " bytes, buffer has " + strconv.Itoa(e.Have)
}

func (e *ShortBufferError) Unwrap() error { return ErrShortBuffer }

// noSuchError is a bus or board whose segment does not exist; it wraps the
// error that said so (ErrNotExist and the operating system's error).
type noSuchError struct {
	kind string
	err  error
}

func (e *noSuchError) Error() string { return "no such " + e.kind }
func (e *noSuchError) Unwrap() error { return e.err }
