package shmbus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cross-process tests of fan-out buses: producers and subscribers are
// re-executed copies of the test binary (roles "fan-producer", "fan-sub").

func init() {
	roles["fan-producer"] = roleFanProducer
	roles["fan-sub"] = roleFanSub
}

// Fan-out test messages: message seq of producer k goes at priority
// seq % priorities and carries k, its priority, seq, the body's CRC-32 and
// its size; body and size are functions of seq.
const fanHeader = 16

func fanMsg(buf []byte, k uint8, seq uint32, prios int) ([]byte, int) {
	n := fanHeader + int(seq*7%120)
	off := int(seq * 13 % 1000)
	body := pool[off : off+n-fanHeader]
	prio := int(seq % uint32(prios))
	m := buf[:n]
	m[0], m[1], m[2], m[3] = k, byte(prio), 0, 0
	binary.LittleEndian.PutUint32(m[4:], seq)
	binary.LittleEndian.PutUint32(m[8:], crc32.ChecksumIEEE(body))
	binary.LittleEndian.PutUint32(m[12:], uint32(n))
	copy(m[fanHeader:], body)
	return m, prio
}

// fanCheck checks one received message and returns its producer and seq.
func fanCheck(m []byte, prio, prios int) (uint8, uint32, error) {
	if len(m) < fanHeader {
		return 0, 0, fmt.Errorf("%d-byte message", len(m))
	}
	k, seq := m[0], binary.LittleEndian.Uint32(m[4:])
	var want [256]byte
	w, wp := fanMsg(want[:], k, seq, prios)
	if wp != prio || string(w) != string(m) {
		return k, seq, fmt.Errorf("producer %d seq %d: damaged (%d bytes at priority %d, want %d at %d)", k, seq, len(m), prio, len(w), wp)
	}
	return k, seq, nil
}

// roleFanProducer sends SHMBUS_N fan-out test messages as producer
// SHMBUS_K, prints "sent", and with SHMBUS_HOLD stays attached until killed.
func roleFanProducer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	k, n := uint8(envInt("SHMBUS_K")), envInt("SHMBUS_N")
	var buf [256]byte
	ctx := context.Background()
	for seq := 0; seq < n; seq++ {
		m, prio := fanMsg(buf[:], k, uint32(seq), bus.Priorities())
		if err := p.Send(ctx, m, prio); err != nil {
			return fmt.Errorf("send %d: %w", seq, err)
		}
	}
	fmt.Println("sent")
	if os.Getenv("SHMBUS_HOLD") != "" {
		time.Sleep(time.Hour)
	}
	return p.Close()
}

