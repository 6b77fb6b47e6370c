package main

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// vecWriter writes a batch of byte slices, with writev(2) when the output
// is a file (one system call for many messages, straight from the bus's
// memory), and reports how many bytes reached the output, even when the
// write fails half-way.
type vecWriter struct {
	w   io.Writer
	f   *os.File // w, if it is a file
	iov [][]byte // scratch
}

func newVecWriter(w io.Writer) *vecWriter {
	v := &vecWriter{w: w}
	v.f, _ = w.(*os.File)
	return v
}

// Write writes p (all of it, or fails): an io.Writer whose broken pipe is
// an error (EPIPE), not the death by SIGPIPE of a write to os.Stdout, so
// that the command can close the bus before it exits.
func (v *vecWriter) Write(p []byte) (int, error) {
	n, err := v.write([][]byte{p})
	return int(n), err
}

// maxIOV is at most IOV_MAX, the most slices one writev takes.
const maxIOV = 1024

// write writes all of bufs in order and returns the bytes written.
func (v *vecWriter) write(bufs [][]byte) (int64, error) {
	if v.f == nil {
		var n int64
		for _, b := range bufs {
			k, err := v.w.Write(b)
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
		return n, nil
	}
	rc, err := v.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	v.iov = append(v.iov[:0], bufs...)
	iov := advance(v.iov, 0) // empty slices write nothing
	var n int64
	for len(iov) > 0 {
		var k int
		var werr error
		err := rc.Write(func(fd uintptr) bool {
			k, werr = writev(int(fd), iov[:min(len(iov), maxIOV)])
			return werr != unix.EAGAIN // a non-blocking output: wait for room
		})
		if werr == unix.EINTR {
			continue
		}
		if err == nil {
			err = werr
		}
		if k > 0 {
			n += int64(k)
			iov = advance(iov, k)
		}
		if err != nil {
			return n, &os.PathError{Op: "write", Path: v.f.Name(), Err: err}
		}
		if k == 0 {
			return n, io.ErrShortWrite
		}
	}
	clear(v.iov) // keep no view of the bus
	return n, nil
}

// advance drops the first k bytes of iov.
func advance(iov [][]byte, k int) [][]byte {
	for k > 0 && len(iov) > 0 {
		if k < len(iov[0]) {
			iov[0] = iov[0][k:]
			return iov
		}
		k -= len(iov[0])
		iov = iov[1:]
	}
	for len(iov) > 0 && len(iov[0]) == 0 {
		iov = iov[1:]
	}
	return iov
}

// isBrokenPipe says whether err is a write to a pipe nobody reads.
func isBrokenPipe(err error) bool { return errors.Is(err, unix.EPIPE) }
