package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/layout"
)

func testGeometry(t testing.TB) layout.Geometry {
	t.Helper()
	g, err := layout.Plan(layout.Config{Lanes: 2, LaneCapacity: 4096, PeerSlots: 4, MaxMessage: 1 << 20, WakeMode: layout.WakeFutex})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// makeSegment creates a segment at p with a valid header; ready says
// whether the ready word is stored. edit, if not nil, changes the header
// bytes before the ready word is stored.
func makeSegment(t testing.TB, p string, ready bool, edit func(b []byte)) (*Mapping, layout.Geometry) {
	t.Helper()
	g := testGeometry(t)
	m, err := Create(p, int64(g.TotalSize), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h := layout.NewHeader(g)
	h.Encode(m.Bytes())
	if edit != nil {
		edit(m.Bytes())
	}
	if ready {
		layout.Word32(m.Bytes(), layout.OffReady).Store(layout.ReadyValue)
	}
	return m, g
}

func segPath(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("SHMBUS_DIR", dir)
	return Path("", "test")
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"", false},
		{"a", true},
		{strings.Repeat("a", 200), true},
		{strings.Repeat("a", 201), false},
		{"../x", false},
		{"a/b", false},
		{"/abs", false},
		{"..", false},
		{".", false},
		{"a..b", false},
		{"x..", false},
		{".hidden", false},
		{"a.b.c", true},
		{"-dash", false},
		{"--help", false},
		{"-", false},
		{"_under", true},
		{"9lives", true},
		{"dash-", true},
		{"dot.", true},
		{"ok.name-1_2", true},
		{"OK.Name-9", true},
		{"héllo", false},
		{"日本", false},
		{"a b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\\b", false},
		{"a:b", false},
	} {
		err := ValidateName(tc.name)
		if tc.ok != (err == nil) {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, does not wrap ErrBadName", tc.name, err)
		}
		if err != nil && tc.name != "" && len(tc.name) < 50 && !strings.Contains(err.Error(), strconv.Quote(tc.name)) {
			t.Errorf("ValidateName(%q) = %v, does not quote the name", tc.name, err)
		}
	}
}

func TestDirAndPath(t *testing.T) {
	t.Setenv("SHMBUS_DIR", "")
	if d := Dir(); d != "/dev/shm" {
		t.Errorf("Dir() = %q with SHMBUS_DIR empty", d)
	}
	if p := Path("", "x"); p != "/dev/shm/shmbus.x" {
		t.Errorf("Path = %q", p)
	}
	t.Setenv("SHMBUS_DIR", "/some/where")
	if d := Dir(); d != "/some/where" {
		t.Errorf("Dir() = %q", d)
	}
	if p := Path("", "bus"); p != "/some/where/shmbus.bus" {
		t.Errorf("Path = %q", p)
	}
	if p := Path("/x/", "bus"); p != "/x/shmbus.bus" {
		t.Errorf("Path = %q", p)
	}
}

