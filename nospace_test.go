package shmbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// when the test ends.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the test: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestReassemblyNoSpace is the report's case: low-priority messages wait
// while a high-priority message arrives that the consumer has no room to
// reassemble. The consumer reports it once (ErrDropped, naming its
// priority, size and producer, wrapping ErrNoSpace), counts it, drops its
// fragments, and delivers the low-priority messages and what follows.
func TestReassemblyNoSpace(t *testing.T) {
	dir := smallTmpfs(t, "2m")
	b, err := Create("e", &Options{Dir: dir, Priorities: 2, LaneCapacity: 64 << 10, MaxMessage: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	p, _ := b.NewProducer()
	for i := 1; i <= 3; i++ {
		if err := p.Send(context.Background(), fmt.Appendf(nil, "low-%d", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Leave less room than the message needs.
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	const big = 900000
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	if free := int64(fs.Bavail) * fs.Bsize; free > big/2 {
		if err := unix.Fallocate(int(filler.Fd()), 0, 0, free-big/2); err != nil {
			t.Fatal(err)
		}
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := p.Send(ctx, bigMsg(make([]byte, big), 0, 0, big), 1)
		if err == nil {
			err = p.Send(ctx, []byte("high after"), 1)
		}
		sent <- err
	}()
	// The big message's first fragments are in its lane before the
	// consumer looks, as in the report.
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if st, err := b.Stats(); err != nil || st.Lanes[1].Used() > 0 {
			break
		}
		time.Sleep(delay)
	}
	var got []string
	var drops []error
	buf := make([]byte, 1<<20)
	for len(got) < 4 && len(drops) < 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n, _, err := c.Receive(ctx, buf)
		cancel()
		switch {
		case errors.Is(err, ErrDropped):
			drops = append(drops, err)
		case err != nil:
			t.Fatalf("receive after %q: %v", got, err)
		default:
			got = append(got, string(buf[:n]))
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	if len(drops) != 1 {
		t.Fatalf("%d drops reported: %v", len(drops), drops)
	}
	t.Logf("reported: %v", drops[0])
	msg := drops[0].Error()
	for _, want := range []string{"priority 1", fmt.Sprintf("%d bytes", big), fmt.Sprintf("producer slot %d (pid %d)", p.slot, os.Getpid())} {
		if !strings.Contains(msg, want) {
			t.Errorf("the report %q does not say %q", msg, want)
		}
	}
	if !errors.Is(drops[0], ErrNoSpace) {
		t.Errorf("the report does not wrap ErrNoSpace: %v", drops[0])
	}
	slices.Sort(got)
	if want := []string{"high after", "low-1", "low-2", "low-3"}; !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
	if _, _, err := c.TryReceive(buf); !errors.Is(err, ErrEmpty) {
		t.Fatalf("after the drop: %v", err)
	}
	if st, _ := b.Stats(); st.Dropped != 1 {
		t.Fatalf("stats count %d dropped messages, want 1", st.Dropped)
	}
	if len(c.asm.parts) != 0 {
		t.Fatalf("a dropped message is still in reassembly")
	}
}
