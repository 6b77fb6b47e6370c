package proc

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const childEnv = "SHMBUS_PROC_TEST_CHILD"

func TestSelfAlive(t *testing.T) {
	id, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if id.PID != os.Getpid() || id.Start == 0 {
		t.Fatalf("Self = %+v, want pid %d and a nonzero start", id, os.Getpid())
	}
	if again, _ := Self(); again != id {
		t.Fatalf("Self changed: %+v then %+v", id, again)
	}
	if l, err := Lookup(id.PID); err != nil || l != id {
		t.Fatalf("Lookup(self) = %+v, %v; want %+v", l, err, id)
	}
	if s := Check(id); s != Alive {
		t.Fatalf("Check(self) = %v, want alive", s)
	}
}

func TestWrongStartIsDead(t *testing.T) {
	id, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []uint64{id.Start + 1, id.Start - 1, 0} {
		if s := Check(Identity{PID: id.PID, Start: start}); s != Dead {
			t.Errorf("Check(pid %d, start %d) with real start %d = %v, want dead", id.PID, start, id.Start, s)
		}
	}
}

func TestInvalidPIDUnknown(t *testing.T) {
	for _, pid := range []int{0, -1} {
		if s := Check(Identity{PID: pid}); s != Unknown {
			t.Errorf("Check(pid %d) = %v, want unknown", pid, s)
		}
		if _, err := Lookup(pid); !errors.Is(err, ErrNoProcess) {
			t.Errorf("Lookup(%d) = %v, want ErrNoProcess", pid, err)
		}
	}
}

// unusedPID returns a pid that /proc shows no process (or thread) for.
func unusedPID(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for pid := max - 1; pid > 300; pid-- {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); errors.Is(err, os.ErrNotExist) {
			return pid
		}
	}
	t.Fatal("no unused pid found")
	return 0
}

func TestNonexistentIsDead(t *testing.T) {
	pid := unusedPID(t)
	if s := Check(Identity{PID: pid, Start: 12345}); s != Dead {
		t.Fatalf("Check(unused pid %d) = %v, want dead", pid, s)
	}
	if _, err := Lookup(pid); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Lookup(unused pid %d) = %v, want ErrNoProcess", pid, err)
	}
}

func TestKilledChildIsDead(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		time.Sleep(time.Hour)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledChildIsDead$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	id, err := Lookup(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := Self()
	if id.Start < self.Start {
		t.Fatalf("child start %d before parent start %d", id.Start, self.Start)
	}
	if s := Check(id); s != Alive {
		t.Fatalf("Check(running child) = %v, want alive", s)
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: the child becomes a zombie, which must count as dead.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := readStat(id.PID)
		if err != nil {
			t.Fatalf("zombie vanished before Wait: %v", err)
		}
		if st.state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child state %c, never became a zombie", st.state)
		}
		time.Sleep(time.Millisecond)
	}
	if s := Check(id); s != Dead {
		t.Fatalf("Check(zombie) = %v, want dead", s)
	}
	cmd.Wait()
	waited = true
	if s := Check(id); s != Dead {
		t.Fatalf("Check(reaped child) = %v, want dead", s)
	}
	if _, err := Lookup(id.PID); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Lookup(reaped child) = %v, want ErrNoProcess", err)
	}
}
