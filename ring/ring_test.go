package ring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shmbus/shmbus/layout"
)

func TestSendReceiveOrderAndSizes(t *testing.T) {
	for _, multi := range []bool{false, true} {
		name := map[bool]string{false: "spsc", true: "mpsc"}[multi]
		t.Run(name, func(t *testing.T) {
			cfg := layout.Config{Lanes: 1, LaneCapacity: 4096}
			if multi {
				cfg.Flags = layout.FlagMultiProducer
			}
			s := newTestSeg(t, cfg, 0)
			p, c := s.producer(0, 0), s.consumer(t, 0)
			max := p.MaxPayload()
			buf := make([]byte, max)
			rng := rand.New(rand.NewPCG(1, 2))
			for seq := uint32(0); seq < 20000; seq++ {
				n := msgHeader + rng.IntN(max-msgHeader+1)
				msg := make([]byte, n)
				fillMsg(msg, 7, seq)
				if err := p.Send(msg); err != nil {
					t.Fatalf("send %d: %v", seq, err)
				}
				got, r, err := c.Receive(buf)
				if err != nil {
					t.Fatalf("receive %d: %v", seq, err)
				}
				if r.Producer != 0 || r.Flags != layout.FragBegin|layout.FragEnd {
					t.Fatalf("record header %+v", r)
				}
				if pr, sq := checkMsg(t, buf[:got]); pr != 7 || sq != seq {
					t.Fatalf("got producer %d seq %d, want 7 %d", pr, sq, seq)
				}
			}
			p.Flush()
			c.Flush()
			st := s.lanes[0].Stats()
			if st.MsgsIn != 20000 || st.MsgsOut != 20000 || st.BytesIn != st.BytesOut || st.Head != st.Tail {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestLimitsAndErrors(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, RecordLimit: 256}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	if p.MaxPayload() != 248 {
		t.Fatalf("max payload %d", p.MaxPayload())
	}
	if err := p.Send(make([]byte, 249)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized send: %v", err)
	}
	if _, _, err := c.Receive(make([]byte, 10)); err != ErrEmpty {
		t.Fatalf("receive on empty lane: %v", err)
	}
	// Fill the lane: 1024 bytes hold four 256-byte records.
	for i := 0; i < 4; i++ {
		if err := p.Send(bytes.Repeat([]byte{byte(i + 1)}, 248)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := p.Send([]byte{1}); err != ErrFull {
		t.Fatalf("send to full lane: %v", err)
	}
	if s.lanes[0].Stats().FullEvents != 1 {
		t.Fatalf("full events %d", s.lanes[0].Stats().FullEvents)
	}
	// A short buffer says what is needed and loses nothing.
	var sb *ShortBufferError
	if _, _, err := c.Receive(make([]byte, 100)); !errors.As(err, &sb) || sb.Need != 248 || !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("short buffer: %v", err)
	}
	buf := make([]byte, 248)
	for i := 0; i < 4; i++ {
		n, _, err := c.Receive(buf)
		if err != nil || n != 248 || buf[0] != byte(i+1) {
			t.Fatalf("receive %d: n=%d err=%v first=%d", i, n, err, buf[0])
		}
	}
	// Empty messages are messages too.
	if err := p.Send(nil); err != nil {
		t.Fatalf("empty message: %v", err)
	}
	if n, r, err := c.Receive(nil); err != nil || n != 0 || r.Length != layout.RecordHeader {
		t.Fatalf("receive empty message: %d %+v %v", n, r, err)
	}
}

// TestZeroedAfterRelease checks invariant Z: the consumer leaves no byte of
// a released record behind.
func TestZeroedAfterRelease(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	for i := 0; i < 100; i++ {
		p.Send(bytes.Repeat([]byte{0xAB}, 1+i%100))
		c.Poll(0, func(layout.Record, []byte) {})
	}
	if !bytes.Equal(s.lanes[0].data, make([]byte, 1024)) {
		t.Fatal("released ring bytes are not zero")
	}
}

func TestBatchReserveCommitAbort(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	if err := p.Batch(RecordSize(10) * 5); err != nil {
		t.Fatal(err)
	}
	if err := p.Batch(64); err != ErrPending {
		t.Fatalf("second batch: %v", err)
	}
	for i := 0; i < 3; i++ { // uses 3 of 5 slots; the rest becomes padding
		b, err := p.Reserve(10, layout.FragBegin|layout.FragEnd)
		if err != nil {
			t.Fatal(err)
		}
		b[0] = byte(i)
	}
	if c.Ready() {
		t.Fatal("records visible before Commit")
	}
	p.Commit()
	var got []byte
	if n, err := c.Poll(0, func(_ layout.Record, b []byte) { got = append(got, b[0]) }); n != 3 || err != nil {
		t.Fatalf("poll: %d %v", n, err)
	}
	if !bytes.Equal(got, []byte{0, 1, 2}) {
		t.Fatalf("got %v", got)
	}
	// Aborted records are never delivered; the lane goes on.
	b, _ := p.Reserve(20, layout.FragBegin|layout.FragEnd)
	b[0] = 0xEE
	p.Abort()
	p.Send([]byte{42})
	n, err := c.Poll(0, func(_ layout.Record, b []byte) { got = append(got, b[0]) })
	if n != 1 || err != nil || got[3] != 42 {
		t.Fatalf("after abort: %d %v %v", n, err, got)
	}
}

// TestSendBatch sends batches that must be split when the lane is nearly full.
func TestSendBatch(t *testing.T) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, Flags: layout.FlagMultiProducer}, 0)
	p, c := s.producer(0, 1), s.consumer(t, 0)
	msgs := make([][]byte, 100)
	for i := range msgs {
		msgs[i] = make([]byte, 16+i%40)
		fillMsg(msgs[i], 1, uint32(i))
	}
	next, sent := uint32(0), 0
	for sent < len(msgs) {
		k, err := p.SendBatch(msgs[sent:])
		if err != nil && err != ErrFull {
			t.Fatal(err)
		}
		sent += k
		c.Poll(7, func(_ layout.Record, b []byte) {
			if _, seq := checkMsg(t, b); seq != next {
				t.Fatalf("seq %d, want %d", seq, next)
			}
			next++
		})
	}
	c.Poll(0, func(_ layout.Record, b []byte) {
		if _, seq := checkMsg(t, b); seq != next {
			t.Fatalf("seq %d, want %d", seq, next)
		}
		next++
	})
	if next != 100 {
		t.Fatalf("received %d", next)
	}
}

// TestPositionWrap starts the positions just below 2^32 and just below 2^64
// and runs many laps: positions are compared only by difference.
func TestPositionWrap(t *testing.T) { forModes(t, testPositionWrap) }

func testPositionWrap(t *testing.T, mode layout.WakeMode) {
	for _, start := range []uint64{1<<32 - 4096 - 8, 1<<64 - 64*1024 + 8, 1<<32 - 8} {
		for _, multi := range []bool{false, true} {
			cfg := layout.Config{Lanes: 1, LaneCapacity: 1024, WakeMode: mode}
			if multi {
				cfg.Flags = layout.FlagMultiProducer
			}
			s := newTestSeg(t, cfg, start)
			runPair(t, s, 1, 50000, 1)
			st := s.lanes[0].Stats()
			if laps := (st.Tail - start) / 1024; laps < 100 {
				t.Fatalf("start %#x: only %d laps", start, laps)
			}
		}
	}
}

// runPair runs producers goroutines against one consumer, each sending n
// messages of random size, batched in groups of up to batch, and checks
// every message: none lost, none duplicated, per-producer order, checksum.
func runPair(t *testing.T, s *testSeg, producers, n, batch int) {
	t.Helper()
	c := s.consumer(t, 0)
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for i := 0; i < producers; i++ {
		p := s.producer(0, i)
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 99))
			spin := &Spinner{}
			msgs := make([][]byte, 0, batch)
			for seq := 0; seq < n; {
				msgs = msgs[:0]
				for k := 0; k < 1+rng.IntN(batch) && seq+k < n; k++ {
					m := make([]byte, msgHeader+rng.IntN(p.MaxPayload()-msgHeader+1))
					fillMsg(m, uint32(id), uint32(seq+k))
					msgs = append(msgs, m)
				}
				for len(msgs) > 0 {
					k, err := p.SendBatch(msgs)
					if err == ErrFull {
						if err := p.WaitRoom(RecordSize(len(msgs[0])), time.Now().Add(10*time.Second), nil, spin); err != nil {
							errs <- err
							return
						}
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					msgs = msgs[k:]
					seq += k
				}
			}
		}(i)
	}
	next := make([]uint32, producers)
	total := 0
	spin := &Spinner{}
	for total < producers*n {
		k, err := c.Poll(0, func(r layout.Record, b []byte) {
			pr, seq := checkMsg(t, b)
			if int(r.Producer) != int(pr) {
				t.Fatalf("record says producer %d, payload %d", r.Producer, pr)
			}
			if seq != next[pr] {
				t.Fatalf("producer %d: seq %d, want %d", pr, seq, next[pr])
			}
			next[pr]++
		})
		if err != nil {
			t.Fatal(err)
		}
		total += k
		if k == 0 {
			if err := c.Wait(s.data, s.peers, time.Now().Add(10*time.Second), nil, spin); err != nil {
				off := c.pos & c.l.mask
				t.Fatalf("consumer wait after %d messages: %v (pos %d head %d stats %+v len %d meta %#x)", total, err, c.pos, c.head, c.l.Stats(), c.l.lengthWord(off).Load(), c.l.meta(off))
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestMPSCGoroutines(t *testing.T) {
	forModes(t, func(t *testing.T, mode layout.WakeMode) {
		s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 8192, Flags: layout.FlagMultiProducer, WakeMode: mode}, 0)
		runPair(t, s, 3, 30000, 8)
	})
}

func TestSPSCSleepWake(t *testing.T) { forModes(t, testSPSCSleepWake) }

func testSPSCSleepWake(t *testing.T, mode layout.WakeMode) {
	// A slow producer makes the consumer sleep and be woken many times.
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 4096, WakeMode: mode}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	const n = 200
	sent := make(chan struct{})
	// The producer touches the segment after its last publish (statistics,
	// the ring): the mapping must outlive it.
	defer func() { <-sent }()
	go func() {
		defer close(sent)
		for i := 0; i < n; i++ {
			time.Sleep(200 * time.Microsecond)
			m := make([]byte, 32)
			fillMsg(m, 0, uint32(i))
			p.Send(m)
		}
	}()
	spin := &Spinner{Min: -1} // no spinning: always sleep
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		for {
			k, _, err := c.Receive(buf)
			if err == nil {
				if _, seq := checkMsg(t, buf[:k]); seq != uint32(i) {
					t.Fatalf("seq %d want %d", seq, i)
				}
				break
			}
			if err := c.Wait(s.data, nil, time.Now().Add(5*time.Second), nil, spin); err != nil {
				t.Fatal(err)
			}
		}
	}
	sleeps := layout.Word64(s.seg, layout.OffConsumerSleeps).Load()
	wakes := layout.Word64(s.seg, layout.OffConsumerWakes).Load()
	if sleeps < n/2 || wakes < n/2 {
		t.Fatalf("consumer slept %d times, was rung %d times; want both >= %d", sleeps, wakes, n/2)
	}
}

