package shmbus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	roles["stream-writer-dies"] = streamWriterDies
	roles["stream-reader-leaves"] = streamReaderLeaves
}

// streamPattern is byte i of the test streams.
func streamPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// streamWriterDies writes $COUNT bytes of a stream to $BUS and is killed
// (SIGKILL) before it ends the stream.
func streamWriterDies() error {
	b, err := Open(os.Getenv("BUS"), nil)
	if err != nil {
		return err
	}
	p, err := b.NewProducer()
	if err != nil {
		return err
	}
	w := NewStreamWriter(context.Background(), p, 0)
	if _, err := w.Write(streamPattern(envInt("COUNT"))); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}

// streamReaderLeaves reads $COUNT bytes of the stream on $BUS and then
// leaves: it closes the bus ($HOW=close) or is killed ($HOW=kill).
func streamReaderLeaves() error {
	b, err := Open(os.Getenv("BUS"), nil)
	if err != nil {
		return err
	}
	c, err := b.NewConsumer()
	if err != nil {
		return err
	}
	os.Stdout.Write([]byte("ready\n"))
	r := NewStreamReader(context.Background(), c)
	if _, err := io.ReadFull(r, make([]byte, envInt("COUNT"))); err != nil {
		return err
	}
	if os.Getenv("HOW") == "kill" {
		unix.Kill(os.Getpid(), unix.SIGKILL)
	}
	return b.Close()
}

// A stream whose writer dies without ending it ends on the reader with
// ErrWriterGone, after every byte the writer sent.
func TestStreamWriterDies(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 64 << 10})
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100_000
	cmd := child(t, "stream-writer-dies", "BUS="+b.Name(), "COUNT=100000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := io.ReadAll(NewStreamReader(ctx, c))
	if !errors.Is(err, ErrWriterGone) {
		t.Fatalf("read %d bytes, then %v; want ErrWriterGone", len(got), err)
	}
	if !bytes.Equal(got, streamPattern(n)) {
		t.Fatalf("read %d bytes, want the %d sent", len(got), n)
	}
}

// A writer that detaches without ending the stream is gone too; a stream
// without a writer yet is not.
func TestStreamWriterDetaches(t *testing.T) {
	b := newBus(t, nil)
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*streamCheck)
	_, err = NewStreamReader(ctx, c).Read(make([]byte, 10))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no writer yet: %v, want the deadline", err)
	}

	other, err := Open(b.Name(), nil) // the writer's own attachment
	if err != nil {
		t.Fatal(err)
	}
	p, err := other.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	w := NewStreamWriter(context.Background(), p, 0)
	w.Write([]byte("half a stream"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	other.Close() // without w.Close
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := io.ReadAll(NewStreamReader(ctx, c))
	if !errors.Is(err, ErrWriterGone) || string(got) != "half a stream" {
		t.Fatalf("read %q, %v; want the bytes sent and ErrWriterGone", got, err)
	}
}

// A writer whose reader went away (closed, or killed) fails with
// ErrReaderGone instead of waiting for room for ever.
func TestStreamReaderGone(t *testing.T) {
	for _, how := range []string{"close", "kill"} {
		t.Run(how, func(t *testing.T) {
			b := newBus(t, &Options{LaneCapacity: 64 << 10})
			p, err := b.NewProducer()
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			cmd := child(t, "stream-reader-leaves", "BUS="+b.Name(), "COUNT=1000", "HOW="+how)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			if _, err := io.ReadFull(out, make([]byte, 6)); err != nil { // "ready": it holds the role
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			w := NewStreamWriter(ctx, p, 0)
			chunk := make([]byte, 4096)
			var err2 error
			for written := 0; err2 == nil; written += len(chunk) {
				_, err2 = w.Write(chunk)
			}
			if !errors.Is(err2, ErrReaderGone) {
				t.Fatalf("write: %v, want ErrReaderGone", err2)
			}
		})
	}
}

// TestStreamReaderGoneUnseen: a reader that attaches, reads and leaves
// while the writer waits for room, so the writer never sees it hold the
// consumer role, still ends the stream with ErrReaderGone: its bytes were
// read, so the stream had a reader.
func TestStreamReaderGoneUnseen(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 64 << 10})
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		w := NewStreamWriter(ctx, p, 0)
		chunk := make([]byte, 4096)
		for {
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}()
	for { // the lane fills: the writer now waits for room
		s, err := b.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if s.Lanes[0].Used() > 48<<10 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(NewStreamReader(ctx, c), make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrReaderGone) {
		t.Fatalf("write: %v, want ErrReaderGone", err)
	}
}
