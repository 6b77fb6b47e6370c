package shmbus

import "github.com/shmbus/shmbus/internal/segment"

// Waiting returns, per priority, the messages published and not yet
// released, counted from the lanes themselves (ring.Lane.Waiting) rather
// than from the statistics counters, which trail while traffic flows and
// lose a killed peer's unflushed counts.
func (b *Bus) Waiting() ([]uint64, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.exit()
	out := make([]uint64, len(b.lanes))
	err := segment.Guard(func() error {
		for i, l := range b.lanes {
			out[i] = l.Waiting()
		}
		return nil
	})
	return out, err
}
