//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"time"

	"github.com/shmbus/shmbus"
)

// watch scans the peer tables of the open buses every PollInterval, or at
// once when poked: it releases what dead peers hold and tells subscribers
// who joined, left or died.
func (s *Server) watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	var lastDiscover time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.rescan:
		}
		if s.wantAll() && time.Since(lastDiscover) >= discoverEvery {
			lastDiscover = time.Now()
			s.discover()
		}
		for _, e := range s.entries() {
			s.scan(e)
		}
	}
}

// discoverEvery is how often the directory is listed for new buses while
// someone subscribes to every bus.
const discoverEvery = 500 * time.Millisecond

// wantAll says whether a client subscribed to every bus.
func (s *Server) wantAll() bool {
	for _, c := range s.connsSnapshot() {
		c.mu.Lock()
		all := c.subs[""]
		c.mu.Unlock()
		if all {
			return true
		}
	}
	return false
}

// discover opens the buses of the directory the daemon does not have open
// yet, so that their peers are watched too. Buses it may not open are
// skipped.
func (s *Server) discover() {
	names, err := shmbus.List(s.cfg.Dir)
	if err != nil {
		return
	}
	for _, name := range names {
		s.lookup(name)
	}
}

// eventKinds name event kinds for metrics.
var eventKinds = map[uint8]string{EventJoin: "join", EventLeave: "leave", EventCrash: "crash"}

func roleCode(role string) uint8 {
	switch role {
	case "producer":
		return 1
	case "consumer":
		return 2
	case "subscriber":
		return 3
	}
	return 0
}

// scan compares e's peer table with the last scan.
func (s *Server) scan(e *entry) {
	st, err := e.bus.Stats()
	if err != nil {
		return // closed or removed meanwhile
	}
	now := uint64(time.Now().UnixNano())
	var events []Event
	dead := false
	e.mu.Lock()
	cur := map[peerKey]shmbus.PeerInfo{}
	for _, p := range st.Peers {
		k := peerKey{p.Slot, p.PID, p.Joined.UnixNano()}
		cur[k] = p
		ev := Event{Bus: e.name, PID: uint32(p.PID), Slot: uint16(p.Slot), Role: roleCode(p.Role), Time: now}
		if pid, ok := e.proxied[p.Slot]; ok {
			ev.Client = uint32(pid)
		}
		if _, known := e.seen[k]; !known {
			ev.Kind = EventJoin
			events = append(events, ev)
		}
		if !p.Alive {
			dead = true
			if !e.crashed[k] {
				e.crashed[k] = true
				ev.Kind = EventCrash
				events = append(events, ev)
			}
		}
	}
	for k, p := range e.seen {
		if _, ok := cur[k]; ok {
			continue
		}
		if !e.crashed[k] {
			ev := Event{Kind: EventLeave, Bus: e.name, PID: uint32(p.PID), Slot: uint16(p.Slot), Role: roleCode(p.Role), Time: now}
			if pid, ok := e.proxied[p.Slot]; ok {
				ev.Client = uint32(pid)
			}
			events = append(events, ev)
		}
		delete(e.crashed, k)
		if pid, ok := e.proxied[p.Slot]; ok && pid != 0 {
			delete(e.proxied, p.Slot)
		}
	}
	e.seen = cur
	e.mu.Unlock()

	if dead {
		if released, err := e.bus.ReleaseDead(); err == nil && len(released) > 0 {
			s.metrics.released.Add(float64(len(released)))
			for _, p := range released {
				s.cfg.Logf("bus %q: released slot %d of dead pid %d (%s)", e.name, p.Slot, p.PID, p.Role)
			}
		}
	}
	if len(events) == 0 {
		return
	}
	for _, ev := range events {
		s.metrics.events.WithLabelValues(eventKinds[ev.Kind]).Inc()
	}
	for _, c := range s.connsSnapshot() {
		if !c.wants(e) {
			continue
		}
		for _, ev := range events {
			c.notify(ev)
		}
	}
}

// minimalStat is STAT's document when the server has no StatJSON.
func minimalStat(b *shmbus.Bus) ([]byte, error) {
	st, err := b.Stats()
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"name": b.Name(), "path": b.Path(), "priorities": b.Priorities(),
		"depth": st.Depth(), "consumer_sleeps": st.ConsumerSleeps, "consumer_wakes": st.ConsumerWakes,
		"lanes": st.Lanes, "peers": st.Peers})
}