func TestWaitDeadlineAndStop(t *testing.T) { forModes(t, testWaitDeadlineAndStop) }

func testWaitDeadlineAndStop(t *testing.T, mode layout.WakeMode) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, WakeMode: mode}, 0)
	c := s.consumer(t, 0)
	if err := c.Wait(s.data, nil, time.Now().Add(20*time.Millisecond), nil, nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait on empty lane: %v", err)
	}
	stopErr := errors.New("stopped")
	var stop atomic32
	done := make(chan error)
	go func() {
		done <- c.Wait(s.data, nil, time.Time{}, func() error {
			if stop.get() {
				return stopErr
			}
			return nil
		}, nil)
	}()
	time.Sleep(20 * time.Millisecond)
	stop.set()
	s.data.Kick()
	if err := <-done; err != stopErr {
		t.Fatalf("stopped wait returned %v", err)
	}
	if s.data.Sleepers() != 0 {
		t.Fatalf("%d sleepers left announced", s.data.Sleepers())
	}
}

type atomic32 struct {
	mu sync.Mutex
	v  bool
}

func (a *atomic32) set()      { a.mu.Lock(); a.v = true; a.mu.Unlock() }
func (a *atomic32) get() bool { a.mu.Lock(); defer a.mu.Unlock(); return a.v }

