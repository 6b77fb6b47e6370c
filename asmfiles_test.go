package shmbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Reassembly files and the other users of a world-writable directory.

func init() {
	roles["asm-plant"] = roleAsmPlant
	roles["asm-victim"] = roleAsmVictim
}

// asmIdleHeader is a valid header of an idle reassembly file of (lane, slot).
func asmIdleHeader(lane, slot int) []byte {
	h := make([]byte, asmHeader)
	copy(h, asmMagic[:])
	binary.LittleEndian.PutUint32(h[asmOffLane:], uint32(lane))
	binary.LittleEndian.PutUint32(h[asmOffSlot:], uint32(slot))
	binary.LittleEndian.PutUint32(h[asmOffState:], asmIdle)
	return h
}

// plantAsm writes a file of size bytes starting with hdr at path, with
// exactly mode.
func plantAsm(path string, hdr []byte, size int64, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	_, err = f.WriteAt(hdr, 0)
	return err
}

// TestAsmFileTrust: a starting consumer adopts a reassembly file left in
// the bus's directory only if it is a regular file with one link, owned by
// the bus's user, and granting nobody more than the segment does. The
// others it removes (they are this user's) without using them.
func TestAsmFileTrust(t *testing.T) {
	b := newBus(t, &Options{LaneCapacity: 64 << 10, MaxMessage: 1 << 20, PeerSlots: 8})
	base := b.Path()
	size := int64(asmHeader + 1<<20)
	good := fmt.Sprintf("%s~asm.0.1.%016x", base, 1)
	for _, p := range []struct {
		path string
		slot int // in the header
		mode os.FileMode
	}{
		{good, 1, 0o600},
		{fmt.Sprintf("%s~asm.0.2", base), 2, 0o600},          // the name older consumers used
		{fmt.Sprintf("%s~asm.0.3", base), 3, 0o666},          // writable by anybody
		{fmt.Sprintf("%s~asm.0.4", base), 4, 0o640},          // readable by a group the segment's mode keeps out
		{fmt.Sprintf("%s~asm.0.5", base), 5, 0o600},          // hard-linked below
		{fmt.Sprintf("%s~asm.0.6.nothex", base), 6, 0o600},   // a name no consumer makes
		{fmt.Sprintf("%s~asm.0.6.%016x", base, 6), 7, 0o600}, // name and header disagree
		{fmt.Sprintf("%s~asm.0.9.%016x", base, 9), 9, 0o600}, // slot out of range
	} {
		if err := plantAsm(p.path, asmIdleHeader(0, p.slot), size, p.mode); err != nil {
			t.Fatal(err)
		}
	}
	linked := fmt.Sprintf("%s~asm.0.5", base)
	other := filepath.Join(t.TempDir(), "link")
	if err := os.Link(linked, other); err != nil {
		t.Fatal(err)
	}
	c, err := b.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var adopted []int
	for k := range c.asm.spare {
		adopted = append(adopted, k[1])
	}
	if len(adopted) != 2 || c.asm.spare[[2]int{0, 1}] == nil || c.asm.spare[[2]int{0, 2}] == nil || len(c.asm.parts) != 0 {
		t.Fatalf("adopted files of slots %v, want 1 and 2 only", adopted)
	}
	left := asmFiles(base)
	if len(left) != 2 {
		t.Fatalf("files left beside the segment: %v; want the two adopted", left)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("the other link of a hard-linked file: %v", err)
	}
}

// FuzzAsmName: names of files in the bus's directory are anybody's.
func FuzzAsmName(f *testing.F) {
	for _, s := range []string{"0.1", "2.17.00000000deadbeef", "1.2.3", "-1.0", "+1.+2", "1..", "", "63.4095.ffffffffffffffff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lane, slot, ok := parseAsmName(s)
		if !ok {
			return
		}
		if lane < 0 || slot < 0 {
			t.Fatalf("%q: lane %d, slot %d", s, lane, slot)
		}
		if l2, s2, ok2 := parseAsmName(fmt.Sprintf("%d.%d.%016x", lane, slot, 1)); !ok2 || l2 != lane || s2 != slot {
			t.Fatalf("%q: the name made for lane %d slot %d reads back as %d %d %v", s, lane, slot, l2, s2, ok2)
		}
	})
}

// asUser is a user made for one test and deleted after it.
type asUser struct {
	name     string
	uid, gid uint32
}

func (u asUser) cred() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
}

// tempUser adds a user (and its group) that the test removes when it ends.
func tempUser(t *testing.T, prefix string) asUser {
	t.Helper()
	name := fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()%1e9)
	if out, err := exec.Command("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Skipf("cannot add a user for the test (useradd: %v: %s)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
		exec.Command("groupdel", name).Run() // gone with the user where userdel removes it
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return asUser{name: name, uid: uint32(uid), gid: uint32(gid)}
}