// roleFanSub subscribes to SHMBUS_SUB ("" = unnamed) with the options of
// SHMBUS_LOSSY, SHMBUS_OLDEST and SHMBUS_EVENTS, prints "ready", and reads
// until it has the last message of every priority of SHMBUS_PRODUCERS
// producers sending SHMBUS_N each (Poll with SHMBUS_POLL, else Receive).
// Blocking subscriptions must see every message once, in order per
// producer and priority; with SHMBUS_RESUME the first of each may come
// later than seq 0 (a takeover), and it prints "first K P SEQ". Lossy ones
// print "missed M lagged L" and count what they got. SHMBUS_DIE_AFTER
// makes it SIGKILL itself after that many messages. With SHMBUS_EVENTS it
// prints every event as "event KIND PID ROLE", and with SHMBUS_N=0 it reads
// events only: until a "died", then another 300 ms.
func roleFanSub() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	opts := &SubscribeOptions{Lossy: os.Getenv("SHMBUS_LOSSY") != "", Events: os.Getenv("SHMBUS_EVENTS") != ""}
	if os.Getenv("SHMBUS_OLDEST") != "" {
		opts.From = FromOldest
	}
	ctx := context.Background()
	s, err := bus.Subscribe(ctx, os.Getenv("SHMBUS_SUB"), opts)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Println("ready")
	prios, producers, n := bus.Priorities(), envInt("SHMBUS_PRODUCERS"), envInt("SHMBUS_N")
	resume, poll, dieAfter := os.Getenv("SHMBUS_RESUME") != "", os.Getenv("SHMBUS_POLL") != "", envInt("SHMBUS_DIE_AFTER")
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	if n == 0 {
		var until time.Time
		buf := make([]byte, 1024)
		for until.IsZero() || time.Now().Before(until) {
			rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			m, err := s.Receive(rctx, buf)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			if err != nil {
				return err
			}
			if m.Event != nil {
				fmt.Fprintf(out, "event %s %d %s\n", m.Event.Kind, m.Event.PID, m.Event.Role)
				out.Flush()
				if m.Event.Kind == PeerDied && until.IsZero() {
					until = time.Now().Add(300 * time.Millisecond)
				}
			}
		}
		return nil
	}
	type key struct {
		k    uint8
		prio int
	}
	next := map[key]int64{}
	for k := 1; k <= producers; k++ {
		for p := 0; p < prios && p < n; p++ {
			next[key{uint8(k), p}] = int64(p)
			if resume {
				next[key{uint8(k), p}] = -1
			}
		}
	}
	last := func(p int) int64 { return int64(p + (n-1-p)/prios*prios) }
	left := len(next)
	got, missed, lagged := 0, uint64(0), 0
	var bad error
	handle := func(m []byte, prio int) {
		if bad != nil {
			return
		}
		k, seq, err := fanCheck(m, prio, prios)
		if err != nil {
			bad = err
			return
		}
		kk := key{k, prio}
		want, ok := next[kk]
		switch {
		case !ok:
			bad = fmt.Errorf("producer %d priority %d: unexpected", k, prio)
			return
		case want == -1:
			fmt.Fprintf(out, "first %d %d %d\n", k, prio, seq)
		case opts.Lossy && int64(seq) >= want:
		case int64(seq) != want:
			bad = fmt.Errorf("producer %d priority %d: seq %d, want %d", k, prio, seq, want)
			return
		}
		if int64(seq) == last(prio) {
			left--
		}
		next[kk] = int64(seq) + int64(prios)
		got++
		if dieAfter > 0 && got == dieAfter {
			out.Flush()
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Hour)
		}
	}
	buf := make([]byte, 1024)
	for left > 0 && bad == nil {
		var err error
		if poll {
			if err = s.Wait(ctx); err == nil {
				_, err = s.Poll(256, handle)
			}
		} else {
			var m Message
			if m, err = s.Receive(ctx, buf); err == nil && m.Event == nil {
				handle(buf[:m.N], m.Prio)
			}
		}
		var lag *LaggedError
		if errors.As(err, &lag) {
			lagged++
			for _, x := range lag.Missed {
				missed += x
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	if bad != nil {
		return bad
	}
	fmt.Fprintf(out, "got %d missed %d lagged %d\n", got, missed, lagged)
	return nil
}

// fanChild is a child process with its stdout read line by line.
type fanChild struct {
	cmd   *exec.Cmd
	lines chan string
	all   []string
}

func startFan(t *testing.T, role string, env ...string) *fanChild {
	t.Helper()
	cmd := child(t, role, env...)
	r, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &fanChild{cmd: cmd, lines: make(chan string, 1<<16)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		io.Copy(io.Discard, r)
		close(c.lines)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return c
}

// expect reads lines until one starts with prefix and returns it.
func (c *fanChild) expect(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("%s: output ended without %q; got %q", c.cmd.Args, prefix, c.all)
			}
			c.all = append(c.all, l)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q after %v; got %q", prefix, d, c.all)
		}
	}
}

// finish waits for c to exit successfully and returns the rest of its output.
func (c *fanChild) finish(t *testing.T, d time.Duration) []string {
	t.Helper()
	if err := waitTimeout(c.cmd, d); err != nil {
		t.Fatalf("%v: %v; output %q", c.cmd.Args, err, c.all)
	}
	for l := range c.lines {
		c.all = append(c.all, l)
	}
	return c.all
}

func parseGot(t *testing.T, line string) (got, missed, lagged int) {
	t.Helper()
	if _, err := fmt.Sscanf(line, "got %d missed %d lagged %d", &got, &missed, &lagged); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return
}

