package cclient

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
)

// startCFiles is startC with files passed as fds 3, 4, ...
func startCFiles(t *testing.T, files []*os.File, bin string, args ...string) *cmdC {
	t.Helper()
	c := &cmdC{Cmd: exec.Command(bin, args...), done: make(chan struct{})}
	c.Stdout, c.Stderr = &c.out, &c.errb
	c.ExtraFiles = files
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.Cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.Process.Kill()
			<-c.done
		}
	})
	return c
}

// TestAttachByFD: the C client attaches to a segment by file descriptor:
// the bus's own file, and a sealed memfd (as the daemon hands them out over
// SCM_RIGHTS) holding a fresh copy of a segment, which C producer and
// consumer processes share through it alone.
func TestAttachByFD(t *testing.T) {
	needC(t)
	bus, _ := newBus(t, shmbus.Options{Priorities: 2, LaneCapacity: 64 << 10, MaxMessage: 1 << 20})
	f, err := os.OpenFile(bus.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := startCFiles(t, []*os.File{f}, cBin, "info", "fd:3").wait(t, 10*time.Second)
	if !strings.Contains(out, "priorities=2 capacity=65536") {
		t.Fatalf("info fd:3: %s", out)
	}

	// A sealed memfd with a copy of the fresh (empty, unattached) segment.
	img, err := os.ReadFile(bus.Path())
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.MemfdCreate("shmbus-cclient-test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	mf := os.NewFile(uintptr(fd), "memfd")
	defer mf.Close()
	if _, err := mf.Write(img); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(mf.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		t.Fatal(err)
	}
	g := gen{Min: tmHeader, Max: 2000, BigEvery: 100, BigSize: 300 << 10, Prio: "cycle"}
	cons := startCFiles(t, []*os.File{mf}, cSan, "consume", "fd:3", "--count", "1000", "--exact")
	prod := startCFiles(t, []*os.File{mf}, cSan, append([]string{"produce", "fd:3", "--id", "9", "--count", "1000"}, g.args()...)...)
	prod.wait(t, 30*time.Second)
	out = cons.wait(t, 30*time.Second)
	if !strings.Contains(out, "producer 9 count 1000 complete") {
		t.Fatalf("consumer: %s", out)
	}
	// Sealed: nobody could have resized it.
	var st unix.Stat_t
	if err := unix.Fstat(int(mf.Fd()), &st); err != nil || st.Size != int64(len(img)) {
		t.Fatalf("memfd size %d (%v), want %d", st.Size, err, len(img))
	}
}
