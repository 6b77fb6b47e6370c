package cclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
)

// The C client given damaged segments: every one must give an error naming
// the fault, never a crash. They run through "shmbus-c open-many", which
// attaches to each file, takes the consumer role and drains it; the
// sanitized build (ASan, UBSan) is used when it can run, so that an access
// outside the mapping or a heap buffer aborts the process and fails the
// test.

// openMany runs open-many on paths and returns its line for each path.
func openMany(t *testing.T, paths []string) map[string]string {
	t.Helper()
	out := startC(t, cSan, append([]string{"open-many"}, paths...)...).wait(t, 60*time.Second)
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if p, rest, ok := strings.Cut(l, ": "); ok {
			lines[p] = rest
		}
	}
	for _, p := range paths {
		if _, ok := lines[p]; !ok {
			t.Fatalf("no result for %s in:\n%s", p, out)
		}
	}
	return lines
}

func le32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func le64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }

// TestCorruptHeader: every header field that validation covers, broken
// one at a time, and files that are not segments at all.
func TestCorruptHeader(t *testing.T) {
	needC(t)
	bus, _ := newBus(t, shmbus.Options{Priorities: 2, LaneCapacity: 64 << 10, PeerSlots: 8})
	good, err := os.ReadFile(bus.Path())
	if err != nil {
		t.Fatal(err)
	}
	semBus, _ := newBus(t, shmbus.Options{Priorities: 2, LaneCapacity: 64 << 10, PeerSlots: 8, Wake: shmbus.WakeSem})
	goodSem, err := os.ReadFile(semBus.Path())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	type tc struct {
		name string
		src  []byte
		edit func(b []byte) []byte
		want string
	}
	cases := []tc{
		{"intact", good, func(b []byte) []byte { return b }, "ok: 0 message(s)"},
		{"magic", good, func(b []byte) []byte { b[1] = 'X'; return b }, "segment corrupt: bad magic"},
		{"magic-unwritten", good, func(b []byte) []byte { clear(b[:8]); return b }, "segment not ready: magic not written yet"},
		{"version", good, func(b []byte) []byte { le32(b, 0x08, 1); return b }, "unsupported segment version: version 1"},
		{"subscriptions-65", good, func(b []byte) []byte { le32(b, 0x68, 65); return b }, "segment corrupt: 65 subscriptions"},
		{"subscriptions-on-a-queue", good, func(b []byte) []byte { le32(b, 0x68, 1); return b }, "segment corrupt: subscription table at 0 with 0-byte entries"},
		{"ready", good, func(b []byte) []byte { le32(b, 0x7C, 0); return b }, "segment not ready: ready word not set"},
		{"lanes-0", good, func(b []byte) []byte { le32(b, 0x20, 0); return b }, "segment corrupt: lane count 0"},
		{"lanes-65", good, func(b []byte) []byte { le32(b, 0x20, 65); return b }, "segment corrupt: lane count 65"},
		{"lanes-3", good, func(b []byte) []byte { le32(b, 0x20, 3); return b }, "segment corrupt: lane 2 entry"},
		{"header-size", good, func(b []byte) []byte { le32(b, 0x0C, 8192); return b }, "segment corrupt: header size 8192"},
		{"ctrl-size", good, func(b []byte) []byte { le32(b, 0x38, 256); return b }, "segment corrupt: header size"},
		{"flags", good, func(b []byte) []byte { le32(b, 0x18, 0x11); return b }, "segment corrupt: unknown flags"},
		{"wake", good, func(b []byte) []byte { le32(b, 0x1C, 3); return b }, "segment corrupt: wake mode 3"},
		{"slots-0", good, func(b []byte) []byte { le32(b, 0x24, 0); return b }, "segment corrupt: 0 peer slots"},
		{"slots-huge", good, func(b []byte) []byte { le32(b, 0x24, 1<<31); return b }, "segment corrupt:"},
		{"max-message-0", good, func(b []byte) []byte { le64(b, 0x28, 0); return b }, "segment corrupt: max message 0"},
		{"capacity", good, func(b []byte) []byte { le64(b, 0x210, 65535); return b }, "segment corrupt: lane capacity 65535"},
		{"capacity-huge", good, func(b []byte) []byte { le64(b, 0x210, 1<<40); return b }, "segment corrupt: lane capacity"},
		{"record-limit", good, func(b []byte) []byte { le32(b, 0x218, 1<<16); return b }, "segment corrupt: record limit 65536"},
		{"lane1-data", good, func(b []byte) []byte { le64(b, 0x228, binary.LittleEndian.Uint64(b[0x228:])+4096); return b }, "segment corrupt: lane 1 entry"},
		{"lane1-flags", good, func(b []byte) []byte { le32(b, 0x23C, 1); return b }, "segment corrupt: lane 1 entry"},
		{"peer-table", good, func(b []byte) []byte { le64(b, 0x40, binary.LittleEndian.Uint64(b[0x40:])+4096); return b }, "segment corrupt: peer table"},
		{"slot-size", good, func(b []byte) []byte { le32(b, 0x3C, 64); return b }, "segment corrupt: peer table"},
		{"total", good, func(b []byte) []byte { le64(b, 0x10, binary.LittleEndian.Uint64(b[0x10:])+4096); return b }, "segment corrupt: total size"},
		{"file-short", good, func(b []byte) []byte { return b[:len(b)-4096] }, "segment corrupt: file is"},
		{"file-long", good, func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, "segment corrupt: file is"},
		{"tiny", good, func(b []byte) []byte { return b[:100] }, "segment not ready: file smaller than the header"},
		{"empty", good, func(b []byte) []byte { return nil }, "segment not ready: file smaller than the header"},
		{"sem-no-set", good, func(b []byte) []byte { le32(b, 0x1C, 2); le32(b, 0x48, 0xFFFFFFFF); return b }, "segment corrupt: sem wake mode without a semaphore set"},
		{"sem-intact", goodSem, func(b []byte) []byte { return b }, "ok: 0 message(s)"},
		{"sem-cookie", goodSem, func(b []byte) []byte { le32(b, 0x4C, binary.LittleEndian.Uint32(b[0x4C:])^1); return b }, "does not carry the bus's cookie"},
		{"sem-gone", goodSem, func(b []byte) []byte { le32(b, 0x48, 0x7FFFFFF0); return b }, "segment corrupt: semaphore set"},
	}
	var paths []string
	want := map[string]string{}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, c.edit(append([]byte(nil), c.src...)), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		want[p] = c.want
	}
	// Not segments at all.
	sub := filepath.Join(dir, "a-directory")
	os.Mkdir(sub, 0o700)
	link := filepath.Join(dir, "a-symlink")
	os.Symlink(paths[0], link)
	fifo := filepath.Join(dir, "a-fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	want[sub] = "not a regular file"
	want[link] = "not a regular file"
	want[fifo] = "not a regular file"
	want[missing] = "no such bus"
	paths = append(paths, sub, link, fifo, missing)
	got := openMany(t, paths)
	for _, p := range paths {
		if !strings.Contains(got[p], want[p]) {
			t.Errorf("%s: got %q, want it to contain %q", filepath.Base(p), got[p], want[p])
		}
	}
}

