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
	"strconv"
	"sync"
	"testing"
	"time"
)

// The chaos test of fan-out buses: producers (TestChaos's, killed at random
// and at failpoints) and the holders of two durable blocking subscriptions
// and of a lossy one are killed with SIGKILL at random moments and
// restarted. Every committed message reaches each blocking subscription
// (a large one may be lost only by a subscription whose holder was killed
// while reassembling it), intact and in order; each kill of a holder
// redelivers at most one message; the lossy subscription gets only intact
// messages.

func init() { roles["chaos-sub"] = roleChaosSub }

// roleChaosSub holds subscription SHMBUS_SUB (lossy with SHMBUS_LOSSY),
// checks every message and prints "k gen seq prio" from inside the handler,
// before the message is released; "lagged N" after an overrun.
func roleChaosSub() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var s *Subscription
	for {
		s, err = bus.Subscribe(ctx, os.Getenv("SHMBUS_SUB"), &SubscribeOptions{Lossy: os.Getenv("SHMBUS_LOSSY") != "", From: FromOldest})
		if !errors.Is(err, ErrBusy) {
			break
		}
		time.Sleep(5 * time.Millisecond) // the killed holder's death is not yet provable
	}
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	var bad error
	for bad == nil {
		_, err := s.Poll(1, func(m []byte, prio int) {
			if len(m) < chaosHeader || int(binary.LittleEndian.Uint32(m[15:])) != len(m) ||
				crc32.ChecksumIEEE(m[chaosHeader:]) != binary.LittleEndian.Uint32(m[11:]) || int(m[10]) != prio {
				bad = fmt.Errorf("damaged message of %d bytes at priority %d", len(m), prio)
				return
			}
			fmt.Fprintf(out, "%d %d %d %d\n", binary.LittleEndian.Uint16(m), binary.LittleEndian.Uint32(m[2:]), binary.LittleEndian.Uint32(m[6:]), prio)
			out.Flush()
		})
		var lag *LaggedError
		if errors.As(err, &lag) {
			fmt.Fprintf(out, "lagged %v\n", lag.Missed)
			out.Flush()
			continue
		}
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		if err := s.Wait(wctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			cancel()
			return err
		}
		cancel()
	}
	return bad
}

// chaosSizes replays roleChaosProducer's draws for one producer
// generation; chaosIsLarge reports whether its message seq was larger than
// one record.
type chaosSizes struct {
	rng  *rand.Rand
	next uint32
	big  []bool
}

func chaosIsLarge(sizes map[[2]uint32]*chaosSizes, k, gen, seq uint32, record, prios int) bool {
	cs := sizes[[2]uint32{k, gen}]
	if cs == nil {
		cs = &chaosSizes{rng: rand.New(rand.NewPCG(uint64(k)<<32|uint64(gen), 11))}
		sizes[[2]uint32{k, gen}] = cs
	}
	big := 4 * record
	for cs.next <= seq {
		size := chaosHeader + cs.rng.IntN(200)
		if cs.rng.IntN(10) == 0 {
			size = chaosHeader + cs.rng.IntN(big-chaosHeader)
		}
		cs.rng.IntN(prios)
		cs.big = append(cs.big, size > record)
		cs.next++
	}
	return cs.big[seq]
}

