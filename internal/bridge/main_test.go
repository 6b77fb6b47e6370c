package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shmbus/shmbus"

	"github.com/shmbus/shmbus/internal/failpoint"
	"github.com/shmbus/shmbus/internal/testutil"
)

// The test binary doubles as a bridge process: with SHMBUS_TEST_ROLE=bridge
// TestMain runs a bridge configured from the environment instead of the
// tests, until SIGTERM.
const roleEnv = "SHMBUS_TEST_ROLE"

func TestMain(m *testing.M) {
	testutil.RunRole(roleEnv, testutil.Table(map[string]func() error{"bridge": childBridge, "natsserver": childServer}))
	dir, err := os.MkdirTemp("", "shmbus-bridge-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("SHMBUS_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childBridge runs the routes in SHMBUS_ROUTES (separated by spaces)
// against SHMBUS_NATS.
func childBridge() error {
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM)
	defer stop()
	cfg := Config{Server: os.Getenv("SHMBUS_NATS"), AckWait: 2 * time.Second, AckTimeout: 2 * time.Second}
	for _, s := range strings.Fields(os.Getenv("SHMBUS_ROUTES")) {
		r, err := ParseRoute(s)
		if err != nil {
			return err
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	if k := os.Getenv("SHMBUS_KILL_AT"); k != "" {
		if err := killAt(k); err != nil {
			return err
		}
	}
	b, err := New(cfg)
	if err != nil {
		return err
	}
	return b.Run(ctx)
}

// killAt arms a failpoint, "before-commit:K" or "after-send:K", to
// SIGKILL this process the K-th time it fires.
func killAt(spec string) error {
	name, ks, _ := strings.Cut(spec, ":")
	k, err := strconv.Atoi(ks)
	if err != nil {
		return fmt.Errorf("SHMBUS_KILL_AT %q: %v", spec, err)
	}
	p := afterSend
	if name != "after-send" {
		if p = failpoint.Lookup(name); p == nil {
			return fmt.Errorf("SHMBUS_KILL_AT %q: no such point", spec)
		}
	}
	var n atomic.Int64
	p.Set(func() {
		if n.Add(1) == int64(k) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	return nil
}

// childServer runs a nats-server (the module's, linked into this test
// binary) with JetStream, listening on SHMBUS_LISTEN (host:port) and
// storing in SHMBUS_STORE, until SIGTERM.
func childServer() error {
	host, port, err := net.SplitHostPort(os.Getenv("SHMBUS_LISTEN"))
	if err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	s, err := server.NewServer(&server.Options{Host: host, Port: p, JetStream: true, StoreDir: os.Getenv("SHMBUS_STORE"), NoLog: true})
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		return errors.New("not ready")
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGTERM)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// natsServer is an embedded nats-server with JetStream and a file store.
type natsServer struct {
	t    testing.TB
	s    *server.Server
	dir  string
	port int // -1: in-process connections only
}

// startServer starts a server storing in a new temporary directory. With
// listen it listens on 127.0.0.1 at a free port (for child processes and
// restarts), else it takes in-process connections only.
func startServer(t testing.TB, listen bool) *natsServer {
	ns := &natsServer{t: t, dir: t.TempDir(), port: -1}
	if listen {
		ns.port = freePort(t)
	}
	ns.start()
	t.Cleanup(ns.stop)
	return ns
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (ns *natsServer) start() {
	o := &server.Options{JetStream: true, StoreDir: ns.dir, NoLog: true, NoSigs: true, ServerName: "test"}
	if ns.port < 0 {
		o.DontListen = true
	} else {
		o.Host, o.Port = "127.0.0.1", ns.port
	}
	s, err := server.NewServer(o)
	if err != nil {
		ns.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		ns.t.Fatal("nats-server not ready")
	}
	ns.s = s
}

func (ns *natsServer) stop() {
	if ns.s != nil {
		ns.s.Shutdown()
		ns.s.WaitForShutdown()
		ns.s = nil
	}
}

func (ns *natsServer) url() string {
	if ns.port < 0 {
		return "nats://in-process"
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", ns.port)
}

// options are the connection options of a client or bridge of ns.
func (ns *natsServer) options() []nats.Option {
	if ns.port < 0 {
		return []nats.Option{nats.InProcessServer(ns.s)}
	}
	return nil
}

func (ns *natsServer) connect() (*nats.Conn, jetstream.JetStream) {
	ns.t.Helper()
	nc, err := nats.Connect(ns.url(), append(ns.options(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		ns.t.Fatal(err)
	}
	ns.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		ns.t.Fatal(err)
	}
	return nc, js
}

// runBridge runs a bridge of routes in this process until the test ends
// (or the returned stop is called: it waits for Run to return).
func runBridge(t testing.TB, ns *natsServer, routes ...string) (*Bridge, func()) {
	t.Helper()
	return runBridgeLogf(t, ns, func(f string, a ...any) { t.Logf("bridge: "+f, a...) }, routes...)
}

// runBridgeLogf is runBridge logging through logf.
func runBridgeLogf(t testing.TB, ns *natsServer, logf func(string, ...any), routes ...string) (*Bridge, func()) {
	t.Helper()
	cfg := Config{Server: ns.url(), Options: ns.options(), AckWait: 2 * time.Second, AckTimeout: 2 * time.Second, Logf: logf}
	for _, s := range routes {
		r, err := ParseRoute(s)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("bridge: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return b, stop
}

var busSeq int

// newBus makes a bus with a name unique to this test process.
func newBus(t testing.TB, opts *shmbus.Options) *shmbus.Bus {
	t.Helper()
	busSeq++
	name := fmt.Sprintf("br%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, busSeq)
	b, err := shmbus.Create(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Remove(); err != nil && !errors.Is(err, shmbus.ErrNotExist) {
			t.Errorf("remove: %v", err)
		}
	})
	return b
}

// Test messages: sequence number, priority, size; the rest is a pattern
// of the sequence number; a CRC-32 of it all at the end.
func testMsg(seq uint32, prio, size int) []byte {
	size = max(size, 16)
	m := make([]byte, size)
	binary.LittleEndian.PutUint32(m, seq)
	binary.LittleEndian.PutUint32(m[4:], uint32(prio))
	x := seq*2654435761 + 1
	for i := 8; i < size-4; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		m[i] = byte(x)
	}
	binary.LittleEndian.PutUint32(m[size-4:], crc32.ChecksumIEEE(m[:size-4]))
	return m
}

// checkMsg returns the sequence number and priority of a test message, or
// an error if it is damaged.
func checkMsg(m []byte) (uint32, int, error) {
	if len(m) < 16 {
		return 0, 0, fmt.Errorf("message of %d bytes", len(m))
	}
	if crc32.ChecksumIEEE(m[:len(m)-4]) != binary.LittleEndian.Uint32(m[len(m)-4:]) {
		return 0, 0, fmt.Errorf("checksum of a %d-byte message", len(m))
	}
	return binary.LittleEndian.Uint32(m), int(binary.LittleEndian.Uint32(m[4:])), nil
}

// tally counts test messages: every sequence number must come once, and
// within a priority in increasing order.
type tally struct {
	seen  map[uint32]int
	last  map[int]int64
	dups  int
	order []string
	bad   []string
}

func newTally() *tally { return &tally{seen: map[uint32]int{}, last: map[int]int64{}} }

func (c *tally) add(m []byte, prio int) {
	seq, p, err := checkMsg(m)
	if err != nil {
		c.bad = append(c.bad, err.Error())
		return
	}
	if p != prio {
		c.bad = append(c.bad, fmt.Sprintf("message %d of priority %d arrived at %d", seq, p, prio))
	}
	c.seen[seq]++
	if c.seen[seq] > 1 {
		c.dups++
		return
	}
	if l, ok := c.last[p]; ok && int64(seq) < l {
		c.order = append(c.order, fmt.Sprintf("priority %d: %d after %d", p, seq, l))
	}
	c.last[p] = int64(seq)
}

// check reports loss, duplicates beyond allowDups, disorder and damage.
func (c *tally) check(t testing.TB, n int, allowDups int) {
	t.Helper()
	lost := 0
	for i := 0; i < n; i++ {
		if c.seen[uint32(i)] == 0 {
			lost++
		}
	}
	t.Logf("%d messages: %d distinct, %d lost, %d duplicated", n, len(c.seen), lost, c.dups)
	if lost > 0 || c.dups > allowDups || len(c.order) > 0 || len(c.bad) > 0 || len(c.seen) != n {
		t.Fatalf("lost %d, duplicated %d (allowed %d), out of order %v, damaged %v", lost, c.dups, allowDups, first(c.order), first(c.bad))
	}
}

func first(s []string) []string { return s[:min(len(s), 5)] }

// sendAll sends messages 0..n-1 of size to b, priority seq%prios, in its
// own goroutine; the returned channel gives its error.
func sendAll(t testing.TB, b *shmbus.Bus, n, size int) <-chan error {
	p, err := b.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for i := 0; i < n; i++ {
			prio := i % b.Priorities()
			if err := p.Send(ctx, testMsg(uint32(i), prio, size), prio); err != nil {
				done <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	return done
}

// receiveAll receives from b into c until n distinct messages came (and
// for settle more without anything new), or the deadline.
func receiveAll(t testing.TB, b *shmbus.Bus, c *tally, n int, settle time.Duration) {
	t.Helper()
	cons, err := b.AwaitConsumer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	buf := make([]byte, b.MaxMessage())
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		wait := time.Second
		if len(c.seen) >= n {
			wait = settle
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		k, prio, err := cons.Receive(ctx, buf)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			if len(c.seen) >= n {
				return
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		c.add(buf[:k], prio)
	}
	t.Fatalf("timed out with %d of %d messages", len(c.seen), n)
}

// streamTally reads every message stored in the stream of subject.
func streamTally(t testing.TB, js jetstream.JetStream, subject string, n int) (*tally, []jetstream.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := newTally()
	var msgs []jetstream.Msg
	for len(msgs) < n {
		batch, err := oc.Fetch(min(n-len(msgs), 1000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		k := len(msgs)
		for m := range batch.Messages() {
			p, _ := strconv.Atoi(m.Headers().Get(HdrPriority))
			c.add(m.Data(), p)
			msgs = append(msgs, m)
		}
		if len(msgs) == k {
			t.Fatalf("after %d of %d stored messages: %v", len(msgs), n, batch.Error())
		}
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != uint64(n) {
		t.Fatalf("stream holds %d messages, want %d", got, n)
	}
	return c, msgs
}

// waitFor polls cond (backing off) until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	sleep := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 100*time.Millisecond)
	}
}

func childBridgeCmd(t testing.TB, ns *natsServer, routes ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=bridge", "SHMBUS_NATS="+ns.url(), "SHMBUS_ROUTES="+strings.Join(routes, " "))
	cmd.Stderr = os.Stderr
	return cmd
}
