package shmbus

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shmbus/shmbus/futex"
	"github.com/shmbus/shmbus/internal/segment"
	"github.com/shmbus/shmbus/layout"
)

func init() {
	roles["board-hammer"] = roleBoardHammer
	roles["board-pong"] = roleBoardPong
	roles["futex-pong"] = roleFutexPong
}

func benchBoard(b *testing.B) *Board {
	bd, err := CreateBoard(testBoardName(b), &BoardOptions{Keys: 64, MaxValue: 64})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bd.Remove() })
	return bd
}

// BenchmarkBoardGet: Get of a 64-byte value, nobody else on the board.
func BenchmarkBoardGet(b *testing.B) {
	bd := benchBoard(b)
	bd.Put("key", make([]byte, 64))
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := bd.Get("key", buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoardPut: Put of a 64-byte value, nobody else on the board.
func BenchmarkBoardPut(b *testing.B) {
	bd := benchBoard(b)
	v := make([]byte, 64)
	bd.Put("key", v)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := bd.Put("key", v); err != nil {
			b.Fatal(err)
		}
	}
}

// roleBoardHammer puts 64-byte values to "key" until "stop" has a value.
func roleBoardHammer() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	v := make([]byte, 64)
	for i := 0; ; i++ {
		if _, err := b.Put("key", v); err != nil {
			return err
		}
		if i%1024 == 0 {
			if _, _, err := b.Get("stop", nil); err == nil {
				return nil
			}
		}
	}
}

// BenchmarkBoardGetContended: Get of a 64-byte value that another process
// rewrites as fast as it can.
func BenchmarkBoardGetContended(b *testing.B) {
	bd := benchBoard(b)
	bd.Put("key", make([]byte, 64))
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), roleEnv+"=board-hammer", "BOARD="+bd.Name())
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		bd.Put("stop", nil)
		c.Wait()
	}()
	// Wait until the writer runs.
	_, first, _ := bd.Get("key", nil)
	for _, rev, _ := bd.Get("key", nil); rev == first; _, rev, _ = bd.Get("key", nil) {
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := bd.Get("key", buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_, last, _ := bd.Get("key", nil)
	b.ReportMetric(float64(last-first)/float64(b.Elapsed().Seconds())/1e6, "Mputs/s")
}

// roleBoardPong answers every revision of "ping" with a put of "pong".
func roleBoardPong() error {
	b, err := OpenBoard(os.Getenv("BOARD"), nil)
	if err != nil {
		return err
	}
	defer b.Close()
	w, _ := b.WatchKeys(0, "ping")
	if os.Getenv("NOSPIN") != "" {
		w.w.Spin.Min = -1
	}
	for {
		es, err := w.Next(context.Background())
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.Deleted {
				return nil
			}
			if _, err := b.Put("pong", e.Value); err != nil {
				return err
			}
		}
	}
}

// BenchmarkBoardWatchRoundTrip: a put of "ping" wakes a watcher in
// another process, which puts "pong" and wakes the benchmark's watcher:
// ns/op is two watch wake-ups and two puts. With spin=false neither
// watcher spins: every wake-up is a futex wake of a sleeper, to compare
// with BenchmarkFutexRoundTrip.
func BenchmarkBoardWatchRoundTrip(b *testing.B) {
	for _, spin := range []bool{true, false} {
		b.Run("spin="+strconv.FormatBool(spin), func(b *testing.B) {
			bd := benchBoard(b)
			c := exec.Command(os.Args[0], "-test.run=^$")
			c.Env = append(os.Environ(), roleEnv+"=board-pong", "BOARD="+bd.Name())
			if !spin {
				c.Env = append(c.Env, "NOSPIN=1")
			}
			c.Stderr = os.Stderr
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				bd.Put("ping", nil)
				bd.Delete("ping")
				c.Wait()
			}()
			w, _ := bd.WatchKeys(0, "pong")
			if !spin {
				w.w.Spin.Min = -1
			}
			ctx := context.Background()
			v := make([]byte, 8)
			s0, _ := bd.Stats()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v[0] = byte(i)
				if _, err := bd.Put("ping", v); err != nil {
					b.Fatal(err)
				}
				if _, err := w.Next(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			s1, _ := bd.Stats()
			b.ReportMetric(float64(s1.Sleeps-s0.Sleeps)/float64(b.N), "sleeps/op")
		})
	}
}

// roleFutexPong: waits for word 0 to change, copies it to word 1, wakes.
func roleFutexPong() error {
	m, err := segment.OpenFile(os.Getenv("FILE"), 4096, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	ping, pong := layout.Word32(m.Bytes(), 0), layout.Word32(m.Bytes(), 64)
	for seen := uint32(0); ; {
		for ping.Load() == seen {
			futex.Wait(ping, seen, time.Now().Add(time.Second))
		}
		seen = ping.Load()
		if seen == ^uint32(0) {
			return nil
		}
		pong.Store(seen)
		futex.Wake(pong, 1)
	}
}

// BenchmarkFutexRoundTrip: the same round trip on two bare futex words
// with sleeping waiters (no eventcount, no board): the floor for
// BenchmarkBoardWatchRoundTrip/spin=false.
func BenchmarkFutexRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "futex")
	m, err := segment.Create(path, 4096, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ping, pong := layout.Word32(m.Bytes(), 0), layout.Word32(m.Bytes(), 64)
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), roleEnv+"=futex-pong", "FILE="+path)
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	var n atomic.Uint32
	defer func() {
		ping.Store(^uint32(0))
		futex.Wake(ping, 1)
		c.Wait()
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := n.Add(1)
		ping.Store(v)
		futex.Wake(ping, 1)
		for cur := pong.Load(); cur != v; cur = pong.Load() {
			futex.Wait(pong, cur, time.Now().Add(time.Second))
		}
	}
}
