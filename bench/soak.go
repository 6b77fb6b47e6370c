// Package bench measures shmbus and checks it under load: the soak run
// here, and (with the benchmark work) the IPC comparison behind
// `shmbus bench`.
package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmbus/shmbus"
)

// SoakOptions configure a soak run.
type SoakOptions struct {
	Duration   time.Duration // how long producers send; default 30s
	Producers  int           // default 3
	Priorities int           // default 3
	Dir        string        // where the temporary bus lives; default $SHMBUS_DIR or /dev/shm
	Wake       shmbus.WakeMode
	// Progress, if set, is called about once a second with the report so far.
	Progress func(SoakReport)
}

// SoakReport says what a soak run did. Errors counts every damaged, lost,
// duplicated or out-of-order message and every failed call; a healthy bus
// reports zero.
type SoakReport struct {
	Elapsed  time.Duration
	Messages uint64 // received and verified
	Bytes    uint64
	Errors   uint64
	First    error // the first error, if any
}

// Rate is messages per second.
func (r SoakReport) Rate() float64 { return float64(r.Messages) / r.Elapsed.Seconds() }

func (r SoakReport) String() string {
	s := fmt.Sprintf("%d messages (%.2f M/s, %.1f MB/s) in %v, %d errors",
		r.Messages, r.Rate()/1e6, float64(r.Bytes)/r.Elapsed.Seconds()/1e6, r.Elapsed.Round(time.Millisecond), r.Errors)
	if r.First != nil {
		s += ": first: " + r.First.Error()
	}
	return s
}

const soakHeader = 16 // producer u32, seq u32, crc u32, size u32