// TestAsmFilesOfAnotherUser: user B plants reassembly files with valid
// headers, mode 0666, under every name user A's consumer used to pick, and
// squats the names of the other lane with files A can neither use nor
// remove (the directory is sticky), all before A's bus exists. A's large
// messages through its 0600 bus must arrive whole on both lanes, B's files
// must never hold them, and B writing into its files must not change what
// A receives.
func TestAsmFilesOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to add users and run processes as them")
	}
	a, b := tempUser(t, "shba"), tempUser(t, "shbb")
	top := t.TempDir()
	for _, d := range []string{filepath.Dir(top), top} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(top, "shmbus.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(top, "shm") // like /dev/shm: anyone may create files, only owners remove them
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("vbus%d", os.Getpid())
	run := func(u asUser, role string) string {
		t.Helper()
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), roleEnv+"="+role, "SHMBUS_DIR="+dir, "SHMBUS_NAME="+name)
		cmd.SysProcAttr = u.cred()
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := waitTimeoutRun(cmd, 2*time.Minute); err != nil {
			t.Fatalf("%s as %s: %v\n%s", role, u.name, err, errOut.String())
		}
		return out.String()
	}
	run(b, "asm-plant")
	planted := asmFiles(filepath.Join(dir, "shmbus."+name))
	if len(planted) != 3*asmTestSlots {
		t.Fatalf("planted %d files: %v", len(planted), planted)
	}
	out := run(a, "asm-victim")
	if !strings.Contains(out, "received 2") {
		t.Fatalf("victim said %q", out)
	}
	t.Logf("victim: %s", strings.TrimSpace(out))
	// B's files are all still there, and hold none of A's messages.
	want := asmVictimMsg(0)
	for _, p := range planted {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("planted file: %v", err)
		}
		if bytes.Contains(got, want[1000:1000+4096]) {
			t.Fatalf("%s holds A's message", p)
		}
	}
	if left := asmFiles(filepath.Join(dir, "shmbus."+name)); len(left) != len(planted) {
		t.Fatalf("files left: %v; want only B's %d", left, len(planted))
	}
}

func waitTimeoutRun(cmd *exec.Cmd, d time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	return waitTimeout(cmd, d)
}

const asmTestSlots = 4

// asmVictimMsg is the large message the victim sends on lane lane.
func asmVictimMsg(lane int) []byte {
	return bigMsg(make([]byte, 3<<20), uint32(lane), 7, 3<<20)
}

// roleAsmPlant runs as user B: it plants, for bus SHMBUS_NAME, valid idle
// files of 4 MiB, mode 0666, on lane 0 under the names A's consumer used to
// choose (and under a name of the form it chooses now), and files A cannot
// open on lane 1 (mode 0644, not a valid header).
func roleAsmPlant() error {
	base := filepath.Join(os.Getenv("SHMBUS_DIR"), "shmbus."+os.Getenv("SHMBUS_NAME"))
	for s := 0; s < asmTestSlots; s++ {
		if err := plantAsm(fmt.Sprintf("%s~asm.0.%d", base, s), asmIdleHeader(0, s), asmHeader+4<<20, 0o666); err != nil {
			return err
		}
		if err := plantAsm(fmt.Sprintf("%s~asm.0.%d.%016x", base, s, s), asmIdleHeader(0, s), asmHeader+4<<20, 0o666); err != nil {
			return err
		}
		if err := plantAsm(fmt.Sprintf("%s~asm.1.%d", base, s), []byte("squatted"), 4096, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// roleAsmVictim runs as user A: it creates bus SHMBUS_NAME (mode 0600)
// where B planted files, sends a 3 MiB message on each of two lanes through
// 64 KiB lanes and receives them. Between reassembly and delivery it checks
// that no file of B holds the message and scribbles over all of B's files.
func roleAsmVictim() error {
	name := os.Getenv("SHMBUS_NAME")
	base := filepath.Join(os.Getenv("SHMBUS_DIR"), "shmbus."+name)
	planted := asmFiles(base)
	bus, err := Create(name, &Options{Priorities: 2, LaneCapacity: 64 << 10, MaxMessage: 4 << 20, PeerSlots: asmTestSlots, Mode: 0o600})
	if err != nil {
		return err
	}
	defer bus.Remove()
	defer bus.Close()
	c, err := bus.NewConsumer()
	if err != nil {
		return err
	}
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sent := make(chan error, 1)
	go func() {
		for lane := range 2 {
			if err := p.Send(ctx, asmVictimMsg(lane), lane); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	got := 0
	var fail error
	deliver := func(m []byte, prio int) {
		got++
		want := asmVictimMsg(prio)
		for _, path := range planted {
			b, err := os.ReadFile(path)
			if err != nil && !errors.Is(err, os.ErrPermission) {
				fail = errors.Join(fail, err)
			}
			if bytes.Contains(b, want[1000:1000+4096]) {
				fail = errors.Join(fail, fmt.Errorf("planted %s holds the message", path))
			}
			// What B may do to its files at any time.
			if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
				f.WriteAt(bytes.Repeat([]byte{0x5a}, 4<<20), asmHeader)
				f.Close()
			}
		}
		own := 0
		for _, path := range asmFiles(base) {
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); err != nil || st.Uid != uint32(os.Getuid()) {
				continue
			}
			own++
			if st.Mode&0o7777 != 0o600 || st.Nlink != 1 {
				fail = errors.Join(fail, fmt.Errorf("own reassembly file %s: mode %o, %d links", path, st.Mode&0o7777, st.Nlink))
			}
		}
		if own == 0 {
			fail = errors.Join(fail, fmt.Errorf("priority %d: no reassembly file of this user beside the segment", prio))
		}
		if !bytes.Equal(m, want) {
			fail = errors.Join(fail, fmt.Errorf("priority %d: message of %d bytes differs from the one sent (%v)", prio, len(m), checkBig(m, uint32(prio), 7, len(want))))
		}
	}
	for got < 2 {
		n, err := c.Poll(1, deliver)
		if err != nil {
			return errors.Join(fail, err)
		}
		if n == 0 {
			if err := c.Wait(ctx); err != nil {
				return errors.Join(fail, fmt.Errorf("after %d messages: %w", got, err))
			}
		}
	}
	if fail != nil {
		return fail
	}
	if err := <-sent; err != nil {
		return err
	}
	fmt.Printf("received %d messages of %d bytes\n", got, 3<<20)
	return c.Close()
}
