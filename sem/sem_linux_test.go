//go:build linux && (amd64 || arm64)

package sem

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// sysvSemIDs returns the ids listed in /proc/sysvipc/sem.
func sysvSemIDs(t testing.TB) map[int]bool {
	t.Helper()
	f, err := os.Open("/proc/sysvipc/sem")
	if err != nil {
		t.Fatalf("open /proc/sysvipc/sem: %v", err)
	}
	defer f.Close()
	ids := make(map[int]bool)
	sc := bufio.NewScanner(f)
	sc.Scan() // header: key semid perms nsems ...
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		id, err := strconv.Atoi(fields[1])
		if err != nil {
			t.Fatalf("/proc/sysvipc/sem: bad line %q", sc.Text())
		}
		ids[id] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /proc/sysvipc/sem: %v", err)
	}
	return ids
}

// newSet creates a set of n semaphores and registers a cleanup that removes it and then checks
// that /proc/sysvipc/sem no longer lists it.
func newSet(t *testing.T, n int) *Set {
	t.Helper()
	s, err := Create(n, 0o600)
	if err != nil {
		t.Fatalf("Create(%d): %v", n, err)
	}
	if !sysvSemIDs(t)[s.ID()] {
		t.Fatalf("created set %d not listed in /proc/sysvipc/sem", s.ID())
	}
	t.Cleanup(func() {
		if err := s.Remove(); err != nil && !errors.Is(err, ErrRemoved) {
			t.Errorf("Remove(%d): %v", s.ID(), err)
		}
		if sysvSemIDs(t)[s.ID()] {
			t.Errorf("set %d still listed in /proc/sysvipc/sem after cleanup", s.ID())
		}
	})
	return s
}

