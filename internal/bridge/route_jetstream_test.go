package bridge

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shmbus/shmbus"
)

// TestBusToStream: every message of a bus lands in the stream once, with
// its priority, producer and a Nats-Msg-Id naming its bus, lane and
// position; the bus is empty afterwards (released after the acks).
func TestBusToStream(t *testing.T) {
	ns := startServer(t, false)
	_, js := ns.connect()
	b := newBus(t, &shmbus.Options{Priorities: 3, LaneCapacity: 64 << 10})
	const n = 3000
	sent := sendAll(t, b, n, 100)
	br, _ := runBridge(t, ns, "bus:"+b.Name()+"->stream:t.{bus}.{priority}")
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	c, msgs := streamTally(t, js, "t."+b.Name()+".0", n)
	c.check(t, n, 0)
	ids := map[string]bool{}
	for _, m := range msgs {
		h := m.Headers()
		id := h.Get(HdrMsgID)
		if ids[id] {
			t.Fatalf("message id %s twice", id)
		}
		ids[id] = true
		_, prio, _ := checkMsg(m.Data())
		if want := fmt.Sprintf("t.%s.%d", b.Name(), prio); m.Subject() != want || h.Get(HdrPriority) != strconv.Itoa(prio) {
			t.Fatalf("message on %s with priority %s, want %s / %d", m.Subject(), h.Get(HdrPriority), want, prio)
		}
		if h.Get(HdrProducer) == "" || !strings.HasPrefix(id, b.Name()+".") {
			t.Fatalf("headers %v", h)
		}
	}
	waitFor(t, 10*time.Second, "bus to be empty", func() bool {
		st, err := b.Stats()
		return err == nil && st.Depth() == 0
	})
	route := br.cfg.Routes[0].Text
	sum := 0.0
	for p := 0; p < 3; p++ {
		sum += testutil.ToFloat64(br.Metrics().Messages.WithLabelValues(route, strconv.Itoa(p)))
	}
	if sum != n {
		t.Fatalf("forwarded messages metric %v, want %d", sum, n)
	}
	rec := httptest.NewRecorder()
	br.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := fmt.Sprintf(`shmbus_bridge_acks_total{route=%q} %d`, route, n); !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("metrics page lacks %s", want)
	}
}

// TestStreamToBus: messages stored in a stream with priority headers go to
// the bus in order per priority; one without headers, one with a priority
// the bus lacks and one claiming a wrong checksum are dead-lettered and
// counted, and the route goes on.
func TestStreamToBus(t *testing.T) {
	ns := startServer(t, false)
	nc, js := ns.connect()
	ctx := context.Background()
	b := newBus(t, &shmbus.Options{Priorities: 4})
	if _, err := js.CreateStream(ctx, streamConfig("IN", "in.>")); err != nil {
		t.Fatal(err)
	}
	dl, err := nc.SubscribeSync(DefaultDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	for i := 0; i < n; i++ {
		prio := i % 4
		m := &nats.Msg{Subject: "in." + strconv.Itoa(prio), Header: nats.Header{HdrPriority: {strconv.Itoa(prio)}}, Data: testMsg(uint32(i), prio, 64)}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 100: // no headers at all
			js.Publish(ctx, "in.x", []byte("no headers"))
		case 200: // a priority the bus does not have
			js.PublishMsg(ctx, &nats.Msg{Subject: "in.9", Header: nats.Header{HdrPriority: {"9"}}, Data: []byte("prio 9")})
		case 300: // damaged on the way
			js.PublishMsg(ctx, &nats.Msg{Subject: "in.1", Header: nats.Header{HdrPriority: {"1"}, HdrCRC: {"00000000"}}, Data: []byte("damaged")})
		}
	}
	br, _ := runBridge(t, ns, "stream:in.>->bus:"+b.Name())
	c := newTally()
	receiveAll(t, b, c, n, 200*time.Millisecond)
	c.check(t, n, 0)
	reasons := map[string]bool{}
	for i := 0; i < 3; i++ {
		m, err := dl.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("dead letter %d: %v", i, err)
		}
		if m.Header.Get(HdrError) == "" || m.Header.Get(HdrRoute) == "" {
			t.Fatalf("dead letter without reason: %v", m.Header)
		}
		reasons[string(m.Data)] = true
	}
	if !reasons["no headers"] || !reasons["prio 9"] || !reasons["damaged"] {
		t.Fatalf("dead letters %v", reasons)
	}
	route := br.cfg.Routes[0].Text
	if got := testutil.ToFloat64(br.Metrics().DeadLetters.WithLabelValues(route, "headers")) +
		testutil.ToFloat64(br.Metrics().DeadLetters.WithLabelValues(route, "checksum")); got != 3 {
		t.Fatalf("dead letters counted: %v, want 3", got)
	}
}

// TestSubjectToBus: the core NATS route delivers what it receives while
// it is subscribed; a message without headers is dead-lettered.
func TestSubjectToBus(t *testing.T) {
	ns := startServer(t, false)
	nc, _ := ns.connect()
	b := newBus(t, &shmbus.Options{Priorities: 2})
	br, _ := runBridge(t, ns, "subject:core.in->bus:"+b.Name())
	route := br.cfg.Routes[0].Text
	// At most once: wait until the subscription exists before counting.
	waitFor(t, 10*time.Second, "subscription", func() bool { return ns.s.NumSubscriptions() > 0 })
	time.Sleep(50 * time.Millisecond)
	const n = 200
	for i := 0; i < n; i++ {
		nc.PublishMsg(&nats.Msg{Subject: "core.in", Header: nats.Header{HdrPriority: {strconv.Itoa(i % 2)}}, Data: testMsg(uint32(i), i%2, 32)})
	}
	nc.Publish("core.in", []byte("bare"))
	nc.Flush()
	c := newTally()
	receiveAll(t, b, c, n, 200*time.Millisecond)
	c.check(t, n, 0)
	waitFor(t, 10*time.Second, "dead letter count", func() bool {
		return testutil.ToFloat64(br.Metrics().DeadLetters.WithLabelValues(route, "headers")) == 1
	})
}
