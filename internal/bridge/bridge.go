// Package bridge carries messages between local shmbus buses and NATS
// (JetStream streams, or core NATS subjects), so that buses on different
// machines exchange messages through a NATS server or cluster.
//
// A Bridge runs Routes (see Route and ParseRoute): bus->stream publishes
// every message of a bus into a JetStream stream exactly once (message ids
// stable across bridge restarts, released from the bus only once stored);
// stream->bus delivers a stream's messages to a bus through a durable
// consumer, acknowledging each after the bus took it; subject->bus is the
// at-most-once variant on a core NATS subject. Messages larger than the
// server's max_payload travel in chunks and are reassembled whole. The
// guarantees, their limits and the headers are in docs/bridge.md.
//
// Each route is an ordinary peer of its bus (a consumer, or a producer): it
// opens the bus as any process does, under the segment's permissions.
package bridge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Bridge runs a configuration's routes over one NATS connection.
type Bridge struct {
	cfg Config
	m   *Metrics
}

// New checks cfg (errors wrap ErrConfig) and returns a bridge ready to Run.
func New(cfg Config) (*Bridge, error) {
	cfg.setDefaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if _, err := cfg.Auth.options(); err != nil {
		return nil, err
	}
	return &Bridge{cfg: cfg, m: newMetrics()}, nil
}

// Metrics are the bridge's counters.
func (b *Bridge) Metrics() *Metrics { return b.m }

// Run connects (retrying with back-off while the server is unreachable)
// and runs every route until ctx is done. A route that fails is logged,
// counted and started again after a back-off; nothing a route holds is
// lost by that. When ctx is done, each route finishes what is in flight
// (bus->stream: waits up to AckTimeout for the acknowledgements) and Run
// returns nil.
func (b *Bridge) Run(ctx context.Context) error {
	cfg := &b.cfg
	opts, _ := cfg.Auth.options()
	opts = append(opts,
		nats.Name("shmbus bridge"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1), // publishes fail while disconnected; the routes resend in order
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := backoffMin << min(attempts, 7)
			d = min(d, backoffMax)
			return d/2 + rand.N(d/2+1)
		}),
		nats.ConnectHandler(func(*nats.Conn) {
			b.m.Connected.Set(1)
			cfg.Logf("connected to %s", cfg.Server)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.m.Reconnects.Inc()
			b.m.Connected.Set(1)
			cfg.Logf("reconnected to %s", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.m.Connected.Set(0)
			if err != nil {
				cfg.Logf("disconnected: %v", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			b.m.Errors.WithLabelValues(subj, "nats").Inc()
			cfg.Logf("nats: %s: %v", subj, err)
		}),
	)
	opts = append(opts, cfg.Options...)
	nc, err := nats.Connect(cfg.Server, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", cfg.Server, err)
	}
	if nc.IsConnected() {
		b.m.Connected.Set(1)
	} else {
		cfg.Logf("%s unreachable; retrying", cfg.Server)
	}
	defer nc.Close()
	var wg sync.WaitGroup
	for _, r := range cfg.Routes {
		wg.Go(func() { b.runRoute(ctx, r, nc) })
	}
	wg.Wait()
	if nc.IsConnected() {
		nc.FlushTimeout(time.Second) // acknowledgements of the last deliveries
	}
	return nil
}

// runRoute runs r until ctx is done, starting it again after failures.
func (b *Bridge) runRoute(ctx context.Context, r Route, nc *nats.Conn) {
	var bo backoff
	for ctx.Err() == nil {
		err := b.routeOnce(ctx, r, nc, &bo)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			b.m.Errors.WithLabelValues(r.Text, "route").Inc()
			b.cfg.Logf("route %s: %v (starting again)", r.Text, err)
		}
		bo.sleep(ctx)
	}
}

// setUp runs setup until it succeeds, counting and logging (once per
// run of failures) each failure and backing off between tries. It is
// false if ctx ended first.
func (b *Bridge) setUp(ctx context.Context, r Route, bo *backoff, what string, setup func(context.Context) error) bool {
	for {
		err := setup(ctx)
		if err == nil {
			bo.reset()
			return true
		}
		b.m.Errors.WithLabelValues(r.Text, "setup").Inc()
		if bo.d == 0 {
			b.cfg.Logf("route %s: %s%v (retrying)", r.Text, what, err)
		}
		if !bo.sleep(ctx) {
			return false
		}
	}
}

func (b *Bridge) routeOnce(ctx context.Context, r Route, nc *nats.Conn, bo *backoff) error {
	cfg := &b.cfg
	switch r.Kind {
	case BusToStream:
		src, err := openBusSource(ctx, cfg.Dir, r.Bus)
		if err != nil {
			return err
		}
		defer src.Close()
		f, err := newForwarder(r, cfg, b.m, nc, src)
		if err != nil {
			return err
		}
		if !b.setUp(ctx, r, bo, "stream: ", f.ensureStream) {
			return nil
		}
		cfg.Logf("route %s: forwarding bus %q", r.Text, r.Bus)
		return f.run(ctx)
	case StreamToBus:
		d, err := openDeliverer(r, cfg, b.m, nc)
		if err != nil {
			return err
		}
		defer d.Close()
		if !b.setUp(ctx, r, bo, "", func(ctx context.Context) error { return d.setup(ctx, false) }) {
			return nil
		}
		cfg.Logf("route %s: delivering stream %s to bus %q", r.Text, d.stream, r.Bus)
		return d.run(ctx)
	case SubjectToBus:
		s := &subscriber{r: r, cfg: cfg, m: b.m, nc: nc}
		return s.run(ctx)
	case BoardKV:
		mi, err := openMirror(r, cfg, b.m, nc)
		if err != nil {
			return err
		}
		defer mi.Close()
		if !b.setUp(ctx, r, bo, "", mi.setup) {
			return nil
		}
		cfg.Logf("route %s: mirroring board %q and bucket %s", r.Text, r.Board, r.Bucket)
		return mi.run(ctx)
	}
	return fmt.Errorf("%w: route kind %v", ErrConfig, r.Kind)
}
