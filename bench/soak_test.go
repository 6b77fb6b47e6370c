package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

func TestMain(m *testing.M) {
	// A benchmark peer (ipc_linux.go) is this test binary started again.
	if handled, err := ChildMain(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, _ := os.MkdirTemp("", "shmbus-bench-test-")
	os.Setenv("SHMBUS_DIR", dir)
	code := m.Run()
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		println("FAIL: files left in", dir)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestSoak(t *testing.T) {
	for _, wake := range []shmbus.WakeMode{shmbus.WakeFutex, shmbus.WakeSem} {
		progress := 0
		rep, err := Soak(context.Background(), SoakOptions{Duration: 1500 * time.Millisecond, Wake: wake,
			Progress: func(SoakReport) { progress++ }})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: %v", wake, rep)
		if rep.Errors != 0 || rep.Messages < 1000 || progress == 0 {
			t.Fatalf("soak: %v (progress reports: %d)", rep, progress)
		}
	}
}

// A soak run whose context ends returns what it did and the context's
// error, with no error counted for the interruption itself.
func TestSoakInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	progress := make(chan struct{}, 1)
	rep, err := Soak(ctx, SoakOptions{Duration: time.Minute, Progress: func(SoakReport) {
		select {
		case progress <- struct{}{}:
			cancel() // after the first report: messages flow
		default:
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if rep.Errors != 0 || rep.First != nil || rep.Messages == 0 {
		t.Fatalf("interrupted soak: %v", rep)
	}
}

// The checks a soak run relies on catch damage, duplicates and strangers.
func TestSoakChecks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	next := [][]uint32{{0, 0}, {0, 0}}
	counts := []uint32{0, 0}
	m := soakMsg(make([]byte, 100), 1, 0, 100, rng)
	if err := checkSoak(m, 0, next, counts); err != nil {
		t.Fatal(err)
	}
	if checkSoak(m, 0, next, counts) == nil {
		t.Fatal("duplicate not caught")
	}
	m = soakMsg(make([]byte, 100), 1, 1, 100, rng)
	m[50] ^= 1
	if checkSoak(m, 0, next, counts) == nil {
		t.Fatal("damage not caught")
	}
	if checkSoak(soakMsg(make([]byte, 100), 7, 0, 100, rng), 0, next, counts) == nil {
		t.Fatal("unknown producer not caught")
	}
	if checkSoak(make([]byte, 3), 0, next, counts) == nil {
		t.Fatal("runt not caught")
	}
}
