package shmbus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"time"
)

func TestStream(t *testing.T) {
	forEachWake(t, func(t *testing.T, wake WakeMode) {
		b := newBus(t, &Options{Wake: wake, LaneCapacity: 64 << 10})
		p, _ := b.NewProducer()
		c, _ := b.NewConsumer()
		data := make([]byte, 5<<20+12345)
		rng := rand.New(rand.NewPCG(5, 6))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		ctx := context.Background()
		errc := make(chan error, 1)
		go func() {
			w := NewStreamWriter(ctx, p, 0)
			// Odd-sized writes, then ReadFrom through a reader that
			// returns one byte at a time for a while.
			if _, err := w.Write(data[:1000]); err != nil {
				errc <- err
				return
			}
			if _, err := w.ReadFrom(io.MultiReader(iotest.OneByteReader(bytes.NewReader(data[1000:3000])), bytes.NewReader(data[3000:]))); err != nil {
				errc <- err
				return
			}
			errc <- w.Close()
		}()
		var got bytes.Buffer
		r := NewStreamReader(ctx, c)
		if _, err := r.WriteTo(&got); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("stream of %d bytes arrived as %d bytes, different", len(data), got.Len())
		}
		if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("read after the end: %d %v", n, err)
		}
		// A message that is not part of a stream.
		p.TrySend([]byte("plain message"), 0)
		if _, err := NewStreamReader(ctx, c).Read(make([]byte, 10)); !errors.Is(err, ErrNotStream) {
			t.Fatalf("plain message read as a stream: %v", err)
		}
	})
}

func TestStreamAbort(t *testing.T) {
	b := newBus(t, nil)
	p, _ := b.NewProducer()
	c, _ := b.NewConsumer()
	ctx := context.Background()
	w := NewStreamWriter(ctx, p, 0)
	w.Write([]byte("the beginning"))
	w.Flush()
	w.Write([]byte(" and what was buffered"))
	if err := w.Abort(time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(NewStreamReader(ctx, c))
	if !errors.Is(err, ErrStreamAborted) || string(got) != "the beginning" {
		t.Fatalf("read %q, %v; want the flushed bytes and ErrStreamAborted", got, err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after Abort succeeded")
	}
}
