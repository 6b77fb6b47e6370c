package shmbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shmbus/shmbus/internal/segment"
)

// Streams carry a byte stream over a bus, as a pipe would: the writer cuts
// it into messages, the reader joins them up again. Each message starts
// with one byte: streamData (the rest is stream bytes), streamEnd (no
// more bytes: the reader returns io.EOF) or streamAbort (the writer gave
// up: the reader returns ErrStreamAborted). Chunks are as large as one
// record, so they are never fragmented. One stream at a time per bus and
// priority: messages of two streams would interleave.
//
// Streams end like pipes when a side goes away (see docs/semantics.md,
// "Streams"). The writer of a stream is the producer of its first chunk;
// once the reader has that chunk, a writer that detaches or dies without
// ending the stream ends it on the reader with ErrWriterGone (a stream
// whose writer has not sent anything yet has no writer to lose: the reader
// waits for one, as a FIFO's reader waits for a writer). The reader of a
// stream is the holder of the consumer role the writer first sees; once
// it has one, a reader that gives the role back or dies before the end
// fails the writer's next write with ErrReaderGone, the broken pipe (a
// writer that has seen no reader yet waits for one while the bus fills).
// Both sides look at the other at least every streamCheck while they wait.

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

	reader     peerMark // the stream's reader, once seen
	haveReader bool
	lastCheck  time.Time // of the reader's liveness

	// The lane's claim position before the first chunk: once the release
	// position is past it, somebody read the stream, even if the writer
	// never saw it hold the consumer role (it came, read and went while
	// the writer waited for room).
	startTail uint64
	started   bool
}

// streamCheck is how often a stream's side that waits (or writes) looks
// whether the other side is still there.
const streamCheck = 200 * time.Millisecond

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
		w.err = w.send(w.buf)
	}
	w.buf = w.buf[:1]
}

// send sends one chunk, waiting for room in steps of streamCheck so that a
// reader that went away is noticed while the bus is full.
func (w *StreamWriter) send(chunk []byte) error {
	for {
		if err := w.checkReader(false); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(w.ctx, streamCheck)
		err := w.p.Send(ctx, chunk, w.prio)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || w.ctx.Err() != nil {
			return err
		}
		if err := w.checkReader(true); err != nil {
			return err
		}
	}
}

// checkReader fails with ErrReaderGone once the stream's reader has given
// the consumer role back or (looked at with /proc when wait says the
// writer is waiting for room, and at most every streamCheck otherwise) is
// dead. The first holder of the consumer role it sees is the reader.
func (w *StreamWriter) checkReader(wait bool) error {
	b := w.p.b
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	var gone error
	err := segment.Guard(func() error {
		t := b.peers
		lane := b.lanes[w.prio].Stats()
		if !w.started {
			w.startTail, w.started = lane.Tail, true
		}
		if !w.haveReader {
			// A role word naming a dead holder (a reader killed before
			// this stream began) is no reader of this stream.
			m, ok := t.consumerMark()
			if ok && (wait || time.Since(w.lastCheck) >= streamCheck) {
				w.reader, w.haveReader = m, !t.gone(m)
				w.lastCheck = time.Now()
			}
			if !w.haveReader && wait && int64(lane.Head-w.startTail) > 0 && (!ok || t.gone(m)) {
				gone = busError(b.name, fmt.Errorf("%w: the stream was read, and its reader has left", ErrReaderGone))
			}
			return nil
		}
		if !t.holdsConsumer(w.reader) {
			gone = busError(b.name, fmt.Errorf("%w: the consumer role was given back", ErrReaderGone))
			return nil
		}
		if (wait || time.Since(w.lastCheck) >= streamCheck) && t.gone(w.reader) {
			gone = busError(b.name, fmt.Errorf("%w: the consumer (pid %d) died", ErrReaderGone, w.reader.tag>>32))
		}
		w.lastCheck = time.Now()
		return nil
	})
	if err != nil {
		return err
	}
	return gone
}

// Close sends the buffered bytes and the end of the stream.
func (w *StreamWriter) Close() error {
	if err := w.Flush(); err != nil {
		return err
	}
	w.err = w.send([]byte{streamEnd})
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

	writer     peerMark // the producer of the first chunk
	haveWriter bool
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
	n, slot, err := r.receive()
	if short, ok := errors.AsType[*ShortBufferError](err); ok {
		// Not one of our chunks; take it anyway to say what it was.
		r.buf = make([]byte, short.Need)
		n, slot, err = r.receive()
	}
	if err != nil {
		return err
	}
	if !r.haveWriter && n >= 1 && r.buf[0] == streamData {
		if err := r.markWriter(slot); err != nil {
			return err
		}
	}
	switch {
	case n >= 1 && r.buf[0] == streamData && n <= r.c.b.MaxRecordPayload():
		r.data = r.buf[1:n]
	case n == 1 && r.buf[0] == streamEnd:
		r.eof = true
	case n == 1 && r.buf[0] == streamAbort:
		return busError(r.c.b.name, ErrStreamAborted)
	default:
		return busError(r.c.b.name, fmt.Errorf("%w (%d bytes)", ErrNotStream, n))
	}
	return nil
}

// receive receives the next chunk into r.buf and says which slot sent it.
// Once the stream has a writer, it waits in steps of streamCheck, and
// fails with ErrWriterGone when the writer has left or died and nothing
// it sent is left.
func (r *StreamReader) receive() (int, int, error) {
	for {
		ctx, cancel := r.ctx, context.CancelFunc(func() {})
		if r.haveWriter {
			ctx, cancel = context.WithTimeout(r.ctx, streamCheck)
		}
		n, _, slot, err := r.c.receiveFrom(ctx, r.buf)
		cancel()
		if !r.haveWriter || !errors.Is(err, context.DeadlineExceeded) || r.ctx.Err() != nil {
			return n, slot, err
		}
		gone, err := r.writerGone()
		if err != nil {
			return 0, 0, err
		}
		if gone {
			// It may have sent more before it went: take that first.
			n, _, slot, err := r.c.receiveFrom(ctx, r.buf) // ctx is done: no wait
			if (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) && r.ctx.Err() == nil {
				return 0, 0, busError(r.c.b.name, fmt.Errorf("%w (writer pid %d)", ErrWriterGone, r.writer.tag>>32))
			}
			return n, slot, err
		}
	}
}

func (r *StreamReader) markWriter(slot int) error {
	b := r.c.b
	if slot < 0 || slot >= b.g.PeerSlots {
		return nil // no slot to watch
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	return segment.Guard(func() error {
		r.writer, r.haveWriter = b.peers.mark(slot), true
		return nil
	})
}

func (r *StreamReader) writerGone() (bool, error) {
	b := r.c.b
	if err := b.enter(); err != nil {
		return false, err
	}
	defer b.exit()
	gone := false
	err := segment.Guard(func() error {
		gone = b.peers.gone(r.writer)
		return nil
	})
	return gone, err
}