func TestChaosFanOut(t *testing.T) {
	dur := 8 * time.Second
	if testing.Short() {
		dur = 3 * time.Second
	}
	if s := os.Getenv("SHMBUS_CHAOS"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SHMBUS_CHAOS=%q: %v", s, err)
		}
		dur = d
	}
	const producers = 3
	b := newBus(t, &Options{Priorities: 3, LaneCapacity: 32 << 10, MaxMessage: 64 << 10, PeerSlots: 32, Subscriptions: 4})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	subNames := []string{"s0", "s1", "lossy"}
	var mu sync.Mutex
	committed := map[chaosKey]bool{}
	delivered := make([]map[chaosKey]int, len(subNames))
	lastSeq := make([]map[[3]uint32]int64, len(subNames))
	for i := range subNames {
		delivered[i], lastSeq[i] = map[chaosKey]int{}, map[[3]uint32]int64{}
	}
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	eof := map[*exec.Cmd]chan struct{}{}
	reap := func(cmd *exec.Cmd) {
		<-eof[cmd]
		cmd.Wait()
	}
	read := func(cmd *exec.Cmd, line func(string)) {
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
				line(sc.Text())
			}
		}()
	}
	startProducer := func(k, gen int) *exec.Cmd {
		env := []string{"SHMBUS_NAME=" + b.Name(), fmt.Sprint("SHMBUS_K=", k), fmt.Sprint("SHMBUS_GEN=", gen), "SHMBUS_N=100000000"}
		if rng.IntN(3) == 0 {
			fp := []string{"after-claim", "before-commit"}[rng.IntN(2)]
			env = append(env, fmt.Sprintf("SHMBUS_FAILPOINT=%s %d", fp, 1+rng.IntN(2000)))
		}
		cmd := child(t, "chaos-producer", env...)
		read(cmd, func(l string) {
			seq, _ := strconv.Atoi(l)
			mu.Lock()
			committed[chaosKey{uint32(k), uint32(gen), uint32(seq)}] = true
			mu.Unlock()
		})
		return cmd
	}
	startSub := func(i int) *exec.Cmd {
		env := []string{"SHMBUS_NAME=" + b.Name(), "SHMBUS_SUB=" + subNames[i]}
		if subNames[i] == "lossy" {
			env = append(env, "SHMBUS_LOSSY=1")
		}
		cmd := child(t, "chaos-sub", env...)
		read(cmd, func(l string) {
			var k, gen, seq, prio uint32
			if len(l) > 6 && l[:6] == "lagged" {
				return
			}
			if _, err := fmt.Sscanf(l, "%d %d %d %d", &k, &gen, &seq, &prio); err != nil {
				fail("subscriber %s printed %q", subNames[i], l)
				return
			}
			key := chaosKey{k, gen, seq}
			mu.Lock()
			delivered[i][key]++
			lk := [3]uint32{k, gen, prio}
			if last, ok := lastSeq[i][lk]; ok && int64(seq) < last && subNames[i] != "lossy" {
				failures = append(failures, fmt.Sprintf("%s: producer %d gen %d priority %d: seq %d after %d", subNames[i], k, gen, prio, seq, last))
			}
			lastSeq[i][lk] = int64(seq)
			mu.Unlock()
		})
		return cmd
	}
	// The subscriptions exist before any message: made from the oldest.
	for _, n := range subNames {
		s, err := b.Subscribe(context.Background(), n, &SubscribeOptions{Lossy: n == "lossy", From: FromOldest})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	gens := make([]int, producers)
	procs := make([]*exec.Cmd, producers)
	for k := range procs {
		procs[k] = startProducer(k, 0)
	}
	subs := make([]*exec.Cmd, len(subNames))
	subKills := make([]int, len(subNames))
	for i := range subs {
		subs[i] = startSub(i)
	}
	end := time.Now().Add(dur)
	kills := 0
	for time.Now().Before(end) {
		time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
		for k, p := range procs {
			if p.ProcessState == nil && processExited(p) {
				reap(p)
				gens[k]++
				procs[k] = startProducer(k, gens[k])
			}
		}
		for i, s := range subs {
			if s.ProcessState == nil && processExited(s) {
				reap(s)
				fail("subscriber %s exited by itself", subNames[i])
				subs[i] = startSub(i)
			}
		}
		if rng.IntN(3) == 0 {
			i := rng.IntN(len(subs))
			subs[i].Process.Kill()
			reap(subs[i])
			subKills[i]++
			subs[i] = startSub(i)
		} else {
			k := rng.IntN(producers)
			procs[k].Process.Kill()
			reap(procs[k])
			gens[k]++
			procs[k] = startProducer(k, gens[k])
		}
		kills++
	}
	for _, p := range procs {
		p.Process.Kill()
		reap(p)
	}
	sizes := map[[2]uint32]*chaosSizes{}
	record := b.MaxRecordPayload()
	// Drained: every small committed message reached both blocking
	// subscriptions (a large one may have been lost with a killed holder),
	// and then a little longer for large ones still on their way.
	drained := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for key := range committed {
			for i := range 2 {
				if delivered[i][key] == 0 && !chaosIsLarge(sizes, key.k, key.gen, key.seq, record, b.Priorities()) {
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !drained() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	for _, s := range subs {
		s.Process.Kill()
		reap(s)
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	for i := range 2 {
		lostSmall, lostLarge, dups := 0, 0, 0
		for key := range committed {
			if delivered[i][key] == 0 {
				if chaosIsLarge(sizes, key.k, key.gen, key.seq, record, b.Priorities()) {
					lostLarge++
				} else {
					lostSmall++
					if lostSmall <= 5 {
						t.Errorf("%s: committed message lost: %+v", subNames[i], key)
					}
				}
			}
		}
		for _, n := range delivered[i] {
			dups += n - 1
		}
		// A killed holder loses at most the large messages it was
		// reassembling: one per producer and priority.
		if lostSmall > 0 || lostLarge > subKills[i]*producers*b.Priorities() {
			chaosDump(t, b)
			t.Fatalf("%s: %d small and %d large committed messages lost; its holder was killed %d times", subNames[i], lostSmall, lostLarge, subKills[i])
		}
		if dups > subKills[i] {
			t.Fatalf("%s: %d messages delivered twice, but its holder was killed only %d times", subNames[i], dups, subKills[i])
		}
		t.Logf("%s: %d delivered, %d twice, %d large lost, %d kills", subNames[i], len(delivered[i]), dups, lostLarge, subKills[i])
	}
	t.Logf("%v: %d kills, %d messages committed, lossy subscription got %d", dur, kills, len(committed), len(delivered[2]))
	if len(committed) < 1000 {
		t.Fatalf("only %d messages committed: the bus made too little progress", len(committed))
	}
}