// ringFixture is a one-lane bus holding three published messages, with a
// fragmented one among them, and where its parts are.
func ringFixture(t *testing.T) (good []byte, ctrl, data int, recLimit int) {
	t.Helper()
	bus, _ := newBus(t, shmbus.Options{Priorities: 1, LaneCapacity: 64 << 10, PeerSlots: 8, MaxMessage: 1 << 20})
	p, err := bus.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{[]byte("first message"), make([]byte, 20000), []byte("third")} {
		if err := p.TrySend(m, 0); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	good, err = os.ReadFile(bus.Path())
	if err != nil {
		t.Fatal(err)
	}
	return good, 4096, 8192, bus.MaxRecordPayload() + 8
}

// TestCorruptRing: records and positions a broken or hostile peer could
// write.
func TestCorruptRing(t *testing.T) {
	needC(t)
	good, ctrl, data, limit := ringFixture(t)
	first := data + 24 // the fragmented message's first record (the first record spans 24 bytes)
	dir := t.TempDir()
	cases := []struct {
		name string
		edit func(b []byte)
		want string
	}{
		{"intact", func(b []byte) {}, "ok: 3 message(s)"},
		{"type", func(b []byte) { b[data+4] = 7 }, "lane 0 at position 0: record type 7"},
		{"too-long", func(b []byte) { le32(b, data, uint32(limit+8)) }, "data record of length"},
		{"too-short", func(b []byte) { le32(b, data, 7) }, "data record of length 7"},
		{"flags", func(b []byte) { b[data+5] = 0x13 }, "data record of length 21, flags 0x13"},
		{"padding-odd", func(b []byte) { b[data+4] = 2; b[data+5] = 0; le32(b, data, 12) }, "padding record of length 12"},
		{"padding-flags", func(b []byte) { b[data+4] = 2; b[data+5] = 1; le32(b, data, 24) }, "padding record"},
		{"past-ring-end", func(b []byte) {
			le32(b, ctrl+0x80, 65536-8)
			le32(b, ctrl+0xA0, 65536-8)
			le32(b, ctrl, 65536+64)
			le32(b, data+65536-8, 16)
			b[data+65536-8+4] = 1
			b[data+65536-8+5] = 3
		}, "data record of length 16"},
		{"fragment-slot", func(b []byte) { binary.LittleEndian.PutUint16(b[first+6:], 200) }, "fragment from producer slot 200 of 8"},
		{"fragment-total", func(b []byte) { le64(b, first+8, 1<<40) }, "message of 1099511627776 bytes"},
		{"fragment-short", func(b []byte) { le32(b, first, 12) }, "segment corrupt"},
		{"head-odd", func(b []byte) { le64(b, ctrl+0x80, 3); le64(b, ctrl+0xA0, 3) }, "consumer: segment corrupt: lane 0: head 3"},
		{"tail-far", func(b []byte) { le64(b, ctrl, 1<<20) }, "consumer: segment corrupt: lane 0: head 0, tail 1048576"},
		{"releasing", func(b []byte) { le64(b, ctrl+0xA0, 1<<20) }, "release in progress"},
		{"role-garbage", func(b []byte) { le32(b, 0x80, 0xFFFFFFFF) }, "ok: 3 message(s)"},
	}
	var paths []string
	want := map[string]string{}
	for _, c := range cases {
		b := append([]byte(nil), good...)
		c.edit(b)
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		want[p] = c.want
	}
	got := openMany(t, paths)
	for _, p := range paths {
		if !strings.Contains(got[p], want[p]) {
			t.Errorf("%s: got %q, want it to contain %q", filepath.Base(p), got[p], want[p])
		}
	}
}

// TestCorruptRandom flips random bytes of a segment holding messages, in
// the header and anywhere, and attaches to each result: errors are fine,
// crashes (and sanitizer reports) are not.
func TestCorruptRandom(t *testing.T) {
	needC(t)
	good, _, _, _ := ringFixture(t)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	var paths []string
	for i := 0; i < 300; i++ {
		b := append([]byte(nil), good...)
		span := len(b)
		if i%2 == 0 {
			span = 0x300 // the header and the lane table
		}
		for k := 0; k < 1+r.IntN(8); k++ {
			b[r.IntN(span)] ^= byte(1 << r.IntN(8))
		}
		p := filepath.Join(dir, fmt.Sprintf("flip-%03d", i))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	got := openMany(t, paths)
	ok := 0
	for _, l := range got {
		if strings.HasPrefix(l, "ok:") {
			ok++
		}
	}
	t.Logf("%d of %d damaged segments still attachable", ok, len(paths))
}

// TestBuildNoCompiler: Build says clearly when there is no compiler.
func TestBuildNoCompiler(t *testing.T) {
	_, err := BuildWith(t.TempDir(), Options{CC: "no-such-c-compiler-xyz"})
	if !errors.Is(err, ErrNoCompiler) {
		t.Fatalf("got %v, want ErrNoCompiler", err)
	}
}
