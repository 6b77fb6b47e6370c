package segment

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus/layout"
)

// mountTmpfs mounts a tmpfs of the given size option in a new temporary
// directory, or skips the test if that is not allowed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root outside a restricted container): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

func TestCreateNoSpace(t *testing.T) {
	mnt := mountTmpfs(t, "64k")
	p := Path(mnt, "big")
	m, err := Create(p, 1<<20, 0o600)
	if err == nil {
		m.Close()
		t.Fatal("Create of 1 MiB on a 64 KiB tmpfs succeeded")
	}
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, unix.ENOSPC) {
		t.Errorf("Create: %v, want ErrNoSpace", err)
	}
	t.Logf("error: %v", err)
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("files left behind: %v", ents)
	}

	// The file system itself works: a segment that fits, then one that
	// would overflow what is left.
	small, err := Create(Path(mnt, "small"), 40<<10, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if _, err := Create(Path(mnt, "second"), 40<<10, 0o600); !errors.Is(err, ErrNoSpace) {
		t.Errorf("second Create: %v, want ErrNoSpace", err)
	}
	if names, err := List(mnt); err != nil || len(names) != 1 || names[0] != "small" {
		t.Errorf("List = %q, %v", names, err)
	}
}

// TestTouchPages covers the prefault fallback for kernels without
// MADV_POPULATE_WRITE.
func TestTouchPages(t *testing.T) {
	p := segPath(t)
	m, err := Create(p, 5*4096, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := Guard(func() error { touchPages(m.Bytes()); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 4096); err != nil {
		t.Fatal(err)
	}
	if err := Guard(func() error { touchPages(m.Bytes()); return nil }); !errors.Is(err, ErrTruncated) {
		t.Errorf("touch after truncation: %v", err)
	}
	if err := prefault(m.Bytes(), false); !errors.Is(err, ErrTruncated) {
		t.Errorf("prefault after truncation: %v", err)
	}
}

const childEnv = "SEGMENT_TEST_OPEN_AS_CHILD"

// TestOpenPermission opens a mode-0000 segment as an unprivileged user in a
// child process (the test binary re-executed) and expects ErrPermission.
func TestOpenPermission(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the child as another user")
	}
	dir := t.TempDir()
	// The child (uid 65534) must be able to reach dir and run the binary.
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()) && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, Prefix+"locked")
	makeSegment(t, p, true, nil)
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	// Root itself may still open it.
	if m, _, _, err := Open(p, 0); err != nil {
		t.Fatalf("root Open: %v", err)
	} else {
		m.Close()
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "segment.test")
	copyFile(t, exe, bin)
	cmd := exec.Command(bin, "-test.run=^TestOpenPermissionChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+p)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child: %s", out)
	if !strings.Contains(string(out), "RESULT: permission") {
		t.Errorf("child did not report ErrPermission:\n%s", out)
	}
}

func TestOpenPermissionChild(t *testing.T) {
	p := os.Getenv(childEnv)
	if p == "" {
		t.Skip("only run as the child of TestOpenPermission")
	}
	_, _, _, err := Open(p, 10*time.Millisecond)
	switch {
	case err == nil:
		fmt.Println("RESULT: opened (uid", os.Getuid(), ")")
	case errors.Is(err, os.ErrPermission) && errors.Is(err, ErrPermission):
		fmt.Println("RESULT: permission:", err)
	default:
		fmt.Println("RESULT: other:", err)
	}
	// And the error does not claim the segment is corrupt.
	if errors.Is(err, layout.ErrCorrupt) {
		t.Error("permission error wraps ErrCorrupt")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
