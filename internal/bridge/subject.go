package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shmbus/shmbus"
)

// A subject->bus route: a core NATS subscription whose messages are sent
// to the bus as they come. At most once: NATS keeps nothing for a bridge
// that is away, and while the bus is full the subscription's pending
// buffer fills and then the server (or the client) drops messages; drops
// are counted as errors of kind "slow-consumer". Messages must fit one
// NATS message (chunked ones are dead-lettered: use a stream route).

type subscriber struct {
	r     Route
	cfg   *Config
	m     *Metrics
	nc    *nats.Conn
	js    jetstream.JetStream
	bus   *shmbus.Bus
	prod  *shmbus.Producer
	prios []string
	dlJS  jetstream.JetStream // nil: dead letters go out as core NATS messages
}

func (s *subscriber) run(ctx context.Context) error {
	b, err := shmbus.Open(s.r.Bus, &shmbus.OpenOptions{Dir: s.cfg.Dir})
	if err != nil {
		return err
	}
	defer b.Close()
	p, err := b.NewProducer()
	if err != nil {
		return err
	}
	defer p.Close()
	s.bus, s.prod = b, p
	if s.js, err = jetstream.New(s.nc); err != nil {
		return err
	}
	if deadLetterStored(ctx, s.js, s.cfg.DeadLetter) {
		s.dlJS = s.js
	}
	for i := 0; i < b.Priorities(); i++ {
		s.prios = append(s.prios, strconv.Itoa(i))
	}
	sub, err := s.nc.Subscribe(s.r.Subject, func(msg *nats.Msg) { s.handle(ctx, msg) })
	if err != nil {
		return err
	}
	sub.SetPendingLimits(4096, 64<<20)
	<-ctx.Done()
	return sub.Drain()
}

func (s *subscriber) handle(ctx context.Context, msg *nats.Msg) {
	f, err := parseFrame(msg.Header, len(msg.Data), s.bus.Priorities())
	if err == nil && f.count > 1 {
		err = fmt.Errorf("%w: a chunked message on a core NATS subject (use a stream route)", ErrHeaders)
	}
	if err == nil && f.hasCRC && checksum(msg.Data) != f.crc {
		err = fmt.Errorf("%w: checksum does not match", ErrHeaders)
	}
	if err == nil {
		err = s.prod.Send(ctx, msg.Data, f.prio)
		if err == nil {
			s.m.Messages.WithLabelValues(s.r.Text, s.prios[f.prio]).Inc()
			s.m.Bytes.WithLabelValues(s.r.Text, s.prios[f.prio]).Add(float64(len(msg.Data)))
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, shmbus.ErrTooLarge) && !errors.Is(err, shmbus.ErrFull) {
			s.m.Errors.WithLabelValues(s.r.Text, "bus").Inc()
			s.cfg.Logf("route %s: %v (message lost: at-most-once route)", s.r.Text, err)
			return
		}
	}
	reason := "headers"
	if errors.Is(err, shmbus.ErrTooLarge) || errors.Is(err, shmbus.ErrFull) {
		reason = "bus"
	}
	if derr := publishDeadLetter(ctx, s.nc, s.dlJS, s.cfg.DeadLetter, s.r.Text, msg.Header, msg.Data, err); derr != nil {
		s.m.Errors.WithLabelValues(s.r.Text, "dead-letter").Inc()
	}
	s.m.DeadLetters.WithLabelValues(s.r.Text, reason).Inc()
	s.cfg.Logf("route %s: dead-lettered to %s: %v", s.r.Text, s.cfg.DeadLetter, err)
}