func TestCreateModeIgnoresUmask(t *testing.T) {
	dir := t.TempDir()
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	for _, tc := range []struct {
		mode, want os.FileMode
	}{{0o644, 0o644}, {0o666, 0o666}, {0, 0o600}, {0o640, 0o640}} {
		p := filepath.Join(dir, Prefix+tc.mode.String())
		m, err := Create(p, 8192, tc.mode)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.want {
			t.Errorf("Create(mode %v): file mode %v, want %v", tc.mode, fi.Mode(), tc.want)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCreateBadArgs(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, Prefix+"x")
	for _, tc := range []struct {
		size int64
		mode os.FileMode
	}{{0, 0o600}, {-1, 0o600}, {4096, os.ModeSetuid | 0o600}, {4096, os.ModeDir | 0o700}} {
		if m, err := Create(p, tc.size, tc.mode); err == nil {
			m.Close()
			t.Errorf("Create(size %d, mode %v) succeeded", tc.size, tc.mode)
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("file left behind: %v", err)
		}
	}
}

func TestCreateContent(t *testing.T) {
	p := segPath(t)
	m, err := Create(p, 3*4096+1, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := m.Bytes()
	if len(b) != 3*4096+1 {
		t.Fatalf("len(Bytes()) = %d", len(b))
	}
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Error("new segment not zero-filled")
	}
	if m.Path() != p {
		t.Errorf("Path() = %q, want %q", m.Path(), p)
	}
	fi, err := m.File().Stat()
	if err != nil || fi.Size() != int64(len(b)) {
		t.Errorf("File().Stat() = %v, %v", fi, err)
	}
	// Writes through the mapping reach the file.
	b[4096] = 42
	got := make([]byte, 1)
	if _, err := m.File().ReadAt(got, 4096); err != nil || got[0] != 42 {
		t.Errorf("ReadAt = %v, %v", got, err)
	}
	if err := m.SizeOK(); err != nil {
		t.Error(err)
	}
}

func TestCreateExclusive(t *testing.T) {
	p := segPath(t)
	m, err := Create(p, 4096, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Bytes()[0] = 7
	m2, err := Create(p, 8192, 0o600)
	if err == nil {
		m2.Close()
		t.Fatal("second Create succeeded")
	}
	if !errors.Is(err, os.ErrExist) || !errors.Is(err, ErrExist) {
		t.Errorf("second Create: %v, want ErrExist", err)
	}
	if !strings.Contains(err.Error(), `create segment "`+p+`"`) {
		t.Errorf("error lacks context: %v", err)
	}
	// The first segment is untouched and still there.
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != 4096 || m.Bytes()[0] != 7 {
		t.Errorf("existing segment disturbed: %v %v", fi, err)
	}
}

func TestCreateRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	// Dangling symlink: the target must not be created.
	target := filepath.Join(dir, "target")
	p := filepath.Join(dir, Prefix+"link")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if m, err := Create(p, 4096, 0o600); err == nil {
		m.Close()
		t.Fatal("Create through a dangling symlink succeeded")
	} else if !errors.Is(err, os.ErrExist) {
		t.Errorf("Create through symlink: %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink target was created: %v", err)
	}
	if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("symlink itself disturbed: %v %v", fi, err)
	}

	// Symlink to an existing file: the file must not change.
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	p2 := filepath.Join(dir, Prefix+"link2")
	if err := os.Symlink(existing, p2); err != nil {
		t.Fatal(err)
	}
	if m, err := Create(p2, 4096, 0o600); err == nil {
		m.Close()
		t.Fatal("Create through a symlink succeeded")
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "keep me" {
		t.Errorf("symlink target modified: %q %v", b, err)
	}
	if fi, err := os.Stat(existing); err != nil || fi.Mode() != 0o644 {
		t.Errorf("symlink target mode changed: %v %v", fi, err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	p := segPath(t)
	m, err := Create(p, 4096, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if m.Bytes() != nil {
		t.Error("Bytes() not nil after Close")
	}
	if err := m.SizeOK(); err == nil {
		t.Error("SizeOK after Close succeeded")
	}
	// The file is closed.
	if _, err := m.File().Stat(); err == nil {
		t.Error("file still open after Close")
	}
}

func TestOpenValid(t *testing.T) {
	p := segPath(t)
	cm, g := makeSegment(t, p, true, nil)
	m, h, g2, err := Open(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !reflect.DeepEqual(g, g2) {
		t.Errorf("geometry %+v, want %+v", g2, g)
	}
	want := layout.NewHeader(g)
	want.Ready = layout.ReadyValue
	if !reflect.DeepEqual(h, want) {
		t.Errorf("header %+v, want %+v", h, want)
	}
	if len(m.Bytes()) != int(g.TotalSize) {
		t.Errorf("mapping is %d bytes, want %d", len(m.Bytes()), g.TotalSize)
	}
	// Both mappings share the memory.
	layout.Word32(cm.Bytes(), layout.OffDataSeq).Store(12345)
	if v := layout.Word32(m.Bytes(), layout.OffDataSeq).Load(); v != 12345 {
		t.Errorf("shared word = %d", v)
	}
	if err := m.SizeOK(); err != nil {
		t.Error(err)
	}
}

func TestOpenMissing(t *testing.T) {
	p := segPath(t)
	_, _, _, err := Open(p, 10*time.Millisecond)
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrNotExist) {
		t.Errorf("Open missing: %v", err)
	}
}

func TestOpenRandomBytes(t *testing.T) {
	p := segPath(t)
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 5*4096)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[0] = 0x42 // surely not the magic's first byte
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, _, err := Open(p, 5*time.Second)
	if !errors.Is(err, layout.ErrCorrupt) {
		t.Errorf("Open random: %v, want ErrCorrupt", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open waited %v on a corrupt file", d)
	}
}

func TestOpenZeroLength(t *testing.T) {
	p := segPath(t)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const wait = 50 * time.Millisecond
	start := time.Now()
	_, _, _, err := Open(p, wait)
	d := time.Since(start)
	if !errors.Is(err, layout.ErrNotReady) {
		t.Errorf("Open empty: %v, want ErrNotReady", err)
	}
	if d < wait || d > wait+2*time.Second {
		t.Errorf("Open took %v, want about %v", d, wait)
	}
	// A short file too.
	if err := os.WriteFile(p, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Open(p, -1); !errors.Is(err, layout.ErrNotReady) {
		t.Errorf("Open short: %v, want ErrNotReady", err)
	}
}

func TestOpenNotReady(t *testing.T) {
	p := segPath(t)
	makeSegment(t, p, false, nil)
	start := time.Now()
	_, _, _, err := Open(p, 50*time.Millisecond)
	if !errors.Is(err, layout.ErrNotReady) {
		t.Errorf("Open: %v, want ErrNotReady", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("gave up after %v", d)
	}
	// Magic still zero (creator just made the file).
	p2 := filepath.Join(filepath.Dir(p), Prefix+"zero")
	g := testGeometry(t)
	if err := os.WriteFile(p2, make([]byte, g.TotalSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Open(p2, 20*time.Millisecond); !errors.Is(err, layout.ErrNotReady) {
		t.Errorf("Open zero-filled: %v, want ErrNotReady", err)
	}
	// Magic half written.
	b := make([]byte, g.TotalSize)
	copy(b, layout.Magic[:3])
	if err := os.WriteFile(p2, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Open(p2, 20*time.Millisecond); !errors.Is(err, layout.ErrNotReady) {
		t.Errorf("Open half-magic: %v, want ErrNotReady", err)
	}
}

func TestOpenReadyLater(t *testing.T) {
	p := segPath(t)
	cm, g := makeSegment(t, p, false, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(30 * time.Millisecond)
		layout.Word32(cm.Bytes(), layout.OffReady).Store(layout.ReadyValue)
	}()
	m, _, g2, err := Open(p, 10*time.Second)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if g2.TotalSize != g.TotalSize {
		t.Errorf("geometry %+v", g2)
	}
}

// A creator in another process (simulated with pwrite, which the race
// detector does not see) that makes the file empty, then sizes it, writes
// the header and finally the ready word.
func TestOpenWhileCreatorGrowsFile(t *testing.T) {
	p := segPath(t)
	g := testGeometry(t)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		if err := f.Truncate(int64(g.TotalSize)); err != nil {
			errc <- err
			return
		}
		time.Sleep(20 * time.Millisecond)
		hdr := make([]byte, layout.HeaderSize)
		h := layout.NewHeader(g)
		h.Encode(hdr)
		if _, err := f.WriteAt(hdr, 0); err != nil {
			errc <- err
			return
		}
		time.Sleep(20 * time.Millisecond)
		var w [4]byte
		binary.LittleEndian.PutUint32(w[:], layout.ReadyValue)
		_, err := f.WriteAt(w[:], layout.OffReady)
		errc <- err
	}()
	m, _, g2, err := Open(p, 10*time.Second)
	if werr := <-errc; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !reflect.DeepEqual(g, g2) {
		t.Errorf("geometry %+v", g2)
	}
}

func TestOpenSizeMismatch(t *testing.T) {
	p := segPath(t)
	_, g := makeSegment(t, p, true, nil)
	for _, size := range []int64{int64(g.TotalSize) + 4096, int64(g.TotalSize) - 4096, layout.HeaderSize} {
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := Open(p, 10*time.Millisecond)
		if !errors.Is(err, layout.ErrCorrupt) {
			t.Errorf("file of %d bytes, header says %d: %v, want ErrCorrupt", size, g.TotalSize, err)
		}
	}
}

func TestOpenCorruptHeader(t *testing.T) {
	for name, edit := range map[string]func(b []byte){
		"lanes":      func(b []byte) { binary.LittleEndian.PutUint32(b[layout.OffLaneCount:], 3) },
		"lane0":      func(b []byte) { binary.LittleEndian.PutUint64(b[layout.LaneTableOffset+8:], 1<<40) },
		"total":      func(b []byte) { binary.LittleEndian.PutUint64(b[layout.OffTotalSize:], 1<<62) },
		"zerolanes":  func(b []byte) { binary.LittleEndian.PutUint32(b[layout.OffLaneCount:], 0) },
		"manylanes":  func(b []byte) { binary.LittleEndian.PutUint32(b[layout.OffLaneCount:], 1<<31) },
		"badmagic":   func(b []byte) { b[3] = 'X' },
		"headersize": func(b []byte) { binary.LittleEndian.PutUint32(b[layout.OffHeaderSize:], 64) },
	} {
		t.Run(name, func(t *testing.T) {
			p := segPath(t)
			makeSegment(t, p, true, edit)
			_, _, _, err := Open(p, 10*time.Millisecond)
			if !errors.Is(err, layout.ErrCorrupt) {
				t.Errorf("Open: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestOpenVersion(t *testing.T) {
	for _, v := range []uint32{layout.Version - 1, layout.Version + 1} {
		setVersion := func(b []byte) { binary.LittleEndian.PutUint32(b[layout.OffVersion:], v) }
		p := filepath.Join(t.TempDir(), fmt.Sprintf("%sv%d", Prefix, v))
		makeSegment(t, p, true, setVersion)
		if _, _, _, err := Open(p, 10*time.Millisecond); !errors.Is(err, layout.ErrVersion) {
			t.Errorf("Open v%d: %v, want ErrVersion", v, err)
		}
		// A segment of another version whose ready word we do not know
		// still reports the version.
		p2 := p + "-unready"
		makeSegment(t, p2, false, setVersion)
		if _, _, _, err := Open(p2, 10*time.Millisecond); !errors.Is(err, layout.ErrVersion) {
			t.Errorf("Open v%d not ready: %v, want ErrVersion", v, err)
		}
	}
}

func TestOpenNotRegular(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, Prefix+"dir")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Open(d, 10*time.Millisecond); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), d) {
		t.Errorf("Open directory: %v", err)
	} else {
		t.Logf("directory: %v", err)
	}

	fifo := filepath.Join(dir, Prefix+"fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Open(fifo, 10*time.Millisecond); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Open fifo: %v, want ErrNotRegular", err)
	} else {
		t.Logf("fifo: %v", err)
	}

	target := filepath.Join(dir, Prefix+"target")
	makeSegment(t, target, true, nil)
	link := filepath.Join(dir, Prefix+"link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Open(link, 10*time.Millisecond); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Open symlink: %v, want ErrNotRegular", err)
	} else {
		t.Logf("symlink: %v", err)
	}
}

func TestTruncatedMappingGuard(t *testing.T) {
	p := segPath(t)
	m, g := makeSegment(t, p, true, nil)
	om, _, _, err := Open(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer om.Close()
	if err := os.Truncate(p, 4096); err != nil {
		t.Fatal(err)
	}
	for _, mm := range []*Mapping{m, om} {
		b := mm.Bytes()
		last := len(b) - 1
		var v byte
		err := Guard(func() error {
			v = b[last]
			return nil
		})
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, layout.ErrCorrupt) {
			t.Errorf("read past truncation: %v (value %d), want ErrTruncated", err, v)
		}
		// A bulk copy (memmove) and a write fault the same way.
		err = Guard(func() error {
			buf := make([]byte, 2*4096)
			copy(buf, b[4096:])
			return nil
		})
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("copy past truncation: %v", err)
		}
		err = Guard(func() error {
			b[g.TotalSize-8] = 1
			return nil
		})
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("write past truncation: %v", err)
		}
		// The first page is still fine.
		err = Guard(func() error {
			if layout.Word32(b, layout.OffReady).Load() != layout.ReadyValue {
				return errors.New("ready word lost")
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		if err := mm.SizeOK(); !errors.Is(err, ErrTruncated) {
			t.Errorf("SizeOK: %v, want ErrTruncated", err)
		}
	}
	// Opening the truncated file is refused cleanly.
	if _, _, _, err := Open(p, 10*time.Millisecond); !errors.Is(err, layout.ErrCorrupt) {
		t.Errorf("Open truncated: %v", err)
	}
}

func TestGuard(t *testing.T) {
	if err := Guard(func() error { return nil }); err != nil {
		t.Error(err)
	}
	sentinel := errors.New("x")
	if err := Guard(func() error { return sentinel }); err != sentinel {
		t.Errorf("Guard returned %v", err)
	}
	// The previous setting is restored.
	old := debug.SetPanicOnFault(false)
	Guard(func() error { return nil })
	if debug.SetPanicOnFault(old) {
		t.Error("SetPanicOnFault left on")
	}
	// Other panics go through.
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		Guard(func() error { panic("boom") })
		t.Error("panic swallowed")
	}()
	// A nil dereference is a bug, not truncation.
	func() {
		defer func() {
			r := recover()
			if _, ok := r.(runtime.Error); !ok {
				t.Errorf("recovered %v, want a runtime.Error", r)
			}
		}()
		var p *int
		Guard(func() error { return fmt.Errorf("%d", *p) })
		t.Error("panic swallowed")
	}()
	// Index out of range, likewise.
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("no panic")
			}
		}()
		var s []byte
		i := 3
		Guard(func() error { s[i] = 1; return nil })
	}()
}

func TestRemove(t *testing.T) {
	p := segPath(t)
	m, err := Create(p, 4096, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there: %v", err)
	}
	if err := Remove(p); !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrNotExist) {
		t.Errorf("second Remove: %v", err)
	}
	// The mapping outlives the name.
	m.Bytes()[0] = 1
	if err := m.SizeOK(); err != nil {
		t.Error(err)
	}
}

func TestList(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SHMBUS_DIR", dir)
	for _, n := range []string{"zeta", "alpha", "m.1"} {
		m, err := Create(Path(dir, n), 4096, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	if err := os.WriteFile(filepath.Join(dir, "other"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "shmbus."), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "shmbus.bad name"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "shmbus.dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(Path(dir, "alpha"), filepath.Join(dir, "shmbus.link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "shmbus.fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", dir} {
		got, err := List(d)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"alpha", "m.1", "zeta"}; !reflect.DeepEqual(got, want) {
			t.Errorf("List(%q) = %q, want %q", d, got, want)
		}
	}
	if _, err := List(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("List missing dir: %v", err)
	}
	empty := t.TempDir()
	if got, err := List(empty); err != nil || len(got) != 0 {
		t.Errorf("List empty = %q, %v", got, err)
	}
}

// FuzzOpen writes arbitrary bytes as a segment file and opens it: Open must
// return an error or a consistent mapping, never panic or crash. The
// variant pads or cuts the file, so a short input that is only a header can
// stand for a whole segment.
func FuzzOpen(f *testing.F) {
	g := testGeometry(f)
	valid := make([]byte, g.TotalSize)
	h := layout.NewHeader(g)
	h.Encode(valid)
	binary.LittleEndian.PutUint32(valid[layout.OffReady:], layout.ReadyValue)
	headerEnd := layout.LaneTableOffset + len(g.Lanes)*layout.LaneEntrySize
	f.Add(valid, uint8(0))                       // a whole valid segment
	f.Add(valid[:headerEnd], uint8(2))           // its header, padded to the claimed size
	f.Add(valid[:headerEnd], uint8(1))           // its header, padded to a page: too small
	f.Add(valid[:headerEnd], uint8(3))           // its header, cut to half the claimed size
	f.Add([]byte{}, uint8(0))                    // empty
	f.Add(valid[:layout.HeaderSize-1], uint8(0)) // truncated header
	f.Add(valid[:100], uint8(0))

	// One file, rewritten in place for every input: much cheaper than
	// creating and unlinking a file each time.
	p := filepath.Join(f.TempDir(), Prefix+"fuzz")
	file, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { file.Close() })
	f.Fuzz(func(t *testing.T, data []byte, variant uint8) {
		size := int64(len(data))
		claimed := int64(-1)
		if len(data) >= layout.OffTotalSize+8 {
			if n := binary.LittleEndian.Uint64(data[layout.OffTotalSize:]); n <= 1<<24 {
				claimed = int64(n)
			}
		}
		switch variant % 4 {
		case 1: // pad to whole pages
			size = (size + 4095) &^ 4095
		case 2: // pad or cut to the size the header claims
			if claimed >= 0 {
				size = claimed
			}
		case 3: // cut to half of that
			if claimed >= 0 {
				size = claimed / 2
			} else {
				size /= 2
			}
		}
		if err := file.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if _, err := file.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := file.Truncate(size); err != nil {
			t.Fatal(err)
		}
		m, h, g, err := Open(p, time.Millisecond)
		if err != nil {
			if !errors.Is(err, layout.ErrCorrupt) && !errors.Is(err, layout.ErrNotReady) && !errors.Is(err, layout.ErrVersion) {
				t.Fatalf("unexpected kind of error: %v", err)
			}
			return
		}
		defer m.Close()
		if uint64(len(m.Bytes())) != g.TotalSize || h.TotalSize != g.TotalSize || int64(g.TotalSize) != size {
			t.Fatalf("inconsistent open: mapping %d, header %d, geometry %d, file %d", len(m.Bytes()), h.TotalSize, g.TotalSize, size)
		}
		if err := m.SizeOK(); err != nil {
			t.Fatal(err)
		}
	})
}
