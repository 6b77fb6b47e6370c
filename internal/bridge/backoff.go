package bridge

import (
	"context"
	"strings"
	"time"
)

// backoff is an exponential back-off from 50 ms to 5 s.
type backoff struct{ d time.Duration }

const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 5 * time.Second
)

func (b *backoff) reset() { b.d = 0 }

// sleep waits the next delay; false if ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	if b.d == 0 {
		b.d = backoffMin
	} else if b.d *= 2; b.d > backoffMax {
		b.d = backoffMax
	}
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func replaceAll(s, old, new string) string { return strings.ReplaceAll(s, old, new) }
