package bridge

import (
	"context"
	"fmt"

	"github.com/shmbus/shmbus"
)

// Source is what a bus->stream route reads: messages taken and left in
// place until the route, once JetStream has acknowledged them, releases
// them in order per priority. A message keeps its (priority, position)
// across restarts of the bridge, so Identity plus those name it for good.
//
// Today the source is the bus's consumer role (busSource); a durable
// subscription, when buses have them, is another Source, and nothing in
// the route changes.
type Source interface {
	Name() string
	// Identity is stable for the life of the bus and unique among buses:
	// it prefixes the ids of the messages published from it.
	Identity() string
	Priorities() int
	MaxMessage() int
	// TryTake copies the next message into buf (shmbus.ErrEmpty if none,
	// shmbus.ErrHeld if the lanes with messages wait for releases, a
	// *shmbus.ShortBufferError if buf is too small); Take waits for one.
	TryTake(buf []byte) (shmbus.Taken, error)
	Take(ctx context.Context, buf []byte) (shmbus.Taken, error)
	// Release gives back the messages of a priority taken up to and
	// including the one at pos.
	Release(prio int, pos uint64) error
	Close() error
}

// busSource reads a bus as its consumer.
type busSource struct {
	bus *shmbus.Bus
	c   *shmbus.Consumer
}

// openBusSource opens the bus (under the same permission rules as any
// peer: the segment's mode decides) and waits for its consumer role.
func openBusSource(ctx context.Context, dir, name string) (*busSource, error) {
	b, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: dir})
	if err != nil {
		return nil, err
	}
	c, err := b.AwaitConsumer(ctx)
	if err != nil {
		b.Close()
		return nil, err
	}
	return &busSource{bus: b, c: c}, nil
}

func (s *busSource) Name() string { return s.bus.Name() }

func (s *busSource) Identity() string {
	return fmt.Sprintf("%s.%x", s.bus.Name(), s.bus.Config().Created.UnixNano())
}

func (s *busSource) Priorities() int { return s.bus.Priorities() }
func (s *busSource) MaxMessage() int { return s.bus.MaxMessage() }

func (s *busSource) TryTake(buf []byte) (shmbus.Taken, error) { return s.c.TryTake(buf) }

func (s *busSource) Take(ctx context.Context, buf []byte) (shmbus.Taken, error) {
	return s.c.Take(ctx, buf)
}

func (s *busSource) Release(prio int, pos uint64) error { return s.c.ReleaseThrough(prio, pos) }

// Close gives the consumer role back; what was taken and not released
// stays on the bus for the next consumer.
func (s *busSource) Close() error {
	err := s.c.Close()
	if cerr := s.bus.Close(); err == nil {
		err = cerr
	}
	return err
}
