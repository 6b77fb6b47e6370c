package bridge

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

// TestStreamToBusKilled: a stream->bus bridge process is SIGKILLed at the
// two worst points of a delivery, again and again, and the bus gets every
// message of the stream exactly once, in order per priority:
//
//   - before-commit: the message's record is claimed on the bus and its
//     position written in the state file, not yet published (the restart
//     must send it again);
//   - after-send: the message is on the bus, neither the state file nor
//     JetStream know (the restart must not send it again).
//
// First with nobody reading the bus (the restarted bridge finds the
// position still in the lane), then with a consumer reading (the position
// is released, or recovered as padding, by the time it looks).
func TestStreamToBusKilled(t *testing.T) {
	ns := startServer(t, true)
	a := newBus(t, &shmbus.Options{Priorities: 2})
	b := newBus(t, &shmbus.Options{Priorities: 2, LaneCapacity: 1 << 20})
	const n = 3000
	sent := sendAll(t, a, n, 64)
	_, js := ns.connect()
	_, stop := runBridge(t, ns, "bus:"+a.Name()+"->stream:sk.{priority}")
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the stream", func() bool {
		s, err := js.Stream(context.Background(), "SHMBUS_"+a.Name())
		return err == nil && s.CachedInfo().State.Msgs == n
	})
	stop()

	route := "stream:sk.*->bus:" + b.Name()
	killed := func(point string) {
		t.Helper()
		cmd := childBridgeCmd(t, ns, route)
		cmd.Env = append(cmd.Env, "SHMBUS_KILL_AT="+point+":250")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("bridge with %s: %v, want killed at the failpoint", point, err)
		}
	}
	killed("before-commit") // nobody reads b: the restart finds the claim unpublished
	killed("after-send")    // ... or the message published, in the lane
	killed("before-commit") // the dead claim waits for a consumer to recover it
	c := newTally()
	got := make(chan struct{})
	go func() {
		defer close(got)
		receiveAll(t, b, c, n, 3*time.Second)
	}()
	killed("before-commit") // a consumer reads: the claim is recovered, or not yet
	killed("after-send")    // the message consumed and released, or not yet
	killed("after-send")
	cmd := childBridgeCmd(t, ns, route)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-got
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bridge after SIGTERM: %v", err)
	}
	c.check(t, n, 0)
}
