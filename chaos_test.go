package shmbus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/internal/failpoint"
	"github.com/shmbus/shmbus/layout"
	"github.com/shmbus/shmbus/ring"
)

// The chaos test: producers and the consumer are killed with SIGKILL at
// random moments (and producers at exact failpoints: after claiming space,
// before publishing it) and restarted, while messages of every size flow.
// It runs for SHMBUS_CHAOS (a duration; default 15s, 5s with -short).

func init() {
	roles["chaos-producer"] = roleChaosProducer
	roles["chaos-consumer"] = roleChaosConsumer
}

const chaosHeader = 19 // producer u16, generation u32, seq u32, priority u8, crc u32, size u32

func chaosMsg(buf []byte, k, gen, seq uint32, prio, size int) []byte {
	m := buf[:size]
	x := mix(k<<16|gen, seq) | 1
	for i := chaosHeader; i < size; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		m[i] = byte(x)
	}
	binary.LittleEndian.PutUint16(m[0:], uint16(k))
	binary.LittleEndian.PutUint32(m[2:], gen)
	binary.LittleEndian.PutUint32(m[6:], seq)
	m[10] = byte(prio)
	binary.LittleEndian.PutUint32(m[11:], crc32.ChecksumIEEE(m[chaosHeader:]))
	binary.LittleEndian.PutUint32(m[15:], uint32(size))
	return m
}

// roleChaosProducer sends messages as producer SHMBUS_K generation
// SHMBUS_GEN at random priorities and sizes (up to 4x a record), printing
// "seq" after each Send returns, until killed or SHMBUS_N are sent.
// SHMBUS_FAILPOINT=after-claim:N or before-commit:N kills it there.
func roleChaosProducer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	k, gen, n := uint32(envInt("SHMBUS_K")), uint32(envInt("SHMBUS_GEN")), envInt("SHMBUS_N")
	if fp := os.Getenv("SHMBUS_FAILPOINT"); fp != "" {
		var name string
		var at int
		fmt.Sscanf(fp, "%s %d", &name, &at)
		hits := 0
		failpoint.Lookup(name).Set(func() {
			if hits++; hits == at {
				unix.Kill(os.Getpid(), unix.SIGKILL)
				time.Sleep(time.Hour)
			}
		})
	}
	rng := rand.New(rand.NewPCG(uint64(k)<<32|uint64(gen), 11))
	big := 4 * bus.MaxRecordPayload()
	buf := make([]byte, big)
	out := bufio.NewWriter(os.Stdout)
	for seq := uint32(0); seq < uint32(n); seq++ {
		size := chaosHeader + rng.IntN(200)
		if rng.IntN(10) == 0 {
			size = chaosHeader + rng.IntN(big-chaosHeader)
		}
		prio := rng.IntN(bus.Priorities())
		if err := p.Send(context.Background(), chaosMsg(buf, k, gen, seq, prio, size), prio); err != nil {
			return err
		}
		fmt.Fprintln(out, seq)
		out.Flush()
	}
	return p.Close()
}

// roleChaosConsumer checks every message and prints "k gen seq prio" from
// inside the handler, before the message is released.
func roleChaosConsumer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	c, err := bus.AwaitConsumer(context.Background())
	if err != nil {
		return err
	}
	var bad error
	for bad == nil {
		_, err := c.Poll(1, func(m []byte, prio int) {
			if len(m) < chaosHeader || int(binary.LittleEndian.Uint32(m[15:])) != len(m) ||
				crc32.ChecksumIEEE(m[chaosHeader:]) != binary.LittleEndian.Uint32(m[11:]) || int(m[10]) != prio {
				bad = fmt.Errorf("damaged message of %d bytes at priority %d", len(m), prio)
				return
			}
			fmt.Printf("%d %d %d %d\n", binary.LittleEndian.Uint16(m), binary.LittleEndian.Uint32(m[2:]), binary.LittleEndian.Uint32(m[6:]), prio)
		})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if err := c.Wait(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			cancel()
			return err
		}
		cancel()
	}
	return bad
}

type chaosKey struct{ k, gen, seq uint32 }

func TestChaos(t *testing.T) {
	dur := 15 * time.Second
	if testing.Short() {
		dur = 5 * time.Second
	}
	if s := os.Getenv("SHMBUS_CHAOS"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SHMBUS_CHAOS=%q: %v", s, err)
		}
		dur = d
	}
	forEachWake(t, func(t *testing.T, wake WakeMode) { chaos(t, wake, dur/2) })
}