// waitWaiting polls GETNCNT until want sleepers are queued on num.
func waitWaiting(t *testing.T, s *Set, num, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := s.Waiting(num)
		if err != nil {
			t.Fatalf("Waiting: %v", err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Waiting(%d) = %d, want %d", num, n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCreateRemove(t *testing.T) {
	s, err := Create(3, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 3 {
		t.Errorf("Len = %d, want 3", s.Len())
	}
	for i := range 3 {
		if v, err := s.Value(i); err != nil || v != 0 {
			t.Errorf("Value(%d) = %d, %v; want 0, nil", i, v, err)
		}
	}
	if _, err := s.Value(3); err == nil {
		t.Error("Value(3) on a set of 3 succeeded")
	}
	if err := s.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if sysvSemIDs(t)[s.ID()] {
		t.Fatalf("set %d still listed after Remove", s.ID())
	}
	if err := s.Remove(); !errors.Is(err, ErrRemoved) {
		t.Errorf("second Remove = %v, want ErrRemoved", err)
	}
	if _, err := s.Value(0); !errors.Is(err, ErrRemoved) {
		t.Errorf("Value after Remove = %v, want ErrRemoved", err)
	}
	if _, err := Create(0, 0o600); err == nil {
		t.Error("Create(0) succeeded")
	}
}

func TestAttach(t *testing.T) {
	s := newSet(t, 4)
	for _, n := range []int{1, 3, 5, 0} {
		if _, err := Attach(s.ID(), n); !errors.Is(err, ErrMismatch) {
			t.Errorf("Attach(id, %d) on a set of 4 = %v, want ErrMismatch", n, err)
		}
	}
	a, err := Attach(s.ID(), 4)
	if err != nil {
		t.Fatalf("Attach(id, 4): %v", err)
	}
	if a.ID() != s.ID() || a.Len() != 4 {
		t.Fatalf("Attach = id %d len %d", a.ID(), a.Len())
	}
	if err := a.SetValue(3, 12345); err != nil {
		t.Fatalf("SetValue: %v", err)
	}
	if v, err := s.Value(3); err != nil || v != 12345 {
		t.Fatalf("Value(3) = %d, %v; want 12345 (cookie)", v, err)
	}
	if err := s.SetValue(0, -1); err == nil {
		t.Error("SetValue(-1) succeeded")
	}
}

func TestAttachRemoved(t *testing.T) {
	s, err := Create(1, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(s.ID(), 1); !errors.Is(err, ErrRemoved) {
		t.Fatalf("Attach on removed set = %v, want ErrRemoved", err)
	}
}

func TestWaitDeadline(t *testing.T) {
	s := newSet(t, 1)
	deadline := time.Now().Add(50 * time.Millisecond)
	err := s.Wait(0, nil, 0, deadline)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait = %v, want os.ErrDeadlineExceeded", err)
	}
	if now := time.Now(); now.Before(deadline) {
		t.Fatalf("Wait returned %v before the deadline", deadline.Sub(now))
	}
	if err := s.Wait(0, nil, 0, time.Now().Add(-time.Second)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait with past deadline = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestWakeThenWait(t *testing.T) {
	s := newSet(t, 2)
	if err := s.Wake(1, 1); err != nil {
		t.Fatalf("Wake: %v", err)
	}
	if v, _ := s.Value(0); v != 0 {
		t.Fatalf("Wake(1) changed semaphore 0 to %d", v)
	}
	// The token is already there: a past deadline must still take it.
	if err := s.Wait(1, nil, 0, time.Now().Add(-time.Second)); err != nil {
		t.Fatalf("Wait after Wake = %v, want nil", err)
	}
	if v, err := s.Value(1); err != nil || v != 0 {
		t.Fatalf("Value after Wait = %d, %v; want 0", v, err)
	}
}

func TestWakeDoesNotPileUp(t *testing.T) {
	s := newSet(t, 1)
	for range 5 {
		if err := s.Wake(0, 1); err != nil {
			t.Fatalf("Wake: %v", err)
		}
	}
	if v, err := s.Value(0); err != nil || v != 1 {
		t.Fatalf("Value after 5×Wake(0,1) = %d, %v; want 1", v, err)
	}
	if err := s.Wake(0, 3); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Value(0); v != 3 {
		t.Fatalf("Value after Wake(0,3) = %d, want 3", v)
	}
	if err := s.Wake(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Value(0); v != semvmx {
		t.Fatalf("Value after huge Wake = %d, want %d", v, semvmx)
	}
}

func TestWaitWordDiffers(t *testing.T) {
	s := newSet(t, 1)
	var word atomic.Uint32
	word.Store(2)
	// No deadline: this would hang if Wait slept.
	if err := s.Wait(0, &word, 1, time.Time{}); err != nil {
		t.Fatalf("Wait = %v, want nil", err)
	}
	// Word equal: it must sleep (and time out).
	if err := s.Wait(0, &word, 2, time.Now().Add(20*time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait with equal word = %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestWakeSleeper(t *testing.T) {
	s := newSet(t, 1)
	done := make(chan error, 1)
	go func() { done <- s.Wait(0, nil, 0, time.Now().Add(30*time.Second)) }()
	waitWaiting(t, s, 0, 1)
	if err := s.Wake(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v, want nil", err)
	}
}

func TestRemoveWakesSleeper(t *testing.T) {
	s := newSet(t, 1)
	done := make(chan error, 1)
	go func() { done <- s.Wait(0, nil, 0, time.Time{}) }()
	waitWaiting(t, s, 0, 1)
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrRemoved) {
			t.Fatalf("Wait = %v, want ErrRemoved", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sleeper not woken by Remove")
	}
}

const childEnv = "SHMBUS_SEM_TEST_CHILD" // id of the set to attach

// crossProcessChild runs in the re-executed test binary. Exit codes: 0 passed the semaphore,
// 2 attach failure, 3 Wait error or deadline.
func crossProcessChild(idStr string) int {
	id, err := strconv.Atoi(idStr)
	if err != nil {
		return 2
	}
	s, err := Attach(id, 2)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child attach:", err)
		return 2
	}
	if err := s.Wait(1, nil, 0, time.Now().Add(20*time.Second)); err != nil {
		fmt.Fprintln(os.Stderr, "child wait:", err)
		return 3
	}
	return 0
}

func TestCrossProcess(t *testing.T) {
	if id := os.Getenv(childEnv); id != "" {
		os.Exit(crossProcessChild(id))
	}
	s := newSet(t, 2)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(s.ID()))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := s.Waiting(1)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("child exited before sleeping: %v\n%s", err, out.String())
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("child never slept\n%s", out.String())
		}
	}
	if err := s.Wake(1, 1); err != nil {
		t.Fatal(err)
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
