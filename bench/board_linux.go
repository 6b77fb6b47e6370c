package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/shmbus/shmbus"
)

// The board section: Get and Put of a BoardValue-byte value timed in this
// process (alone, and while a peer process rewrites the key), and the
// watch round trip (Put wakes a watcher in the peer, which puts the value
// back and wakes this side's watcher) beside the futex round trip of a
// bus (shmbus-futex) measured right after it by the same harness.

// boardBatch is how many Gets or Puts one timed sample holds: one call
// takes tens of nanoseconds, about what reading the clock costs, so each
// sample is a batch's time divided by boardBatch.
const boardBatch = 64

// boardWatchMethod is the watch round trip as a method of the harness:
// its endpoint sends by Put of one key and receives by watching the other.
var boardWatchMethod = &method{
	name:    "board-watch",
	desc:    "board: Put wakes a watcher (Board.WatchKeys, Next) in the other process",
	api:     "Board.Put / BoardWatcher.Next",
	payload: "bytes",
	fixed:   -1,
	setup:   boardSetup,
	open:    boardOpen,
}

// boardWriterMethod is the peer that rewrites the key while this side
// times Gets: its endpoint's send is a Put of "key".
var boardWriterMethod = &method{
	name:    "board-writer",
	desc:    "board: a process putting one key as fast as it can",
	api:     "Board.Put",
	payload: "bytes",
	fixed:   -1,
	setup:   boardSetup,
	open:    boardOpen,
}

// boardMethods are the methods of the board section (not rows of the
// comparison); peers find them by name.
var boardMethods = []*method{boardWatchMethod, boardWriterMethod}

func boardSetup(c *cell) error {
	b, err := shmbus.CreateBoard(c.name, &shmbus.BoardOptions{Keys: 16, MaxValue: max(c.size, 8), Dir: c.dir})
	if err != nil {
		return err
	}
	c.cleanups = append(c.cleanups, b.Remove)
	c.names["board"] = b.Name()
	c.names["dir"] = c.dir
	c.shared = b
	return nil
}

func boardOpen(s *side) (endpoint, error) {
	e := &boardEP{s: s, key: "ping", watch: "pong"}
	if s.parent {
		e.b = s.shared.(*shmbus.Board)
	} else {
		b, err := shmbus.OpenBoard(s.names["board"], &shmbus.OpenOptions{Dir: s.names["dir"]})
		if err != nil {
			return nil, err
		}
		e.b, e.own = b, true
		e.key, e.watch = "pong", "ping"
	}
	if s.mode == modeThroughput {
		e.key = "key" // the writer peer
		return e, nil
	}
	w, err := e.b.WatchKeys(0, e.watch)
	if err != nil {
		e.close()
		return nil, err
	}
	e.w = w
	return e, nil
}

// boardEP puts to key and watches the other key.
type boardEP struct {
	s          *side
	b          *shmbus.Board
	own        bool // opened here (the peer): closed with the endpoint
	key, watch string
	w          *shmbus.BoardWatcher
}

func (e *boardEP) send(msg []byte) error {
	_, err := e.b.Put(e.key, msg)
	return e.s.gone(err)
}

func (e *boardEP) recv(buf []byte) (int, error) {
	for {
		es, err := e.w.Next(e.s.ctx)
		if err != nil {
			return 0, e.s.gone(err)
		}
		if len(es) > 0 {
			v := es[len(es)-1].Value
			if len(v) > len(buf) {
				return 0, fmt.Errorf("value larger than %d bytes", len(buf))
			}
			return copy(buf, v), nil
		}
	}
}

func (e *boardEP) close() error {
	if e.own {
		return e.b.Close()
	}
	return nil
}

// board measures the board section at size bytes.
func (r *runner) board(ctx context.Context, size int) *BoardReport {
	out := &BoardReport{ValueSize: size}
	r.progress(Step{Method: "board", What: "get", Size: size})
	out.Get = r.boardCalls(ctx, size, false, false)
	r.progress(Step{Method: "board", What: "get with a writer", Size: size})
	out.GetWriter = r.boardCalls(ctx, size, false, true)
	r.progress(Step{Method: "board", What: "put", Size: size})
	out.Put = r.boardCalls(ctx, size, true, false)
	out.Watch = r.latencyCell(ctx, boardWatchMethod, size)
	out.BusFutex = r.latencyCell(ctx, shmbusFutexMethod, size)
	return out
}

// boardCalls times Gets (or Puts) of a size-byte value, in batches of
// boardBatch; with writer, while a peer process puts the same key.
func (r *runner) boardCalls(ctx context.Context, size int, put, writer bool) BoardCalls {
	out := BoardCalls{Batch: boardBatch}
	h := hdrhistogram.New(1, int64(time.Minute), 3)
	f := func(b *shmbus.Board, abort func() bool) error {
		v := template(size)
		if _, err := b.Put("key", v); err != nil {
			return err
		}
		buf := make([]byte, size)
		start := time.Now()
		var measureFrom, measureTo time.Time
		var rev0 uint64
		measuring := false
		for !abort() {
			t0 := time.Now()
			for range boardBatch {
				var err error
				if put {
					_, err = b.Put("key", v)
				} else {
					_, _, err = b.Get("key", buf)
				}
				if err != nil {
					return err
				}
			}
			d := time.Since(t0)
			now := t0.Add(d)
			if measuring {
				if err := h.RecordValue(max(int64(d)/boardBatch, 1)); err != nil {
					return fmt.Errorf("histogram: %w", err)
				}
				out.Calls += boardBatch
				if now.After(measureTo) {
					if writer {
						_, rev, _ := b.Get("key", buf)
						out.WriterPuts = float64(rev-rev0) / now.Sub(measureFrom).Seconds()
					}
					return nil
				}
			} else if now.Sub(start) >= r.opts.Warmup {
				measuring = true
				measureFrom, measureTo = now, now.Add(r.opts.Duration)
				_, rev0, _ = b.Get("key", buf)
			}
		}
		return errAborted
	}
	var err error
	if writer {
		err = r.measure(ctx, boardWriterMethod, size, modeThroughput, func(ep endpoint, s *session) error {
			b := ep.(*boardEP).b
			// Wait for the writer's first Put, so that it is running.
			_, first, err := b.Get("key", nil)
			if err != nil && !errors.Is(err, shmbus.ErrNotFound) {
				return err
			}
			for _, rev, _ := b.Get("key", nil); rev == first && !s.abort.Load(); _, rev, _ = b.Get("key", nil) {
				time.Sleep(100 * time.Microsecond)
			}
			err = f(b, s.abort.Load)
			s.stop()
			return err
		})
	} else {
		err = r.boardAlone(ctx, size, f)
	}
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Min = Nanos(h.Min())
	out.P50 = Nanos(h.ValueAtQuantile(50))
	out.P99 = Nanos(h.ValueAtQuantile(99))
	out.Max = Nanos(h.Max())
	return out
}

// boardAlone runs f on a fresh board that nobody else uses.
func (r *runner) boardAlone(ctx context.Context, size int, f func(*shmbus.Board, func() bool) error) error {
	c := r.newCell(boardWatchMethod, size, modeLatency)
	defer c.teardown()
	if err := boardSetup(c); err != nil {
		return err
	}
	return f(c.shared.(*shmbus.Board), func() bool { return ctx.Err() != nil })
}
