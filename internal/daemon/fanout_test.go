//go:build linux

package daemon

import (
	"bufio"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// recvItems receives n message items of a subscription through c (acking
// each batch when ack), skipping events.
func recvItems(t *testing.T, c *Client, bus, sub string, n int, ack bool) []Item {
	t.Helper()
	var out []Item
	fl := uint8(0)
	if ack {
		fl = SubRecvAck
	}
	for len(out) < n {
		items, err := c.SubRecv(bus, sub, fl, n-len(out), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: after %d of %d: %v", sub, len(out), n, err)
		}
		for _, it := range items {
			if it.Kind == ItemMessage {
				out = append(out, it)
			}
		}
	}
	return out
}

// TestSubscriptionsThroughSocket: every socket subscription of a fan-out
// bus gets every message, checksummed, in order; batches; taken and not
// acknowledged messages go to the next holder; the error codes.
func TestSubscriptionsThroughSocket(t *testing.T) {
	d := startDaemon(t)
	a, b, c := d.dial(t), d.dial(t), d.dial(t)
	info, _, err := a.Create(Create{Name: "fan", Priorities: 3, Subscriptions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove("fan")
	if info.Subscriptions != 4 {
		t.Errorf("bus info %+v, want 4 subscriptions", info)
	}
	if _, _, err := a.Create(Create{Name: "queue"}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("queue")
	if _, err := a.SubOpen("queue", "x", 0); code(err) != CodeBadArgument {
		t.Errorf("subscribe to a queue bus: %v, want BAD_ARGUMENT", err)
	}
	if _, _, err := a.Recv("fan", true, 0); code(err) != CodeBadArgument {
		t.Errorf("RECV on a fan-out bus: %v, want BAD_ARGUMENT", err)
	}
	if _, err := a.SubOpen("fan", "x", 0x80); code(err) != CodeBadArgument {
		t.Errorf("bad flags: %v, want BAD_ARGUMENT", err)
	}
	si, err := b.SubOpen("fan", "billing", 0)
	if err != nil || si.Subscription != "billing" || si.Flags != SubIsDurable || si.Priorities != 3 {
		t.Fatalf("open billing: %+v, %v", si, err)
	}
	if _, err := c.SubOpen("fan", "billing", 0); code(err) != CodeBusy {
		t.Errorf("a second holder: %v, want BUSY", err)
	}
	eph, err := c.SubOpen("fan", "", 0)
	if err != nil || eph.Subscription == "" || eph.Flags&SubIsDurable != 0 {
		t.Fatalf("open an ephemeral one: %+v, %v", eph, err)
	}
	if _, err := c.SubRecv("fan", eph.Subscription, FlagNoWait, 1, 0); code(err) != CodeEmpty {
		t.Errorf("nothing yet: %v, want EMPTY", err)
	}
	if _, err := c.SubRecv("fan", "nosuch", FlagNoWait, 1, 0); code(err) != CodeNotFound {
		t.Errorf("a subscription not held: %v, want NOT_FOUND", err)
	}
	if _, err := c.SubRecv("fan", eph.Subscription, 0, 1, 30*time.Millisecond); code(err) != CodeTimeout {
		t.Errorf("recv with a timeout: %v, want TIMEOUT", err)
	}

	// One message at a time, both subscriptions; sizes up to fragments.
	sizes := []int{12, 100, 9000, 300 << 10}
	for i := 0; i < 120; i++ {
		if err := a.Send("fan", i%3, msg(1, uint32(i), sizes[i%len(sizes)]), false, 5*time.Second); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		for _, s := range []struct {
			c    *Client
			name string
		}{{b, "billing"}, {c, eph.Subscription}} {
			it := recvItems(t, s.c, "fan", s.name, 1, true)[0]
			if k, seq, err := checkMsg(it.Data); err != nil || k != 1 || seq != uint32(i) || int(it.Priority) != i%3 {
				t.Fatalf("%s: message %d: producer %d seq %d prio %d: %v", s.name, i, k, seq, it.Priority, err)
			}
		}
	}
	// A batch: 20 waiting, max 16, then the other 4, in order.
	for i := 0; i < 20; i++ {
		if err := a.Send("fan", 1, msg(2, uint32(i), 50), false, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	items, err := b.SubRecv("fan", "billing", FlagNoWait, 16, 0)
	if err != nil || len(items) != 16 {
		t.Fatalf("batch of 16: %d items, %v", len(items), err)
	}
	more := recvItems(t, b, "fan", "billing", 4, false)
	for i, it := range append(items, more...) {
		if k, seq, err := checkMsg(it.Data); err != nil || k != 2 || seq != uint32(i) {
			t.Fatalf("batch item %d: producer %d seq %d: %v", i, k, seq, err)
		}
	}
	// Acknowledge the first 10: the connection ends with 10 taken and not
	// acknowledged; the next holder gets those 10 again.
	if err := b.SubAck("fan", "billing", 1, items[9].Position); err != nil {
		t.Fatal(err)
	}
	if err := b.SubAck("fan", "billing", 1, items[9].Position); code(err) != CodeBadArgument {
		t.Errorf("ack twice: %v, want BAD_ARGUMENT", err)
	}
	b.Close()
	b2 := d.dial(t)
	var again []Item
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := b2.SubOpen("fan", "billing", 0); err == nil {
			break
		} else if code(err) != CodeBusy || time.Now().After(deadline) {
			t.Fatalf("take billing over: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	again = recvItems(t, b2, "fan", "billing", 10, true)
	for i, it := range again {
		if k, seq, err := checkMsg(it.Data); err != nil || k != 2 || seq != uint32(10+i) {
			t.Fatalf("redelivered item %d: producer %d seq %d: %v", i, k, seq, err)
		}
	}
	if _, err := b2.SubRecv("fan", "billing", FlagNoWait, 1, 0); code(err) != CodeEmpty {
		t.Errorf("after the redelivered: %v, want EMPTY", err)
	}
	recvItems(t, c, "fan", eph.Subscription, 20, true)

	// Metrics name the subscriptions and their lag.
	if err := a.Send("fan", 0, []byte("lag"), false, time.Second); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	d.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, w := range []string{
		`shmbus_bus_subscription_lag_messages{bus="fan",priority="0",subscription="billing"} 1`,
		`shmbus_bus_subscription_held{bus="fan",subscription="billing"} 1`,
		`shmbus_bus_subscriptions{bus="fan",kind="blocking"} 2`,
		`shmbus_bus_subscription_slots{bus="fan"} 4`,
		`shmbus_daemon_subscription_messages_total 290`, // billing 120 + 20 + 10 redelivered, the other 120 + 20
	} {
		if !strings.Contains(rec.Body.String(), w+"\n") {
			t.Errorf("metrics lack %s", w)
		}
	}

	// Durable: closing keeps it; closing with remove unsubscribes it.
	if err := b2.SubClose("fan", "billing", false); err != nil {
		t.Fatal(err)
	}
	if err := b2.SubClose("fan", "billing", false); code(err) != CodeNotFound {
		t.Errorf("close twice: %v, want NOT_FOUND", err)
	}
	if err := b2.SubClose("fan", "billing", true); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if err := b2.SubClose("fan", "billing", true); code(err) != CodeNotFound {
		t.Errorf("unsubscribe twice: %v, want NOT_FOUND", err)
	}
}

// TestLossySubscriptionThroughSocket: a lossy socket subscription that
// falls behind gets LAGGED with the exact count missed, then the rest.
func TestLossySubscriptionThroughSocket(t *testing.T) {
	d := startDaemon(t)
	a, b := d.dial(t), d.dial(t)
	if _, _, err := a.Create(Create{Name: "lossy", LaneCapacity: 4096, Subscriptions: 2}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("lossy")
	if _, err := b.SubOpen("lossy", "l", SubLossy); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := 0; i < n; i++ {
		if err := a.Send("lossy", 0, msg(1, uint32(i), 24), true, 0); err != nil {
			t.Fatalf("send %d: %v (a lossy subscription must never hold producers back)", i, err)
		}
	}
	_, err := b.SubRecv("lossy", "l", FlagNoWait, 8, 0)
	var lag *LaggedError
	if !errors.As(err, &lag) || code(err) != CodeLagged || len(lag.Missed) != 1 {
		t.Fatalf("first receive: %v, want LAGGED with one count", err)
	}
	rest := recvItems(t, b, "lossy", "l", 1, true)
	_, first, err := checkMsg(rest[0].Data)
	if err != nil || uint64(first) != lag.Missed[0] {
		t.Fatalf("missed %d, first message now %d: %v", lag.Missed[0], first, err)
	}
	for want := first + 1; want < n; {
		items, err := b.SubRecv("lossy", "l", FlagNoWait|SubRecvAck, 64, 0)
		if err != nil {
			t.Fatalf("after %d: %v", want, err)
		}
		for _, it := range items {
			if _, seq, err := checkMsg(it.Data); err != nil || seq != want {
				t.Fatalf("message %d, want %d: %v", seq, want, err)
			}
			want++
		}
	}
}

// TestSubscriptionEventsThroughSocket: a socket subscription with events
// gets the peer events in its batches: a mapping producer's join, and its
// death when killed, once.
func TestSubscriptionEventsThroughSocket(t *testing.T) {
	d := startDaemon(t)
	a, b := d.dial(t), d.dial(t)
	if _, _, err := a.Create(Create{Name: "evs", Subscriptions: 2}); err != nil {
		t.Fatal(err)
	}
	defer a.Remove("evs")
	si, err := b.SubOpen("evs", "", SubEvents)
	if err != nil {
		t.Fatal(err)
	}
	cmd := child(t, "fd-producer", "DAEMON_SOCKET="+d.socket, "DAEMON_BUS=evs", "DAEMON_K=1", "DAEMON_N=10", "DAEMON_STOP_AT=5")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "claimed\n" {
		t.Fatalf("producer: %q, %v", line, err)
	}
	pid := uint32(cmd.Process.Pid)
	var kinds []uint8
	msgs := 0
	killed := false
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && (len(kinds) < 2 || msgs < 5) {
		items, err := b.SubRecv("evs", si.Subscription, SubRecvAck, 16, 200*time.Millisecond)
		if code(err) == CodeTimeout {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			switch it.Kind {
			case ItemMessage:
				msgs++
			case ItemEvent:
				if it.Event.PID == pid {
					kinds = append(kinds, it.Event.Kind)
					if it.Event.Role != 1 || it.Event.Bus != "evs" {
						t.Errorf("event %+v, want the producer on evs", it.Event)
					}
				}
			}
		}
		if msgs >= 5 && !killed {
			cmd.Process.Kill()
			cmd.Wait()
			killed = true
		}
	}
	// Nothing more of it: died is told once.
	items, err := b.SubRecv("evs", si.Subscription, 0, 16, 300*time.Millisecond)
	if err == nil {
		for _, it := range items {
			if it.Kind == ItemEvent && it.Event.PID == pid {
				kinds = append(kinds, it.Event.Kind)
			}
		}
	}
	if len(kinds) != 2 || kinds[0] != EventJoin || kinds[1] != EventCrash || msgs != 5 {
		t.Fatalf("events of the producer %v, messages %d: want [join crash] and 5", kinds, msgs)
	}
}
