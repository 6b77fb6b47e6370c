package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shmbus/shmbus"
)

// TestAcrossTheHop: bus A -> stream -> bus B in one bridge: every message
// arrives once, with its priority, in order within each priority, while
// the producer keeps A's lanes full.
func TestAcrossTheHop(t *testing.T) {
	ns := startServer(t, false)
	a := newBus(t, &shmbus.Options{Priorities: 4, LaneCapacity: 32 << 10})
	b := newBus(t, &shmbus.Options{Priorities: 4, LaneCapacity: 32 << 10})
	const n = 5000
	sent := sendAll(t, a, n, 200)
	runBridge(t, ns, "bus:"+a.Name()+"->stream:hop.{bus}.{priority}", "stream:hop."+a.Name()+".*->bus:"+b.Name())
	c := newTally()
	receiveAll(t, b, c, n, 300*time.Millisecond)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	c.check(t, n, 0)
}

// TestLargeMessage: a 64 MiB message crosses (server max_payload 1 MiB)
// in chunks and arrives whole, between small messages of the same lane,
// in order.
func TestLargeMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB through a server: not in -short")
	}
	const big = 64 << 20
	large := make([]byte, big)
	rand.Read(large)
	crossLarge(t, big, large)
}

// TestTooLarge: a message larger than the far bus's MaxMessage is refused
// there: dead-lettered (every chunk, with the reason) and counted, never
// dropped silently; the messages around it arrive.
func TestTooLarge(t *testing.T) {
	tooLarge := make([]byte, 3<<20)
	rand.Read(tooLarge)
	ns, br := crossLarge(t, 2<<20, tooLarge)
	nc, _ := ns.connect()
	route := br.cfg.Routes[1].Text
	waitFor(t, 30*time.Second, "refusals counted", func() bool {
		chunks := (len(tooLarge) + chunkSize(nc) - 1) / chunkSize(nc)
		return metric(br.Metrics().Refused.WithLabelValues(route)) == 1 &&
			metric(br.Metrics().DeadLetters.WithLabelValues(route, "too-large")) == float64(chunks)
	})
}