// Soak runs several producers (each attached to the bus on its own, as a
// separate process would be) sending checksummed, sequence-numbered
// messages of random sizes, some larger than a record, at random
// priorities to one consumer that verifies every one, on a temporary MPSC
// bus, for opts.Duration. It returns when the consumer has received
// everything sent, or, if ctx ends first, with the report so far and an
// error wrapping ctx.Err() (an interrupted run is not a failed one: Errors
// counts only what went wrong before).
func Soak(ctx context.Context, opts SoakOptions) (SoakReport, error) {
	if opts.Duration == 0 {
		opts.Duration = 30 * time.Second
	}
	if opts.Producers == 0 {
		opts.Producers = 3
	}
	if opts.Priorities == 0 {
		opts.Priorities = 3
	}
	name := fmt.Sprintf("soak-%d-%d", os.Getpid(), time.Now().UnixNano())
	bus, err := shmbus.Create(name, &shmbus.Options{Dir: opts.Dir, Priorities: opts.Priorities,
		LaneCapacity: 256 << 10, MaxMessage: 1 << 20, Wake: opts.Wake})
	if err != nil {
		return SoakReport{}, err
	}
	defer bus.Remove()
	c, err := bus.NewConsumer()
	if err != nil {
		return SoakReport{}, err
	}
	var (
		rep     SoakReport
		errs    atomic.Uint64
		firstMu sync.Mutex
		sent    = make([]atomic.Uint32, opts.Producers)
	)
	fail := func(err error) {
		errs.Add(1)
		firstMu.Lock()
		if rep.First == nil {
			rep.First = err
		}
		firstMu.Unlock()
	}
	start := time.Now()
	sendCtx, stopSending := context.WithTimeout(ctx, opts.Duration)
	defer stopSending()
	var wg sync.WaitGroup
	for k := 0; k < opts.Producers; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			b, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: opts.Dir})
			if err != nil {
				fail(err)
				return
			}
			defer b.Close()
			p, err := b.NewProducer()
			if err != nil {
				fail(err)
				return
			}
			defer p.Close()
			rng := rand.New(rand.NewPCG(uint64(k), uint64(time.Now().UnixNano())))
			buf := make([]byte, 4*b.MaxRecordPayload())
			for seq := uint32(0); ; seq++ {
				size := soakHeader + rng.IntN(256)
				if rng.IntN(50) == 0 {
					size = soakHeader + rng.IntN(len(buf)-soakHeader)
				}
				err := p.Send(sendCtx, soakMsg(buf, uint32(k), seq, size, rng), rng.IntN(opts.Priorities))
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
					return
				}
				if err != nil {
					fail(fmt.Errorf("producer %d: %w", k, err))
					return
				}
				sent[k].Store(seq + 1)
			}
		}(k)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// next[k][prio]: the smallest sequence number still possible from
	// producer k at prio (order holds per producer and priority).
	next := make([][]uint32, opts.Producers)
	counts := make([]uint32, opts.Producers)
	for k := range next {
		next[k] = make([]uint32, opts.Priorities)
	}
	buf := make([]byte, bus.MaxMessage())
	lastReport := time.Now()
	sending := true
	for {
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		n, prio, err := c.Receive(rctx, buf)
		cancel()
		switch {
		case err == nil:
			if err := checkSoak(buf[:n], prio, next, counts); err != nil {
				fail(err)
			}
			rep.Messages++
			rep.Bytes += uint64(n)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		case ctx.Err() != nil:
			// Interrupted: the producers see the same context and stop.
			<-done
			rep.Elapsed, rep.Errors = time.Since(start), errs.Load()
			return rep, fmt.Errorf("soak interrupted: %w", ctx.Err())
		default:
			fail(err)
			rep.Elapsed, rep.Errors = time.Since(start), errs.Load()
			return rep, nil
		}
		if sending {
			select {
			case <-done:
				sending = false
			default:
			}
		}
		if !sending {
			all := true
			for k := range counts {
				if counts[k] < sent[k].Load() {
					all = false
				}
			}
			if all {
				break
			}
		}
		if opts.Progress != nil && time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			opts.Progress(SoakReport{Elapsed: time.Since(start), Messages: rep.Messages, Bytes: rep.Bytes, Errors: errs.Load()})
		}
	}
	for k := range counts {
		if counts[k] != sent[k].Load() {
			fail(fmt.Errorf("producer %d sent %d messages, %d arrived", k, sent[k].Load(), counts[k]))
		}
	}
	rep.Elapsed, rep.Errors = time.Since(start), errs.Load()
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("soak interrupted: %w", err)
	}
	return rep, nil
}

func soakMsg(buf []byte, k, seq uint32, size int, rng *rand.Rand) []byte {
	m := buf[:size]
	for i := soakHeader; i < size; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(m[i:], w[:])
	}
	binary.LittleEndian.PutUint32(m[0:], k)
	binary.LittleEndian.PutUint32(m[4:], seq)
	binary.LittleEndian.PutUint32(m[8:], crc32.ChecksumIEEE(m[soakHeader:]))
	binary.LittleEndian.PutUint32(m[12:], uint32(size))
	return m
}

func checkSoak(m []byte, prio int, next [][]uint32, counts []uint32) error {
	if len(m) < soakHeader {
		return fmt.Errorf("message of %d bytes", len(m))
	}
	k, seq := binary.LittleEndian.Uint32(m), binary.LittleEndian.Uint32(m[4:])
	if int(k) >= len(next) {
		return fmt.Errorf("message from producer %d", k)
	}
	if int(binary.LittleEndian.Uint32(m[12:])) != len(m) || crc32.ChecksumIEEE(m[soakHeader:]) != binary.LittleEndian.Uint32(m[8:]) {
		return fmt.Errorf("producer %d message %d (%d bytes) damaged", k, seq, len(m))
	}
	if seq < next[k][prio] {
		return fmt.Errorf("producer %d priority %d: message %d after %d (duplicate or reordered)", k, prio, seq, next[k][prio]-1)
	}
	next[k][prio] = seq + 1
	counts[k]++
	return nil
}