func TestProducerWaitsForRoom(t *testing.T) { forModes(t, testProducerWaitsForRoom) }

func testProducerWaitsForRoom(t *testing.T, mode layout.WakeMode) {
	s := newTestSeg(t, layout.Config{Lanes: 1, LaneCapacity: 1024, RecordLimit: 512, WakeMode: mode}, 0)
	p, c := s.producer(0, 0), s.consumer(t, 0)
	p.Send(make([]byte, 500))
	p.Send(make([]byte, 500))
	if err := p.Send(make([]byte, 500)); err != ErrFull {
		t.Fatalf("third send: %v", err)
	}
	if err := p.WaitRoom(RecordSize(500), time.Now().Add(10*time.Millisecond), nil, &Spinner{Min: -1}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("wait room on full lane: %v", err)
	}
	received := make(chan struct{})
	defer func() { <-received }() // the consumer rings after its release: keep the mapping
	go func() {
		defer close(received)
		time.Sleep(20 * time.Millisecond)
		c.Receive(make([]byte, 512))
	}()
	if err := p.WaitRoom(RecordSize(500), time.Now().Add(5*time.Second), nil, &Spinner{Min: -1}); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(make([]byte, 500)); err != nil {
		t.Fatal(err)
	}
	if st := s.lanes[0].Stats(); st.SpaceSleeps == 0 || st.SpaceWakes == 0 {
		t.Fatalf("space doorbell unused: %+v", st)
	}
}