// TestFanOutProcesses: one producer process and four subscriber processes
// (two reading with Receive, two with Poll): every subscriber sees every
// message exactly once, intact, in order per producer and priority.
func TestFanOutProcesses(t *testing.T) {
	n := 1_000_000
	if raceEnabled {
		n = 100_000
	}
	b := fanBus(t, "fan-procs", &Options{Priorities: 3, LaneCapacity: 64 << 10})
	env := []string{"SHMBUS_NAME=" + b.Name(), "SHMBUS_N=" + strconv.Itoa(n), "SHMBUS_PRODUCERS=1"}
	var subs []*fanChild
	for i := range 4 {
		e := append(env, fmt.Sprintf("SHMBUS_SUB=s%d", i))
		if i%2 == 1 {
			e = append(e, "SHMBUS_POLL=1")
		}
		c := startFan(t, "fan-sub", e...)
		c.expect(t, "ready", 30*time.Second)
		subs = append(subs, c)
	}
	prod := startFan(t, "fan-producer", append(env, "SHMBUS_K=1")...)
	for i, c := range subs {
		got, _, _ := parseGot(t, c.expect(t, "got", 5*time.Minute))
		if got != n {
			t.Fatalf("subscriber %d got %d messages, want %d", i, got, n)
		}
		c.finish(t, time.Minute)
	}
	prod.finish(t, time.Minute)
}

// TestFanOutLossyStopped: a lossy subscriber stopped (SIGSTOP) while
// millions of messages pass holds nobody back: the producer and a blocking
// subscriber finish while it is stopped. After SIGCONT it reports
// ErrLagged, and what it missed plus what it got is exactly what was sent;
// everything it got is intact and in order.
func TestFanOutLossyStopped(t *testing.T) {
	n := 3_000_000
	if raceEnabled {
		n = 200_000
	}
	b := fanBus(t, "fan-lossy-stop", &Options{Priorities: 2, LaneCapacity: 64 << 10})
	env := []string{"SHMBUS_NAME=" + b.Name(), "SHMBUS_N=" + strconv.Itoa(n), "SHMBUS_PRODUCERS=1"}
	lossy := startFan(t, "fan-sub", append(env, "SHMBUS_SUB=lossy", "SHMBUS_LOSSY=1")...)
	lossy.expect(t, "ready", 30*time.Second)
	block := startFan(t, "fan-sub", append(env, "SHMBUS_SUB=block", "SHMBUS_POLL=1")...)
	block.expect(t, "ready", 30*time.Second)
	if err := lossy.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	prod := startFan(t, "fan-producer", append(env, "SHMBUS_K=1")...)
	prod.finish(t, 5*time.Minute)
	if got, _, _ := parseGot(t, block.expect(t, "got", 5*time.Minute)); got != n {
		t.Fatalf("blocking subscriber got %d, want %d", got, n)
	}
	block.finish(t, time.Minute)
	if err := lossy.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	got, missed, lagged := parseGot(t, lossy.expect(t, "got", 5*time.Minute))
	lossy.finish(t, time.Minute)
	t.Logf("lossy subscriber: got %d, missed %d in %d reports, of %d", got, missed, lagged, n)
	if lagged < 1 || missed == 0 || got+missed != n {
		t.Fatalf("lossy subscriber: got %d, missed %d (%d reports); %d were sent", got, missed, lagged, n)
	}
}

