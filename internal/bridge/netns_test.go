package bridge

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
)

// TestAcrossNamespaces runs the bridge between two network namespaces
// joined by a veth pair, as two hosts would be: namespace A runs the bridge
// of bus A (its producer is this test), namespace B a nats-server process
// (this test binary running the module's server) and the bridge into bus B
// (read by this test). 100 000 messages (25 000 under the race detector,
// which slows the three processes five times over) cross at four
// priorities; the link
// is taken down for 5 s mid-stream and brought back. Nothing may be lost or
// duplicated, and each priority keeps its order. Only addresses inside the
// two namespaces are used.
func TestAcrossNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make network namespaces (ip netns add)")
	}
	if testing.Short() {
		t.Skip("100 000 messages across namespaces: not in -short")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	id := os.Getpid() % 100000
	nsA, nsB := fmt.Sprintf("shmbA%d", id), fmt.Sprintf("shmbB%d", id)
	vA, vB := fmt.Sprintf("shvA%d", id), fmt.Sprintf("shvB%d", id)
	const addrA, addrB = "10.213.77.1", "10.213.77.2"
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := ip("netns", "add", nsA); err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() { ip("netns", "del", nsA) })
	if err := ip("netns", "add", nsB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ip("netns", "del", nsB) })
	for _, args := range [][]string{
		{"link", "add", vA, "type", "veth", "peer", "name", vB},
		{"link", "set", vA, "netns", nsA},
		{"link", "set", vB, "netns", nsB},
		{"-n", nsA, "addr", "add", addrA + "/24", "dev", vA},
		{"-n", nsB, "addr", "add", addrB + "/24", "dev", vB},
		{"-n", nsA, "link", "set", "lo", "up"},
		{"-n", nsB, "link", "set", "lo", "up"},
		{"-n", nsA, "link", "set", vA, "up"},
		{"-n", nsB, "link", "set", vB, "up"},
	} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	inNS := func(ns string, env ...string) *exec.Cmd {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		return cmd
	}
	stopAll := func(cmds ...*exec.Cmd) {
		for _, c := range cmds {
			c.Process.Signal(unix.SIGTERM)
			c.Wait()
		}
	}

	srv := inNS(nsB, roleEnv+"=natsserver", "SHMBUS_LISTEN="+addrB+":4222", "SHMBUS_STORE="+t.TempDir())
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopAll(srv) })
	if sc := bufio.NewScanner(out); !sc.Scan() || sc.Text() != "ready" {
		t.Fatal("nats-server in namespace B did not start")
	}

	a := newBus(t, &shmbus.Options{Priorities: 4, LaneCapacity: 256 << 10})
	b := newBus(t, &shmbus.Options{Priorities: 4, LaneCapacity: 256 << 10})
	url := "nats://" + addrB + ":4222"
	brA := inNS(nsA, roleEnv+"=bridge", "SHMBUS_NATS="+url, "SHMBUS_ROUTES=bus:"+a.Name()+"->stream:ns.{priority}")
	brB := inNS(nsB, roleEnv+"=bridge", "SHMBUS_NATS="+url, "SHMBUS_ROUTES=stream:ns.*->bus:"+b.Name())
	for _, c := range []*exec.Cmd{brA, brB} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { stopAll(brA, brB) })

	n := 100000
	if raceEnabled {
		n = 25000
	}
	sent := sendAll(t, a, n, 64)
	c := newTally()
	got := make(chan struct{})
	go func() {
		defer close(got)
		receiveAll(t, b, c, n, 3*time.Second)
	}()
	arrived := func() uint64 {
		st, err := b.Stats()
		if err != nil {
			return 0
		}
		var in uint64
		for _, l := range st.Lanes {
			in += l.MsgsIn
		}
		return in
	}
	waitFor(t, 2*time.Minute, "a third of the messages", func() bool { return arrived() > uint64(n/3) })
	if err := ip("-n", nsA, "link", "set", vA, "down"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	during := arrived()
	if err := ip("-n", nsA, "link", "set", vA, "up"); err != nil {
		t.Fatal(err)
	}
	if during >= uint64(n) {
		t.Fatalf("all %d messages had arrived before the link came back: the outage was not mid-stream", during)
	}
	t.Logf("%d of %d messages in bus B when the link came back", during, n)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	<-got
	c.check(t, n, 0)
}
