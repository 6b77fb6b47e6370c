package cclient

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/testutil"
)

// The tests run the C tool (shmbus-c, built once by TestMain) as real
// processes next to Go producers and consumers in this process. The test
// binary doubles as a Go producer process that kills itself mid-claim
// (roleEnv), for the C consumer's recovery test.

const roleEnv = "SHMBUS_CCLIENT_ROLE"

var (
	cBin     string // shmbus-c, -O2
	cSan     string // shmbus-c-san (ASan+UBSan), or cBin if that cannot be built
	noCC     error  // why the C tests skip
	busDir   string // SHMBUS_DIR for every bus the tests make
	semMu    sync.Mutex
	semIDs   []int // semaphore sets of the buses the tests made
	busCount atomic.Int64
)

func TestMain(m *testing.M) {
	testutil.RunRole(roleEnv, runRole)
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "shmbus-cclient-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	busDir = filepath.Join(tmp, "buses")
	if err := os.Mkdir(busDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("SHMBUS_DIR", busDir)
	cBin, noCC = Build(tmp)
	if noCC != nil && !errors.Is(noCC, ErrNoCompiler) {
		fmt.Fprintf(os.Stderr, "FAIL: building the C client: %v\n", noCC)
		return 1
	}
	cSan = cBin
	if noCC == nil {
		if san, err := BuildWith(tmp, Options{Sanitize: true}); err == nil && sanitizerWorks(san) {
			cSan = san
		} else {
			fmt.Fprintf(os.Stderr, "note: no sanitizer build (%v); using the -O2 build everywhere\n", err)
		}
	}
	before := testutil.ShmFiles()
	code := m.Run()
	if code == 0 {
		if left, _ := os.ReadDir(busDir); len(left) > 0 {
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			fmt.Fprintf(os.Stderr, "FAIL: files left behind in SHMBUS_DIR: %v\n", names)
			code = 1
		}
		if leaks := leakedSems(); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: semaphore sets left behind: %v\n", leaks)
			code = 1
		}
		if after := testutil.ShmFiles(); len(after) > len(before) {
			fmt.Fprintf(os.Stderr, "FAIL: /dev/shm gained shmbus files: %v\n", after)
			code = 1
		}
	}
	return code
}

// sanitizerWorks runs the sanitized binary once: ASan cannot run
// everywhere (some sandboxes refuse its address-space layout).
func sanitizerWorks(bin string) bool {
	err := exec.Command(bin, "open-many").Run()
	return err == nil
}

func leakedSems() []int {
	semMu.Lock()
	defer semMu.Unlock()
	return testutil.LiveSems(semIDs)
}

// needC skips t if there is no C compiler.
func needC(t testing.TB) {
	t.Helper()
	if noCC != nil {
		t.Skipf("C client tests need a C compiler: %v", noCC)
	}
}

var nameRE = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// newBus creates a bus for t (removed at cleanup) and returns it with its
// name.
func newBus(t testing.TB, o shmbus.Options) (*shmbus.Bus, string) {
	t.Helper()
	name := fmt.Sprintf("%s.%d", nameRE.ReplaceAllString(t.Name(), "_"), busCount.Add(1))
	if len(name) > 150 {
		name = "t" + name[len(name)-150:] // names may not start with '-' or '.'
	}
	bus, err := shmbus.Create(name, &o)
	if err != nil {
		t.Fatal(err)
	}
	if bus.WakeMode() == shmbus.WakeSem {
		semMu.Lock()
		semIDs = append(semIDs, bus.Config().SemID)
		semMu.Unlock()
	}
	t.Cleanup(func() {
		if err := bus.Remove(); err != nil {
			t.Errorf("remove bus: %v", err)
		}
	})
	return bus, name
}

// cmdC is a C tool process with its output kept.
type cmdC struct {
	*exec.Cmd
	out, errb testutil.SyncBuffer
	done      chan struct{}
	err       error
}

// startC starts bin with args; its output is kept for wait.
func startC(t testing.TB, bin string, args ...string) *cmdC {
	t.Helper()
	c := &cmdC{Cmd: exec.Command(bin, args...), done: make(chan struct{})}
	c.Stdout, c.Stderr = &c.out, &c.errb
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

// wait waits for c (killing it after d) and fails t unless it succeeded.
func (c *cmdC) wait(t testing.TB, d time.Duration) string {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		c.Process.Kill()
		<-c.done
		t.Fatalf("%v: still running after %v; stdout:\n%s\nstderr:\n%s", c.Args, d, c.out.String(), c.errb.String())
	}
	if c.err != nil {
		t.Fatalf("%v: %v; stdout:\n%s\nstderr:\n%s", c.Args, c.err, c.out.String(), c.errb.String())
	}
	return c.out.String()
}

func busMode(sem, spsc bool) string {
	s := "futex"
	if sem {
		s = "sem"
	}
	if spsc {
		return s + "/spsc"
	}
	return s + "/mpsc"
}

func wakeOf(sem bool) shmbus.WakeMode {
	if sem {
		return shmbus.WakeSem
	}
	return shmbus.WakeFutex
}

func producersOf(spsc bool) shmbus.ProducerMode {
	if spsc {
		return shmbus.SingleProducer
	}
	return shmbus.MultiProducer
}