// TestFanOutBlockingKilled: a blocking subscriber killed mid-stream holds
// the producer back; a new holder of its name takes it over and resumes
// where it released, losing nothing (at most the message it had taken
// and not released comes again).
func TestFanOutBlockingKilled(t *testing.T) {
	n := 200_000
	if raceEnabled {
		n = 50_000
	}
	const dieAfter = 12345
	b := fanBus(t, "fan-kill", &Options{LaneCapacity: 16 << 10})
	env := []string{"SHMBUS_NAME=" + b.Name(), "SHMBUS_N=" + strconv.Itoa(n), "SHMBUS_PRODUCERS=1", "SHMBUS_SUB=victim"}
	victim := startFan(t, "fan-sub", append(env, "SHMBUS_DIE_AFTER="+strconv.Itoa(dieAfter))...)
	victim.expect(t, "ready", 30*time.Second)
	prod := startFan(t, "fan-producer", append(env, "SHMBUS_K=1")...)
	if err := waitTimeout(victim.cmd, 5*time.Minute); err == nil {
		t.Fatal("the victim exited without being killed")
	}
	// The producer is held back by the dead holder's durable subscription.
	held := false
	for range 1000 {
		infos, err := b.Subscriptions()
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) == 1 && infos[0].HoldsBack && !infos[0].Held {
			held = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !held {
		infos, _ := b.Subscriptions()
		t.Fatalf("the dead subscriber does not hold the producer back: %+v", infos)
	}
	select {
	case l := <-prod.lines:
		t.Fatalf("the producer went on past a dead blocking subscriber: %q", l)
	default:
	}
	heir := startFan(t, "fan-sub", append(env, "SHMBUS_RESUME=1")...)
	heir.expect(t, "ready", 30*time.Second)
	var first int
	if _, err := fmt.Sscanf(heir.expect(t, "first", time.Minute), "first 1 0 %d", &first); err != nil {
		t.Fatal(err)
	}
	got, _, _ := parseGot(t, heir.expect(t, "got", 5*time.Minute))
	heir.finish(t, time.Minute)
	prod.finish(t, time.Minute)
	t.Logf("the heir resumed at %d and got %d", first, got)
	if first != dieAfter && first != dieAfter-1 {
		t.Fatalf("the heir resumed at %d; the victim had received %d", first, dieAfter)
	}
	if got != n-first {
		t.Fatalf("the heir got %d messages from %d of %d", got, first, n)
	}
}

// TestFanOutEphemeralKilled: an ephemeral subscriber killed while it holds
// the producer back is removed once its death is provable, and the
// producer finishes.
func TestFanOutEphemeralKilled(t *testing.T) {
	b := fanBus(t, "fan-eph-kill", &Options{LaneCapacity: 16 << 10})
	env := []string{"SHMBUS_NAME=" + b.Name(), "SHMBUS_N=100000", "SHMBUS_PRODUCERS=1", "SHMBUS_SUB="}
	victim := startFan(t, "fan-sub", append(env, "SHMBUS_DIE_AFTER=1000")...)
	victim.expect(t, "ready", 30*time.Second)
	infos, err := b.Subscriptions()
	if err != nil || len(infos) != 1 || infos[0].Durable {
		t.Fatalf("subscriptions %+v, %v", infos, err)
	}
	prod := startFan(t, "fan-producer", append(env, "SHMBUS_K=1")...)
	if err := waitTimeout(victim.cmd, 5*time.Minute); err == nil {
		t.Fatal("the victim exited without being killed")
	}
	prod.expect(t, "sent", 5*time.Minute)
	prod.finish(t, time.Minute)
	if infos, _ := b.Subscriptions(); len(infos) != 0 {
		t.Fatalf("the dead ephemeral subscription is still there: %+v", infos)
	}
}

// TestFanOutProducerDied: three subscribers with events see a producer
// attach, and see it die (SIGKILL) exactly once each.
func TestFanOutProducerDied(t *testing.T) {
	b := fanBus(t, "fan-died", nil)
	env := []string{"SHMBUS_NAME=" + b.Name(), "SHMBUS_N=0", "SHMBUS_EVENTS=1", "SHMBUS_SUB="}
	var subs []*fanChild
	for range 3 {
		c := startFan(t, "fan-sub", env...)
		c.expect(t, "ready", 30*time.Second)
		subs = append(subs, c)
	}
	prod := startFan(t, "fan-producer", "SHMBUS_NAME="+b.Name(), "SHMBUS_N=10", "SHMBUS_K=1", "SHMBUS_HOLD=1")
	prod.expect(t, "sent", 30*time.Second)
	pid := prod.cmd.Process.Pid
	attached := fmt.Sprintf("event attached %d producer", pid)
	for _, c := range subs {
		c.expect(t, attached, 30*time.Second)
	}
	prod.cmd.Process.Kill()
	prod.cmd.Wait()
	died := fmt.Sprintf("event died %d producer", pid)
	for i, c := range subs {
		c.finish(t, time.Minute)
		k := 0
		for _, l := range c.all {
			if l == died {
				k++
			}
			if strings.HasPrefix(l, fmt.Sprintf("event detached %d ", pid)) {
				t.Errorf("subscriber %d: the killed producer detached: %q", i, c.all)
			}
		}
		if k != 1 {
			t.Errorf("subscriber %d: %d died events for pid %d: %q", i, k, pid, c.all)
		}
	}
}
