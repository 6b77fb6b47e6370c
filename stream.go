package shmbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Streams carry a byte stream over a bus, as a pipe would: the writer cuts
// it into messages, the reader joins them up again. Each message starts
// with one byte: streamData (the rest is stream bytes), streamEnd (no
// more bytes: the reader returns io.EOF) or streamAbort (the writer gave
// up: the reader returns ErrStreamAborted). Chunks are as large as one
// record, so they are never fragmented. One stream at a time per bus and
// priority: messages of two streams would interleave.

const (
	streamData  = 'D'
	streamEnd   = 'E'
	streamAbort = 'A'
)

// ErrNotStream is returned by a StreamReader that receives a message that
// is not part of a stream.
var ErrNotStream = errors.New("message is not part of a stream")

// ErrStreamAborted is returned by a StreamReader whose writer gave up
// (StreamWriter.Abort): what was read so far is not the whole stream.
var ErrStreamAborted = errors.New("stream aborted by its writer")

// ErrWriterGone is returned by a StreamReader whose writer is gone without
// ending the stream: its process died, or it detached from the bus,
// after it had begun the stream. What was read so far is not the whole
// stream.
var ErrWriterGone = errors.New("stream writer gone without ending the stream")

// ErrReaderGone is returned by a StreamWriter whose reader went away: the
// consumer role was given back, or its holder died. It is the broken pipe
// of a bus stream; nothing written after it is read by anyone.
var ErrReaderGone = errors.New("stream reader gone (broken pipe)")

// StreamWriter writes a byte stream onto a bus at one priority.
type StreamWriter struct {
	ctx  context.Context
	p    *Producer
	prio int
	buf  []byte // buf[0] is the chunk's type byte
	err  error
}

// NewStreamWriter returns a writer that sends what is written to it over
// the bus at priority prio, in chunks of one record. Writes block while the
// bus is full, until ctx is done. Close sends what is buffered and the end
// of the stream; it does not close p.
func NewStreamWriter(ctx context.Context, p *Producer, prio int) *StreamWriter {
	size := p.b.MaxRecordPayload()
	buf := make([]byte, 1, size)
	buf[0] = streamData
	return &StreamWriter{ctx: ctx, p: p, prio: prio, buf: buf}
}

// Write buffers b, sending each chunk as it fills.
func (w *StreamWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if w.err != nil {
			return n, w.err
		}
		k := copy(w.buf[len(w.buf):cap(w.buf)], b)
		w.buf = w.buf[:len(w.buf)+k]
		b, n = b[k:], n+k
		if len(w.buf) == cap(w.buf) {
			w.flush()
		}
	}
	return n, w.err
}

// ReadFrom sends everything r yields, reading straight into the chunk
// buffer.
func (w *StreamWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for w.err == nil {
		k, err := r.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+k]
		total += int64(k)
		if len(w.buf) == cap(w.buf) {
			w.flush()
		}
		if err == io.EOF {
			return total, w.err
		}
		if err != nil {
			return total, err
		}
	}
	return total, w.err
}

// Flush sends the buffered bytes now.
func (w *StreamWriter) Flush() error {
	if len(w.buf) > 1 {
		w.flush()
	}
	return w.err
}

func (w *StreamWriter) flush() {
	if w.err == nil {
		w.err = w.p.Send(w.ctx, w.buf, w.prio)
	}
	w.buf = w.buf[:1]
}

// Close sends the buffered bytes and the end of the stream.
func (w *StreamWriter) Close() error {
	if err := w.Flush(); err != nil {
		return err
	}
	w.err = w.p.Send(w.ctx, []byte{streamEnd}, w.prio)
	if w.err == nil {
		w.err = fmt.Errorf("stream: %w", ErrClosed)
		return nil
	}
	return w.err
}

// Abort tells the reader the stream will not be finished (its Read
// returns ErrStreamAborted after the bytes sent so far). It drops what is
// buffered, and waits for room at most wait, since the writer is giving up
// (often because its own context ended).
func (w *StreamWriter) Abort(wait time.Duration) error {
	w.buf = w.buf[:1]
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := w.p.Send(ctx, []byte{streamAbort}, w.prio)
	w.err = fmt.Errorf("stream: %w", ErrClosed)
	return err
}

// StreamReader reads a byte stream written by a StreamWriter.
type StreamReader struct {
	ctx  context.Context
	c    *Consumer
	buf  []byte
	data []byte // unread part of the current chunk
	eof  bool
}

// NewStreamReader returns a reader of the stream arriving on the bus of c.
// Reads block until data arrives or ctx is done; after the end of the
// stream they return io.EOF.
func NewStreamReader(ctx context.Context, c *Consumer) *StreamReader {
	return &StreamReader{ctx: ctx, c: c, buf: make([]byte, max(c.b.MaxRecordPayload(), 1))}
}

// Read reads stream bytes into p.
func (r *StreamReader) Read(p []byte) (int, error) {
	for len(r.data) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// WriteTo writes the rest of the stream to w.
func (r *StreamReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.data) > 0 {
			n, err := w.Write(r.data)
			total += int64(n)
			r.data = r.data[n:]
			if err != nil {
				return total, err
			}
		}
		if r.eof {
			return total, nil
		}
		if err := r.next(); err != nil {
			return total, err
		}
	}
}

func (r *StreamReader) next() error {
	n, _, err := r.c.Receive(r.ctx, r.buf)
	var short *ShortBufferError
	if errors.As(err, &short) {
		// Not one of our chunks; take it anyway to say what it was.
		r.buf = make([]byte, short.Need)
		n, _, err = r.c.Receive(r.ctx, r.buf)
	}
	if err != nil {
		return err
	}
	switch {
	case n >= 1 && r.buf[0] == streamData && n <= r.c.b.MaxRecordPayload():
		r.data = r.buf[1:n]
	case n == 1 && r.buf[0] == streamEnd:
		r.eof = true
	case n == 1 && r.buf[0] == streamAbort:
		return fmt.Errorf("bus %q: %w", r.c.b.name, ErrStreamAborted)
	default:
		return fmt.Errorf("bus %q: %w (%d bytes)", r.c.b.name, ErrNotStream, n)
	}
	return nil
}
