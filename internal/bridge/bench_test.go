package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shmbus/shmbus"
)

// Benchmarks against an embedded server (in-process connections, file
// store). Compare in one run:
//
//	go test -run '^$' -bench . -benchtime 100000x ./internal/bridge
//
// BenchmarkForward (bus -> stream through the bridge) against
// BenchmarkPublishAsync (nats.go's own async publisher, same window), in
// messages/s; BenchmarkRoundTrip (bus -> stream -> bus) against
// BenchmarkRequestReply (a nats.go request answered by a subscriber), p50.

var benchSizes = []int{64, 1024}

// BenchmarkForward fills a bus with b.N messages, then starts the bridge
// and times until the last is released (so acknowledged by JetStream).
func BenchmarkForward(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			ns := startServer(b, false)
			_, js := ns.connect()
			lane := 1 << 20
			for lane < 2*b.N*(size+8) {
				lane <<= 1
			}
			a := newBus(b, &shmbus.Options{Priorities: 1, LaneCapacity: lane})
			if _, err := js.CreateStream(context.Background(), streamConfig("FW", "fw.*")); err != nil {
				b.Fatal(err)
			}
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
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			br, _ := runBridge(b, ns, "bus:"+a.Name()+"->stream:fw.{priority}")
			done := br.Metrics().Messages.WithLabelValues(br.cfg.Routes[0].Text, "0")
			for metric(done) < float64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

func BenchmarkPublishAsync(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			ns := startServer(b, false)
			nc, _ := ns.connect()
			js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(DefaultWindow))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := js.CreateStream(context.Background(), streamConfig("PA", "pa.*")); err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				m := &nats.Msg{Subject: "pa.0", Data: msg, Header: nats.Header{HdrMsgID: {fmt.Sprint(i)}}}
				if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second)); err != nil {
					b.Fatal(err)
				}
			}
			<-js.PublishAsyncComplete()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	ns := startServer(b, false)
	a := newBus(b, &shmbus.Options{Priorities: 1})
	c := newBus(b, &shmbus.Options{Priorities: 1})
	br, _ := runBridge(b, ns, "bus:"+a.Name()+"->stream:rt.{priority}", "stream:rt.*->bus:"+c.Name())
	br.cfg.Logf = func(string, ...any) {}
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
	msg, buf := make([]byte, 64), make([]byte, 64)
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	ctx := context.Background()
	roundTrip := func() {
		t0 := time.Now()
		if err := p.Send(ctx, msg, 0); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cons.Receive(ctx, buf); err != nil {
			b.Fatal(err)
		}
		h.RecordValue(int64(time.Since(t0)))
	}
	for i := 0; i < 100; i++ { // the route is up, the stream made
		roundTrip()
	}
	h.Reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		roundTrip()
	}
	b.ReportMetric(float64(h.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(h.ValueAtQuantile(99)), "p99-ns")
}

func BenchmarkRequestReply(b *testing.B) {
	ns := startServer(b, false)
	nc, _ := ns.connect()
	sub, err := nc.Subscribe("rr", func(m *nats.Msg) { m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	msg := make([]byte, 64)
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := nc.Request("rr", msg, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		h.RecordValue(int64(time.Since(t0)))
	}
	b.ReportMetric(float64(h.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(h.ValueAtQuantile(99)), "p99-ns")
}

// BenchmarkJetStreamRoundTrip is the bridge's round trip without the
// bridge: a nats.go publish into a stream and a durable pull consumer
// receiving it, to show what JetStream itself costs.
func BenchmarkJetStreamRoundTrip(b *testing.B) {
	ns := startServer(b, false)
	_, js := ns.connect()
	ctx := context.Background()
	st, err := js.CreateStream(ctx, streamConfig("JRT", "jrt.*"))
	if err != nil {
		b.Fatal(err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "d", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	msg := make([]byte, 64)
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	roundTrip := func() {
		t0 := time.Now()
		if _, err := js.PublishAsync("jrt.0", msg); err != nil {
			b.Fatal(err)
		}
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		m.Ack()
		h.RecordValue(int64(time.Since(t0)))
	}
	for i := 0; i < 100; i++ {
		roundTrip()
	}
	h.Reset()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		roundTrip()
	}
	b.ReportMetric(float64(h.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(h.ValueAtQuantile(99)), "p99-ns")
}