func chaos(t *testing.T, wake WakeMode, dur time.Duration) {
	const producers = 3
	b := newBus(t, &Options{Wake: wake, Priorities: 3, LaneCapacity: 32 << 10, MaxMessage: 64 << 10, PeerSlots: 32})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var mu sync.Mutex
	committed := map[chaosKey]bool{}
	delivered := map[chaosKey]int{}
	lastSeq := map[[3]uint32]int64{} // (k, gen, prio) -> last seq delivered
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	// Each process's stdout is read to the end in its own goroutine, and
	// the process is reaped only after that: Wait closes the pipe, and
	// lines not yet read (messages already delivered) would be lost.
	eof := map[*exec.Cmd]chan struct{}{}
	reap := func(cmd *exec.Cmd) {
		<-eof[cmd]
		cmd.Wait()
	}
	startProducer := func(k, gen int) *exec.Cmd {
		env := []string{"SHMBUS_NAME=" + b.Name(), fmt.Sprint("SHMBUS_K=", k), fmt.Sprint("SHMBUS_GEN=", gen), "SHMBUS_N=100000000"}
		if rng.IntN(3) == 0 {
			fp := []string{"after-claim", "before-commit"}[rng.IntN(2)]
			env = append(env, fmt.Sprintf("SHMBUS_FAILPOINT=%s %d", fp, 1+rng.IntN(2000)))
		}
		cmd := child(t, "chaos-producer", env...)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		eof[cmd] = done
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				seq, _ := strconv.Atoi(sc.Text())
				mu.Lock()
				committed[chaosKey{uint32(k), uint32(gen), uint32(seq)}] = true
				mu.Unlock()
			}
		}()
		return cmd
	}
	consumerKills := 0
	startConsumer := func() *exec.Cmd {
		cmd := child(t, "chaos-consumer", "SHMBUS_NAME="+b.Name())
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		eof[cmd] = done
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var k, gen, seq, prio uint32
				if _, err := fmt.Sscanf(sc.Text(), "%d %d %d %d", &k, &gen, &seq, &prio); err != nil {
					fail("consumer printed %q", sc.Text())
					continue
				}
				key := chaosKey{k, gen, seq}
				mu.Lock()
				delivered[key]++
				lk := [3]uint32{k, gen, prio}
				if last, ok := lastSeq[lk]; ok && int64(seq) < last {
					fail("producer %d gen %d priority %d: seq %d after %d", k, gen, prio, seq, last)
				}
				lastSeq[lk] = int64(seq)
				mu.Unlock()
			}
		}()
		return cmd
	}

	gens := make([]int, producers)
	procs := make([]*exec.Cmd, producers)
	for k := range procs {
		procs[k] = startProducer(k, 0)
	}
	consumer := startConsumer()
	end := time.Now().Add(dur)
	kills := 0
	for time.Now().Before(end) {
		time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
		// Restart producers that died at a failpoint.
		for k, p := range procs {
			if p.ProcessState == nil && processExited(p) {
				reap(p)
				gens[k]++
				procs[k] = startProducer(k, gens[k])
			}
		}
		if rng.IntN(4) == 0 {
			consumer.Process.Kill()
			reap(consumer)
			consumerKills++
			consumer = startConsumer()
		} else {
			k := rng.IntN(producers)
			procs[k].Process.Kill()
			reap(procs[k])
			gens[k]++
			procs[k] = startProducer(k, gens[k])
		}
		kills++
	}
	// Stop the producers, then let the consumer drain everything committed.
	for _, p := range procs {
		p.Process.Kill()
		reap(p)
	}
	drained := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for key := range committed {
			if delivered[key] == 0 {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !drained(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			break
		}
	}
	consumer.Process.Kill()
	reap(consumer)
	wg.Wait()

	for _, f := range failures {
		t.Error(f)
	}
	lost, dups := 0, 0
	for key := range committed {
		if delivered[key] == 0 {
			lost++
			if lost <= 5 {
				t.Errorf("committed message lost: %+v", key)
			}
		}
	}
	for _, n := range delivered {
		dups += n - 1
	}
	if lost > 0 {
		chaosDump(t, b)
		t.Fatalf("%d committed messages lost", lost)
	}
	if dups > consumerKills {
		t.Fatalf("%d messages delivered twice, but the consumer was killed only %d times", dups, consumerKills)
	}
	st, _ := b.Stats()
	var recovered uint64
	for _, l := range st.Lanes {
		recovered += l.Recovered
	}
	t.Logf("%v: %d kills (%d of the consumer), %d messages committed, %d delivered, %d twice, %d dead claims recovered",
		dur, kills, consumerKills, len(committed), len(delivered), dups, recovered)
	if len(committed) < 1000 {
		t.Fatalf("only %d messages committed: the bus made too little progress", len(committed))
	}
}

// chaosDump logs what a failed chaos run left on the bus: each lane's
// positions and next record, every occupied peer slot with its claim
// records, and what Check says — enough to tell a lost message from a lane
// stuck behind a claim nobody recovered.
func chaosDump(t *testing.T, b *Bus) {
	t.Logf("check: %v", Check(filepath.Dir(b.Path()), b.Name()))
	st, err := b.Stats()
	if err != nil {
		t.Logf("stats: %v", err)
		return
	}
	for i, l := range st.Lanes {
		t.Logf("lane %d: head %d tail %d (used %d) in %d out %d recovered %d; length word at head %#x",
			i, l.Head, l.Tail, l.Used(), l.MsgsIn, l.MsgsOut, l.Recovered,
			layout.Word32(b.seg, b.g.Lanes[i].DataOff+l.Head&(l.Capacity-1)).Load())
	}
	for _, p := range st.Peers {
		var claims []string
		for i := range b.lanes {
			c := ring.ClaimAt(b.seg, &b.g, p.Slot, i)
			claims = append(claims, fmt.Sprintf("lane %d {pos %d end %d ok %d}", i, c.Pos.Load(), c.End.Load(), c.OK.Load()))
		}
		t.Logf("peer %+v: %s", p, strings.Join(claims, ", "))
	}
}

// processExited reports whether cmd's process has exited (without reaping
// it): waitid with WNOHANG leaves the siginfo zero while it runs.
func processExited(cmd *exec.Cmd) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && info.Signo != 0
}