// crossLarge sends "before", msg, "between", "after" on priority 1 of a
// bus A bridged to a bus B whose MaxMessage is limit, and checks that B
// gets them in order (msg only if it fits; if not, that its chunks are
// dead-lettered with their size).
func crossLarge(t *testing.T, limit int, msg []byte) (*natsServer, *Bridge) {
	ns := startServer(t, false)
	nc, _ := ns.connect()
	a := newBus(t, &shmbus.Options{Priorities: 2, LaneCapacity: 1 << 20, MaxMessage: len(msg)})
	b := newBus(t, &shmbus.Options{Priorities: 2, LaneCapacity: 1 << 20, MaxMessage: limit})
	dl, err := nc.SubscribeSync(DefaultDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	dl.SetPendingLimits(-1, -1)
	p, err := a.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	br, _ := runBridge(t, ns, "bus:"+a.Name()+"->stream:big.{priority}", "stream:big.*->bus:"+b.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, m := range [][]byte{[]byte("before"), msg, []byte("between"), []byte("after")} {
		if err := p.Send(ctx, m, 1); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	cons, err := b.AwaitConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	want := [][]byte{[]byte("before"), msg, []byte("between"), []byte("after")}
	fits := len(msg) <= limit
	if !fits {
		want = [][]byte{want[0], want[2], want[3]}
	}
	buf := make([]byte, b.MaxMessage())
	for _, w := range want {
		n, prio, err := cons.Receive(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		if prio != 1 || !bytes.Equal(buf[:n], w) {
			t.Fatalf("got %d bytes at priority %d, want %d bytes at 1", n, prio, len(w))
		}
	}
	if !fits {
		m, err := dl.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("no dead letter for the message too large for bus B: %v", err)
		}
		if m.Header.Get(HdrSize) != strconv.Itoa(len(msg)) || m.Header.Get(HdrError) == "" {
			t.Fatalf("dead letter %v", m.Header)
		}
	}
	return ns, br
}

// TestServerRestart: the NATS server is shut down mid-stream and started
// again on its file store: the bridge reconnects and resumes; nothing is
// lost or duplicated, order within a priority is kept.
func TestServerRestart(t *testing.T) {
	ns := startServer(t, true)
	a := newBus(t, &shmbus.Options{Priorities: 3, LaneCapacity: 32 << 10})
	b := newBus(t, &shmbus.Options{Priorities: 3, LaneCapacity: 32 << 10})
	const n = 20000
	br, _ := runBridge(t, ns, "bus:"+a.Name()+"->stream:rs.{priority}", "stream:rs.*->bus:"+b.Name())
	sent := sendAll(t, a, n, 64)
	c := newTally()
	got := make(chan struct{})
	go func() {
		defer close(got)
		receiveAll(t, b, c, n, 500*time.Millisecond)
	}()
	for round := 0; round < 2; round++ {
		waitFor(t, time.Minute, "traffic", func() bool {
			return metric(br.Metrics().Acks.WithLabelValues(br.cfg.Routes[0].Text)) > float64((round+1)*n/4)
		})
		ns.stop()
		time.Sleep(500 * time.Millisecond)
		ns.start()
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	<-got
	c.check(t, n, 0)
	if metric(br.Metrics().Reconnects) < 2 {
		t.Fatalf("reconnects %v, want 2", metric(br.Metrics().Reconnects))
	}
	_, js := ns.connect()
	sc, _ := streamTally(t, js, "rs.0", n)
	sc.check(t, n, 0)
}

// TestServerUnreachable: while no server runs, the bus keeps its
// messages; when one starts the bridge connects and forwards them all.
func TestServerUnreachable(t *testing.T) {
	ns := startServer(t, true)
	ns.stop()
	a := newBus(t, &shmbus.Options{Priorities: 2})
	const n = 500
	if err := <-sendAll(t, a, n, 64); err != nil {
		t.Fatal(err)
	}
	st0, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	br, _ := runBridge(t, ns, "bus:"+a.Name()+"->stream:un.{priority}")
	time.Sleep(time.Second)
	st, err := a.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth() != st0.Depth() || st0.Depth() == 0 {
		t.Fatalf("bus holds %d bytes of messages with the server down, had %d", st.Depth(), st0.Depth())
	}
	if metric(br.Metrics().Connected) != 0 {
		t.Fatal("connected to no server")
	}
	ns.start()
	_, js := ns.connect()
	waitFor(t, time.Minute, "stream", func() bool {
		_, err := js.StreamNameBySubject(context.Background(), "un.0")
		return err == nil
	})
	c, _ := streamTally(t, js, "un.0", n)
	c.check(t, n, 0)
}

// TestBridgeKilled runs the bridge (bus A -> stream -> bus B) as a child
// process and SIGKILLs it mid-stream three times, starting it again each
// time: the stream holds every message exactly once (the restarted bridge
// publishes what was in flight under the same ids and JetStream drops the
// duplicates), and bus B gets every message, in order per priority, at
// most one duplicate per kill (the message being sent at the kill).
func TestBridgeKilled(t *testing.T) {
	ns := startServer(t, true)
	_, js := ns.connect()
	a := newBus(t, &shmbus.Options{Priorities: 3, LaneCapacity: 32 << 10})
	b := newBus(t, &shmbus.Options{Priorities: 3, LaneCapacity: 32 << 10})
	const n, kills = 30000, 3
	routes := []string{"bus:" + a.Name() + "->stream:kill.{priority}", "stream:kill.*->bus:" + b.Name()}
	sent := sendAll(t, a, n, 64)
	c := newTally()
	got := make(chan struct{})
	go func() {
		defer close(got)
		receiveAll(t, b, c, n, 3*time.Second)
	}()
	stored := func() uint64 {
		s, err := js.Stream(context.Background(), "SHMBUS_"+a.Name())
		if err != nil {
			return 0
		}
		return s.CachedInfo().State.Msgs
	}
	for k := 0; k < kills; k++ {
		cmd := childBridgeCmd(t, ns, routes...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Minute, "progress", func() bool { return stored() > uint64((k+1)*n/(kills+1)) })
		cmd.Process.Signal(unix.SIGKILL)
		cmd.Wait()
	}
	cmd := childBridgeCmd(t, ns, routes...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	<-got
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bridge after SIGTERM: %v", err)
	}
	sc, _ := streamTally(t, js, "kill.0", n)
	sc.check(t, n, 0)
	c.check(t, n, kills)
}

func metric(c prometheus.Collector) float64 { return promtest.ToFloat64(c) }

// TestStreamMaxMsgSize: a stream whose max_msg_size is smaller than the
// messages gets them in chunks that fit it, whole and in order.
func TestStreamMaxMsgSize(t *testing.T) {
	ns := startServer(t, false)
	nc, js := ns.connect()
	ctx := context.Background()
	cfg := streamConfig("SMALL", "small.*")
	cfg.MaxMsgSize = 8192
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	a := newBus(t, &shmbus.Options{Priorities: 1})
	b := newBus(t, &shmbus.Options{Priorities: 1})
	sent := sendAll(t, a, 30, 20000)
	br, _ := runBridge(t, ns, "bus:"+a.Name()+"->stream:small.{priority}", "stream:small.*->bus:"+b.Name())
	c := newTally()
	receiveAll(t, b, c, 30, 200*time.Millisecond)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	c.check(t, 30, 0)
	if got := metric(br.Metrics().Refused.WithLabelValues(br.cfg.Routes[0].Text)); got != 0 {
		t.Fatalf("%v refusals", got)
	}
	_ = nc
}

// TestAuth: the bridge authenticates with the credentials of its Config
// (the command takes them from files and the environment); with wrong
// ones it connects to nothing and the bus keeps its messages.
func TestAuth(t *testing.T) {
	// Over TCP: an in-process connection refused at CONNECT blocks the
	// client until its write timeout.
	port := freePort(t)
	o := &server.Options{JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, Host: "127.0.0.1", Port: port,
		Username: "bridge", Password: "s3cret"}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatal("not ready")
	}
	defer s.Shutdown()
	a := newBus(t, &shmbus.Options{Priorities: 1})
	if err := <-sendAll(t, a, 10, 32); err != nil {
		t.Fatal(err)
	}
	r, _ := ParseRoute("bus:" + a.Name() + "->stream:auth.{priority}")
	run := func(auth Auth) *Bridge {
		b, err := New(Config{Routes: []Route{r}, Auth: auth, Server: fmt.Sprintf("nats://127.0.0.1:%d", port), Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := b.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	wrong := run(Auth{User: "bridge", Password: "guess"})
	if metric(wrong.Metrics().Messages.WithLabelValues(r.Text, "0")) != 0 {
		t.Fatal("forwarded with a wrong password")
	}
	right := run(Auth{User: "bridge", Password: "s3cret"})
	if got := metric(right.Metrics().Messages.WithLabelValues(r.Text, "0")); got != 10 {
		t.Fatalf("forwarded %v with the right password, want 10", got)
	}
}
