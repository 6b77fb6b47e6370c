package futex

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sleepingOn reports whether some thread of process pid is blocked in FUTEX_WAIT on addr,
// according to /proc/PID/task/*/syscall ("NR arg0 arg1 ..." in decimal NR, hex args).
func sleepingOn(pid int, addr uintptr) (bool, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
	if err != nil {
		return false, err
	}
	if len(tasks) == 0 {
		return false, fmt.Errorf("no tasks for pid %d", pid)
	}
	want := fmt.Sprintf("%d 0x%x 0x%x ", unix.SYS_FUTEX, addr, futexWait)
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // thread exited
			}
			return false, err
		}
		if strings.HasPrefix(string(b), want) {
			return true, nil
		}
	}
	return false, nil
}

// waitSleeping polls until a thread of pid sleeps on addr. If /proc/PID/task/*/syscall is
// unavailable it falls back to a fixed pause, which keeps the test correct but weaker.
func waitSleeping(t *testing.T, pid int, addr uintptr) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ok, err := sleepingOn(pid, addr)
		if err != nil {
			t.Logf("cannot observe sleeper (%v); pausing instead", err)
			time.Sleep(100 * time.Millisecond)
			return false
		}
		if ok {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no thread of pid %d went to sleep on %#x", pid, addr)
	return false
}

func TestWakeAcrossGoroutines(t *testing.T) {
	var word atomic.Uint32
	done := make(chan error, 1)
	go func() {
		for word.Load() == 0 {
			if err := Wait(&word, 0, time.Now().Add(10*time.Second)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	observed := waitSleeping(t, os.Getpid(), uintptr(unsafe.Pointer(&word)))
	word.Store(1)
	n, err := Wake(&word, 1)
	if err != nil {
		t.Fatalf("Wake: %v", err)
	}
	if observed && n != 1 {
		t.Errorf("Wake woke %d sleepers, want 1", n)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sleeper not woken")
	}
}

func TestWakeNoSleeper(t *testing.T) {
	var word atomic.Uint32
	n, err := Wake(&word, 10)
	if err != nil || n != 0 {
		t.Fatalf("Wake with no sleeper = %d, %v; want 0, nil", n, err)
	}
	if n, err := Wake(&word, 0); err != nil || n != 0 {
		t.Fatalf("Wake(0) = %d, %v; want 0, nil", n, err)
	}
}

func TestWaitValueDiffers(t *testing.T) {
	var word atomic.Uint32
	word.Store(7)
	done := make(chan error, 1)
	go func() { done <- Wait(&word, 6, time.Time{}) }() // no deadline: would hang if it slept
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait slept although the value differs")
	}
}

func TestWaitDeadline(t *testing.T) {
	var word atomic.Uint32
	deadline := time.Now().Add(50 * time.Millisecond)
	err := Wait(&word, 0, deadline)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait = %v, want os.ErrDeadlineExceeded", err)
	}
	if now := time.Now(); now.Before(deadline) {
		t.Fatalf("Wait returned %v before the deadline", deadline.Sub(now))
	}
}

func TestWaitPastDeadline(t *testing.T) {
	var word atomic.Uint32
	err := Wait(&word, 0, time.Now().Add(-time.Second))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait = %v, want os.ErrDeadlineExceeded", err)
	}
}

const (
	childEnv  = "SHMBUS_FUTEX_TEST_CHILD" // path of the shared file
	wordOff   = 0                         // futex word
	readyOff  = 4                         // child sets to 1 just before sleeping
	childAddr = 8                         // child stores the address of its mapping of the word
)

func mapShared(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func u32(m []byte, off int) *atomic.Uint32 { return (*atomic.Uint32)(unsafe.Pointer(&m[off])) }
func u64(m []byte, off int) *atomic.Uint64 { return (*atomic.Uint64)(unsafe.Pointer(&m[off])) }

// crossProcessChild runs in the re-executed test binary. Exit codes: 0 woken with the word
// changed, 2 setup failure, 3 Wait error or deadline.
func crossProcessChild(path string) int {
	m, err := mapShared(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child mmap:", err)
		return 2
	}
	word := u32(m, wordOff)
	u64(m, childAddr).Store(uint64(uintptr(unsafe.Pointer(word))))
	u32(m, readyOff).Store(1)
	deadline := time.Now().Add(20 * time.Second)
	for word.Load() == 0 {
		if err := Wait(word, 0, deadline); err != nil {
			fmt.Fprintln(os.Stderr, "child wait:", err)
			return 3
		}
	}
	return 0
}

func TestCrossProcess(t *testing.T) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(crossProcessChild(path))
	}
	path := filepath.Join(t.TempDir(), "shared")
	if err := os.WriteFile(path, make([]byte, os.Getpagesize()), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := mapShared(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill() // no-op once exited
	})

	for u32(m, readyOff).Load() == 0 {
		select {
		case err := <-exited:
			t.Fatalf("child exited early: %v\n%s", err, out.String())
		case <-time.After(time.Millisecond):
		}
	}
	observed := waitSleeping(t, cmd.Process.Pid, uintptr(u64(m, childAddr).Load()))
	t.Logf("observed child sleeping: %v", observed)
	word := u32(m, wordOff)
	word.Store(1)
	n, err := Wake(word, 1)
	if err != nil {
		t.Fatalf("Wake: %v", err)
	}
	if observed && n != 1 {
		t.Errorf("Wake woke %d sleepers in the child, want 1", n)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("child not woken\n%s", out.String())
	}
}

func BenchmarkWakeUncontended(b *testing.B) {
	var word atomic.Uint32
	for b.Loop() {
		if _, err := Wake(&word, 1); err != nil {
			b.Fatal(err)
		}
	}
}
