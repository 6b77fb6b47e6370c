package bridge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shmbus/shmbus"
)

// Benchmarks against an embedded server (in-process connections, file
// store). Each compares the bridge with plain nats.go in the same run, on
// the same server, and reports the ratio:
//
//	go test -run '^$' -bench 'Forward|RoundTrip' -benchtime 50000x -count 5 ./internal/bridge
//
// BenchmarkForward: bus -> stream through the bridge against nats.go's own
// async publisher (same window), in messages/s; BenchmarkRoundTrip: bus ->
// stream -> bus against a nats.go request answered by a subscriber, p50.

var benchSizes = []int{64, 1024}

// BenchmarkForward fills a bus with b.N messages; a plain async publisher
// sends b.N/2 messages to a stream of its own, then the bridge forwards
// the bus's (timed from the moment its route is set up until the last is
// released, so acknowledged by JetStream), then the plain publisher sends
// b.N/2 more: msgs/s is the bridge's rate, plain-msgs/s the publisher's
// over both halves, ratio the one over the other.
func BenchmarkForward(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			ns := startServer(b, false)
			nc, _ := ns.connect()
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(DefaultWindow))
			if err != nil {
				b.Fatal(err)
			}
			for _, sc := range []jetstream.StreamConfig{streamConfig("FW", "fw.*"), streamConfig("PA", "pa.*")} {
				if _, err := js.CreateStream(context.Background(), sc); err != nil {
					b.Fatal(err)
				}
			}
			lane := 1 << 20
			for lane < 2*b.N*(size+8) {
				lane <<= 1
			}
			a := newBus(b, &shmbus.Options{Priorities: 1, LaneCapacity: lane})
			p, err := a.NewProducer()
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			msg := make([]byte, size)
			for i := 0; i < b.N; i++ {
				if err := p.Send(context.Background(), msg, 0); err != nil {
					b.Fatal(err)
				}
			}
			seq := 0
			plain := func(n int) time.Duration {
				start := time.Now()
				for i := 0; i < n; i++ {
					seq++
					m := &nats.Msg{Subject: "pa.0", Data: msg, Header: nats.Header{HdrMsgID: {strconv.Itoa(seq)}}}
					if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second)); err != nil {
						b.Fatal(err)
					}
				}
				<-js.PublishAsyncComplete()
				return time.Since(start)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			tPlain := plain(b.N / 2)
			up := make(chan time.Time, 1)
			br, _ := runBridgeLogf(b, ns, func(f string, _ ...any) {
				if strings.HasPrefix(f, "route %s: forwarding") {
					up <- time.Now()
				}
			}, "bus:"+a.Name()+"->stream:fw.{priority}")
			start := <-up
			done := br.Metrics().Messages.WithLabelValues(br.cfg.Routes[0].Text, "0")
			for metric(done) < float64(b.N) {
				time.Sleep(100 * time.Microsecond)
			}
			tBridge := time.Since(start)
			tPlain += plain(b.N - b.N/2)
			b.StopTimer()
			bridgeRate := float64(b.N) / tBridge.Seconds()
			plainRate := float64(b.N) / tPlain.Seconds()
			b.ReportMetric(bridgeRate, "msgs/s")
			b.ReportMetric(plainRate, "plain-msgs/s")
			b.ReportMetric(bridgeRate/plainRate, "ratio")
		})
	}
}

// BenchmarkRoundTrip alternates, in blocks of 100 (so that one kind's
// trailing work, acknowledgements and releases, does not land in another's
// samples), three round trips of a 64-byte message through the same server, over TCP on the loopback (as a deployment
// would connect; in-process connections are synchronous pipes that favour
// the one-flow references): bus -> stream -> bus through the bridge; a
// nats.go request answered by a subscriber (core NATS, nothing stored);
// and a nats.go JetStream publish with the bridge's headers (so with a
// Nats-Msg-Id for the duplicate window) read by a durable pull consumer
// and acknowledged: what the stored hop costs without the bridge. p50-ns
// is the bridge's median, rr-p50-ns and js-p50-ns the references', ratio
// and js-ratio the bridge's over each.
func BenchmarkRoundTrip(b *testing.B) {
	ns := startServer(b, true)
	a := newBus(b, &shmbus.Options{Priorities: 1})
	c := newBus(b, &shmbus.Options{Priorities: 1})
	runBridgeLogf(b, ns, func(string, ...any) {}, "bus:"+a.Name()+"->stream:rt.{priority}", "stream:rt.*->bus:"+c.Name())
	p, err := a.NewProducer()
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	cons, err := c.AwaitConsumer(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()
	ctx := context.Background()
	nc, js := ns.connect()
	sub, err := nc.Subscribe("rr", func(m *nats.Msg) { m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	rc, _ := ns.connect() // the requester: its own connection, as a remote client would have
	st, err := js.CreateStream(ctx, streamConfig("JRT", "jrt.*"))
	if err != nil {
		b.Fatal(err)
	}
	jc, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, err := jc.Messages()
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	msg, buf := make([]byte, 64), make([]byte, 64)
	hBridge := hdrhistogram.New(1, int64(10*time.Second), 3)
	hRR := hdrhistogram.New(1, int64(10*time.Second), 3)
	hJS := hdrhistogram.New(1, int64(10*time.Second), 3)
	seq := 0
	bridge := func() {
		t0 := time.Now()
		if err := p.Send(ctx, msg, 0); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cons.Receive(ctx, buf); err != nil {
			b.Fatal(err)
		}
		hBridge.RecordValue(int64(time.Since(t0)))
	}
	request := func() {
		t0 := time.Now()
		if _, err := rc.Request("rr", msg, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		hRR.RecordValue(int64(time.Since(t0)))
	}
	jetStream := func() {
		seq++
		t0 := time.Now()
		h := nats.Header{HdrMsgID: {strconv.Itoa(seq)}, HdrPriority: {"0"}, HdrProducer: {"1/1"}}
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: "jrt.0", Header: h, Data: msg}); err != nil {
			b.Fatal(err)
		}
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		m.Ack()
		hJS.RecordValue(int64(time.Since(t0)))
	}
	const block = 100
	run := func(n int) {
		for i := 0; i < n; i += block {
			for _, f := range []func(){bridge, request, jetStream} {
				for k := i; k < min(n, i+block); k++ {
					f()
				}
			}
		}
	}
	run(block) // the route is up, the stream made
	hBridge.Reset()
	hRR.Reset()
	hJS.Reset()
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	p50 := float64(hBridge.ValueAtQuantile(50))
	b.ReportMetric(p50, "p50-ns")
	b.ReportMetric(float64(hBridge.ValueAtQuantile(99)), "p99-ns")
	b.ReportMetric(float64(hRR.ValueAtQuantile(50)), "rr-p50-ns")
	b.ReportMetric(float64(hJS.ValueAtQuantile(50)), "js-p50-ns")
	b.ReportMetric(p50/float64(hRR.ValueAtQuantile(50)), "ratio")
	b.ReportMetric(p50/float64(hJS.ValueAtQuantile(50)), "js-ratio")
}
