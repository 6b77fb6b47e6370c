package pyclient_test

// Tests of the Python client (shmbus.py) against the real daemon: the
// shmbus command is built into a temporary directory, `shmbus daemon` runs
// as a process of its own on a socket and a bus directory in a temporary
// directory, and Python runs as real processes (shmbus_cli.py, and the
// Python unit tests). Go peers use the library directly on the daemon's
// directory. Every message is checked: a header with producer, sequence
// number, priority and the CRC-32 of a body made from a pattern of both, so
// loss, duplication, reordering and damaged bytes are all caught.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/testutil"
	"github.com/shmbus/shmbus/layout"
)

// The test binary doubles as a Go peer process: TestMain runs the role
// named by roleEnv instead of the tests.
const roleEnv = "SHMBUS_PYCLIENT_ROLE"

var (
	python  string // python3 in PATH; "" if there is none
	binDir  string // where the shmbus command is built
	buildMu sync.Mutex
	built   string // the shmbus command, once built
)

func TestMain(m *testing.M) {
	testutil.RunRole(roleEnv, runRole)
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	python = findPython()
	dir, err := os.MkdirTemp("", "shmbus-pyclient-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	return m.Run()
}

// runRole runs a Go peer process. "producer": open the bus $SHMBUS_NAME in
// $SHMBUS_DIR, take a producer, say "ready PID" on stdout and wait until
// stdin closes (or the process is killed).
func runRole(role string) error {
	if role != "producer" {
		return fmt.Errorf("%w %q", testutil.ErrUnknownRole, role)
	}
	bus, err := shmbus.Open(os.Getenv("SHMBUS_NAME"), &shmbus.OpenOptions{Dir: os.Getenv("SHMBUS_DIR")})
	if err != nil {
		return err
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Printf("ready %d\n", os.Getpid())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// findPython returns the python3 interpreter itself: a version manager's
// shim in PATH (pyenv's is a shell script) costs a tenth of a second a run.
func findPython() string {
	p, err := exec.LookPath("python3")
	if err != nil {
		return ""
	}
	out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
	if exe := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(exe) {
		return exe
	}
	return p
}

func requirePython(t *testing.T) {
	t.Helper()
	if python == "" {
		t.Skip("python3 is not in PATH: the Python client's tests need it")
	}
}

// shmbusCommand builds ./cmd/shmbus once, with the race detector when this
// test binary has it, so that the daemon is checked too.
func shmbusCommand(t *testing.T) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if built != "" {
		return built
	}
	bin := filepath.Join(binDir, "shmbus")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/shmbus/shmbus/cmd/shmbus")
	out, err := exec.Command(goCommand(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	built = bin
	return bin
}

// goCommand is the go command on PATH, else the one of a standard
// installation.
func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// worldDir makes a temporary directory that every user may enter (the
// permission test runs Python as another user), removed when t ends.
func worldDir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A daemon is a running `shmbus daemon`.
type daemon struct {
	sock   string // its socket
	dir    string // its bus directory (--dir)
	base   string // the temporary directory holding both
	cmd    *exec.Cmd
	out    testutil.SyncBuffer
	exited chan struct{}
}

// startDaemon starts `shmbus daemon` and waits for its socket to accept
// connections. When t ends it stops the daemon with SIGTERM, requires exit
// status 0, and requires every bus the test made to be gone.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	requirePython(t)
	bin := shmbusCommand(t)
	base := worldDir(t, "shmbus-pyclient-")
	d := &daemon{sock: filepath.Join(base, "sock"), dir: filepath.Join(base, "buses"), base: base,
		exited: make(chan struct{})}
	if err := os.Mkdir(d.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.checkNoBuses(t) })
	d.cmd = exec.Command(bin, "daemon", "--socket", d.sock, "--dir", d.dir)
	// A race-enabled daemon waits a second at exit for reports to drain
	// unless told otherwise; a race it found still makes it exit with 66.
	d.cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dialUnix(d.sock)
		if err == nil {
			c.Close()
			t.Cleanup(func() { d.stop(t) })
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("shmbus daemon exited at start (%v):\n%s", d.cmd.ProcessState, d.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.cmd.Process.Kill()
			<-d.exited
			t.Fatalf("shmbus daemon: socket %s not accepting after 10s: %v\n%s", d.sock, err, d.out.String())
		}
	}
}

func dialUnix(path string) (io.Closer, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (d *daemon) stop(t *testing.T) {
	d.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		t.Errorf("shmbus daemon did not exit within 10s of SIGTERM; killed\n%s", d.out.String())
		return
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("shmbus daemon exited with %v after SIGTERM, want status 0\n%s", d.cmd.ProcessState, d.out.String())
	} else if t.Failed() {
		t.Logf("shmbus daemon output:\n%s", d.out.String())
	}
}

// checkNoBuses fails the test if any file is left in the bus directory.
func (d *daemon) checkNoBuses(t *testing.T) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		t.Error(err)
		return
	}
	for _, e := range entries {
		t.Errorf("left behind in the bus directory: %s", e.Name())
	}
}

// pyResult is what a Python process did.
type pyResult struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// py runs `python3 shmbus_cli.py ARGS` against the daemon and waits for it
// (at most a minute). A process that cannot start has code -1. It may be
// called from any goroutine.
func (d *daemon) py(args ...string) pyResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := d.pyCommand(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := pyResult{stdout.String(), stderr.String(), 0, time.Since(start)}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		res.code = -1
		res.stderr += err.Error()
	}
	return res
}

// mustPy is py that requires exit status 0 and returns stdout.
func (d *daemon) mustPy(t *testing.T, args ...string) string {
	t.Helper()
	r := d.py(args...)
	if r.code != 0 {
		t.Fatalf("shmbus_cli.py %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (d *daemon) pyCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, python, append([]string{cliPath()}, args...)...)
	cmd.Env = append(os.Environ(), "SHMBUS_SOCKET="+d.sock, "PYTHONDONTWRITEBYTECODE=1")
	return cmd
}

func cliPath() string {
	p, err := filepath.Abs("shmbus_cli.py")
	if err != nil {
		panic(err)
	}
	return p
}

// decodeJSON decodes the line of stdout a shmbus_cli.py command printed.
func decodeJSON(t *testing.T, line string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), v); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
}

// Checked messages: the same format as shmbus_cli.py's checked_message.

const (
	checkHeader   = 16  // producer u32, seq u32, priority u16, 0 u16, crc32(body) u32
	patternPeriod = 251 // checked_body's period
)

func checkedBody(producer, seq uint32, size int) []byte {
	block := make([]byte, patternPeriod)
	for j := range block {
		block[j] = byte(uint32(j)*167 + seq*31 + producer*97 + 1)
	}
	return bytes.Repeat(block, size/patternPeriod+1)[:size]
}

func checkedMessage(producer, seq uint32, prio, size int) []byte {
	body := checkedBody(producer, seq, size)
	msg := make([]byte, checkHeader, checkHeader+size)
	binary.LittleEndian.PutUint32(msg[0:], producer)
	binary.LittleEndian.PutUint32(msg[4:], seq)
	binary.LittleEndian.PutUint16(msg[8:], uint16(prio))
	binary.LittleEndian.PutUint32(msg[12:], crc32.ChecksumIEEE(body))
	return append(msg, body...)
}

func verifyMessage(prio int, msg []byte) (producer, seq uint32, err error) {
	if len(msg) < checkHeader {
		return 0, 0, fmt.Errorf("message of %d bytes is shorter than its header", len(msg))
	}
	producer, seq = binary.LittleEndian.Uint32(msg[0:]), binary.LittleEndian.Uint32(msg[4:])
	sentPrio, pad := binary.LittleEndian.Uint16(msg[8:]), binary.LittleEndian.Uint16(msg[10:])
	body := msg[checkHeader:]
	switch {
	case pad != 0:
		err = fmt.Errorf("header padding %d", pad)
	case crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(msg[12:]):
		err = fmt.Errorf("CRC-32 of the %d-byte body differs", len(body))
	case !bytes.Equal(body, checkedBody(producer, seq, len(body))):
		err = errors.New("body differs from the pattern")
	case int(sentPrio) != prio:
		err = fmt.Errorf("sent at priority %d, received at %d", sentPrio, prio)
	}
	if err != nil {
		err = fmt.Errorf("message %d of producer %d: %w", seq, producer, err)
	}
	return producer, seq, err
}

// TestCheckedMessageGolden pins the format shared with shmbus_cli.py
// (test_cli.py has the same bytes).
func TestCheckedMessageGolden(t *testing.T) {
	got := hex.EncodeToString(checkedMessage(1, 2, 3, 10))
	if want := "0100000002000000030000003ae251e9a047ee953ce38a31d87f"; got != want {
		t.Fatalf("checkedMessage(1, 2, 3, 10) = %s, want %s", got, want)
	}
	msg := checkedMessage(4, 5, 1, 3000)
	if _, _, err := verifyMessage(1, msg); err != nil {
		t.Fatal(err)
	}
	msg[2000] ^= 0x40
	if _, _, err := verifyMessage(1, msg); err == nil {
		t.Fatal("a flipped bit was not detected")
	}
}

// sequence checks that each producer's messages come once each, in order
// per priority, and all of them.
type sequence struct {
	seen map[uint32]map[uint32]bool // producer -> seqs
	last map[[2]uint32]uint32       // (producer, priority) -> last seq
	n    map[uint32]int             // producer -> messages expected
	prio map[int]int                // priority -> messages
}

func newSequence(expect map[uint32]int) *sequence {
	s := &sequence{seen: map[uint32]map[uint32]bool{}, last: map[[2]uint32]uint32{}, n: expect, prio: map[int]int{}}
	for k := range expect {
		s.seen[k] = map[uint32]bool{}
	}
	return s
}

func (s *sequence) add(producer, seq uint32, prio int) error {
	seen, ok := s.seen[producer]
	switch {
	case !ok || int(seq) >= s.n[producer]:
		return fmt.Errorf("message %d of producer %d was not sent", seq, producer)
	case seen[seq]:
		return fmt.Errorf("message %d of producer %d came twice", seq, producer)
	}
	key := [2]uint32{producer, uint32(prio)}
	if last, ok := s.last[key]; ok && last > seq {
		return fmt.Errorf("message %d of producer %d came after %d at priority %d", seq, producer, last, prio)
	}
	seen[seq] = true
	s.last[key] = seq
	s.prio[prio]++
	return nil
}

func (s *sequence) complete() error {
	for k, n := range s.n {
		if len(s.seen[k]) != n {
			return fmt.Errorf("producer %d: %d of %d messages received", k, len(s.seen[k]), n)
		}
	}
	return nil
}

// TestPythonUnit runs the Python client's unit tests (framing against a
// fake daemon, malformed replies, checked messages).
func TestPythonUnit(t *testing.T) {
	requirePython(t)
	cmd := exec.Command(python, "-W", "error", "-m", "unittest", "-v", "test_shmbus", "test_cli")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in .*\n\nOK$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("python3 -m unittest: no OK summary\n%s", out)
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 60 {
		t.Fatalf("python3 -m unittest ran %d tests, want at least 60\n%s", n, out)
	}
	t.Logf("python3 -m unittest: ran %s tests", m[1])
}

// TestPythonToGo: two Python producers send checked messages (priorities
// and messages of up to 3 MiB, many times a record) through the daemon; a
// Go consumer on the same directory receives and verifies every one.
func TestPythonToGo(t *testing.T) {
	d := startDaemon(t)
	const name, perProducer = "py-to-go", 20
	d.mustPy(t, "create", name, "--priorities", "3")
	defer d.mustPy(t, "rm", name)

	bus, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: d.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	c, err := bus.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	seq := newSequence(map[uint32]int{0: perProducer, 1: perProducer})
	done := make(chan error, 1)
	stop, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	go func() {
		buf := make([]byte, bus.MaxMessage())
		for i := 0; i < 2*perProducer; i++ {
			ctx, cancel := context.WithTimeout(stop, 20*time.Second)
			n, prio, err := c.Receive(ctx, buf)
			cancel()
			if err != nil {
				done <- fmt.Errorf("receive %d: %w", i, err)
				return
			}
			k, s, err := verifyMessage(prio, buf[:n])
			if err == nil {
				err = seq.add(k, s, prio)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- seq.complete()
	}()

	var wg sync.WaitGroup
	results := make([]pyResult, 2)
	for k := range results {
		wg.Go(func() {
			results[k] = d.py("produce", name, "-n", strconv.Itoa(perProducer), "-k", strconv.Itoa(k),
				"--sizes", "0,100,3MiB,200000,1048583", "--priorities", "0,2,1,2")
		})
	}
	wg.Wait()
	for k, r := range results {
		if r.code != 0 {
			t.Errorf("producer %d: exit %d\n%s", k, r.code, r.stderr)
			cancelAll()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryReceive(make([]byte, bus.MaxMessage())); !errors.Is(err, shmbus.ErrEmpty) {
		t.Errorf("after every message: TryReceive = %v, want ErrEmpty", err)
	}
	t.Logf("received %d messages per priority: %v", 2*perProducer, seq.prio)
}

// TestGoToPython: a Go producer sends checked messages through a bus the
// daemon did not make; Python receives them through the daemon. First the
// bus is filled and then drained, which must come highest priority first,
// oldest first; then large messages (up to 4 MiB, many times a lane) flow
// while Python receives.
func TestGoToPython(t *testing.T) {
	d := startDaemon(t)
	const name = "go-to-py"
	bus, err := shmbus.Create(name, &shmbus.Options{Dir: d.dir, Priorities: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := bus.Remove(); err != nil {
			t.Error(err)
		}
	}()
	p, err := bus.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	send := func(n int, sizes []int) error {
		for s := 0; s < n; s++ {
			prio := s % 4
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := p.Send(ctx, checkedMessage(0, uint32(s), prio, sizes[s%len(sizes)]), prio)
			cancel()
			if err != nil {
				return fmt.Errorf("send %d: %w", s, err)
			}
		}
		return nil
	}

	t.Run("priority order", func(t *testing.T) {
		// 10 messages a lane, two of them 300 KiB (three records each):
		// all fit the 1 MiB lanes, so nothing waits for the consumer.
		if err := send(40, []int{0, 1000, 300 << 10, 50, 7000}); err != nil {
			t.Fatal(err)
		}
		var sum struct {
			Received   int            `json:"received"`
			ByPriority map[string]int `json:"by_priority"`
		}
		out := d.mustPy(t, "consume", name, "-n", "40", "--priority-order", "--expect-empty")
		decodeJSON(t, out, &sum)
		want := map[string]int{"0": 10, "1": 10, "2": 10, "3": 10}
		if sum.Received != 40 || fmt.Sprint(sum.ByPriority) != fmt.Sprint(want) {
			t.Errorf("consume summary %s, want 40 received, %v by priority", out, want)
		}
	})

	t.Run("large messages", func(t *testing.T) {
		const n = 24
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := d.pyCommand(ctx, "consume", name, "-n", strconv.Itoa(n), "--expect-empty")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sendErr := send(n, []int{4 << 20, 100, 1<<20 + 5, 130 << 10, 2 << 20})
		if err := cmd.Wait(); err != nil {
			t.Fatalf("consume: %v\n%s", err, stderr.String())
		}
		if sendErr != nil {
			t.Fatal(sendErr)
		}
		var sum struct {
			Received int `json:"received"`
			Bytes    int `json:"bytes"`
		}
		decodeJSON(t, stdout.String(), &sum)
		if sum.Received != n || sum.Bytes < 30<<20 {
			t.Errorf("consume summary %s, want %d messages and over 30 MiB", stdout.String(), n)
		}
	})
}

// event is a line of `shmbus_cli.py events`.
type event struct {
	Subscribed *string `json:"subscribed"`
	Kind       string  `json:"kind"`
	Bus        string  `json:"bus"`
	PID        int     `json:"pid"`
	Slot       int     `json:"slot"`
	Role       string  `json:"role"`
	Client     int     `json:"client"`
	TimeNS     int64   `json:"time_ns"`
}

// TestPeerEvents: Python subscribes to a bus and sees JOIN and LEAVE for a
// Go producer that attaches and closes, and JOIN and CRASH for a Go producer
// process killed with SIGKILL — those four events and no others.
func TestPeerEvents(t *testing.T) {
	d := startDaemon(t)
	const name = "events"
	bus, err := shmbus.Create(name, &shmbus.Options{Dir: d.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := bus.Remove(); err != nil {
			t.Error(err)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub := d.pyCommand(ctx, "events", name, "--count", "4", "--timeout", "30")
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	sub.Stderr = &stderr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(what string) event {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				sub.Wait()
				t.Fatalf("waiting for %s: events ended (%v)\n%s", what, sub.ProcessState, stderr.String())
			}
			var e event
			decodeJSON(t, line, &e)
			t.Logf("event: %s", line)
			return e
		case <-time.After(15 * time.Second):
			t.Fatalf("no event in 15s while waiting for %s", what)
		}
		panic("unreachable")
	}
	expect := func(kind string, pid int, slot int) event {
		t.Helper()
		e := next(fmt.Sprintf("%s of pid %d", kind, pid))
		if e.Kind != kind || e.Bus != name || e.PID != pid || (slot >= 0 && e.Slot != slot) {
			t.Fatalf("got %+v, want %s on %s of pid %d (slot %d)", e, kind, name, pid, slot)
		}
		if kind == "JOIN" && e.Role != "producer" && e.Role != "none" {
			t.Errorf("JOIN of a producer with role %q", e.Role)
		}
		if e.Client != 0 {
			t.Errorf("%s of a peer attached by path with client %d, want 0", kind, e.Client)
		}
		if now := time.Now().UnixNano(); e.TimeNS <= 0 || e.TimeNS > now || now-e.TimeNS > int64(time.Minute) {
			t.Errorf("%s at time %d, now is %d", kind, e.TimeNS, now)
		}
		return e
	}
	if e := next("the subscription"); e.Subscribed == nil || *e.Subscribed != name {
		t.Fatalf("first line %+v, want subscribed %q", e, name)
	}

	// A producer in this process: JOIN, then LEAVE when it closes.
	other, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: d.dir})
	if err != nil {
		t.Fatal(err)
	}
	p, err := other.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	join := expect("JOIN", os.Getpid(), -1)
	p.Close()
	other.Close()
	expect("LEAVE", os.Getpid(), join.Slot)

	// A producer process killed with SIGKILL: JOIN, then CRASH.
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), roleEnv+"=producer", "SHMBUS_NAME="+name, "SHMBUS_DIR="+d.dir)
	childIn, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer childIn.Close()
	childOut, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	if line, err := bufio.NewReader(childOut).ReadString('\n'); err != nil || !strings.HasPrefix(line, "ready ") {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("producer process: %q, %v (%v)", line, err, child.ProcessState)
	}
	join = expect("JOIN", child.Process.Pid, -1)
	child.Process.Signal(unix.SIGKILL)
	child.Wait()
	expect("CRASH", child.Process.Pid, join.Slot)

	if err := sub.Wait(); err != nil {
		t.Fatalf("events: %v\n%s", err, stderr.String())
	}
	for line := range lines {
		t.Errorf("unexpected event: %s", line)
	}
	// The daemon released the dead producer's slot: no peer is left.
	st, err := bus.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range st.Peers {
		t.Errorf("peer left after the events: %+v", peer)
	}
}

// TestQueuedEvents: events that come while Python waits for a reply (a
// RECV that times out) are queued and returned after it, not lost: the
// JOIN of the daemon's consumer held for Python (daemon pid, client =
// Python's pid) and the JOIN of a Go producer.
func TestQueuedEvents(t *testing.T) {
	d := startDaemon(t)
	const name = "queued"
	bus, err := shmbus.Create(name, &shmbus.Options{Dir: d.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := bus.Remove(); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("testdata", "queued_events.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, script, name, "1")
	cmd.Env = d.pyCommand(ctx).Env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); line != "subscribed\n" {
		t.Fatalf("queued_events.py: %q, %v\n%s", line, err, stderr.String())
	}
	time.Sleep(200 * time.Millisecond) // Python is in its RECV by now (if not, the events still come during it)
	p, err := bus.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rest, _ := io.ReadAll(out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("queued_events.py: %v\n%s%s", err, rest, stderr.String())
	}
	var got struct {
		Queued int
		Events []struct {
			Kind        string
			PID, Client int
			Role        string
		}
	}
	decodeJSON(t, string(rest), &got)
	var producer, consumer bool
	for _, e := range got.Events {
		producer = producer || e.Kind == "JOIN" && e.PID == os.Getpid() && e.Client == 0
		consumer = consumer || e.Kind == "JOIN" && e.PID == d.cmd.Process.Pid && e.Client == cmd.Process.Pid && e.Role == "consumer"
	}
	if got.Queued != len(got.Events) || !producer || !consumer {
		t.Fatalf("after the RECV: %s; want both JOINs (producer pid %d; consumer pid %d for client %d), all queued during the RECV",
			rest, os.Getpid(), d.cmd.Process.Pid, cmd.Process.Pid)
	}
}

// TestErrorMapping: each refusal of the real daemon reaches Python as the
// exception of its code (shmbus_cli.py names the class on stderr).
func TestErrorMapping(t *testing.T) {
	d := startDaemon(t)
	d.mustPy(t, "create", "errs", "--priorities", "2", "--max-message", "1KiB")
	defer d.mustPy(t, "rm", "errs")
	d.mustPy(t, "create", "tiny", "--capacity", "1KiB", "--failfast")
	defer d.mustPy(t, "rm", "tiny")

	// A consumer held by this process.
	held, err := shmbus.Create("held", &shmbus.Options{Dir: d.dir})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Remove()
	c, err := held.NewConsumer()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// 20 messages of 100 bytes, each one record of the 1 KiB lane (records
	// are at most 128 bytes there): FULL after about nine.
	fill := []string{"send", "tiny", "--nowait"}
	for i := 0; i < 20; i++ {
		fill = append(fill, strings.Repeat("x", 100))
	}
	tests := []struct {
		name  string
		args  []string
		code  int    // exit status
		class string // exception class named on stderr
	}{
		{"not found recv", []string{"recv", "nosuch", "--nowait"}, 1, "NotFound"},
		{"not found stat", []string{"stat", "nosuch"}, 1, "NotFound"},
		{"not found open", []string{"open", "nosuch"}, 1, "NotFound"},
		{"not found rm", []string{"rm", "nosuch"}, 1, "NotFound"},
		// A bad name, and a configuration create cannot make, are usage
		// errors, as for the shmbus command.
		{"bad name slash", []string{"stat", "bad/name"}, 2, "BadName"},
		{"bad name dots", []string{"recv", "a..b", "--nowait"}, 2, "BadName"},
		{"bad name long", []string{"create", strings.Repeat("n", 201)}, 2, "BadName"},
		{"bad name dash", []string{"create", "--", "-dash"}, 2, "BadName"},
		{"bad name dot", []string{"create", ".hidden"}, 2, "BadName"},
		{"exists", []string{"create", "errs"}, 1, "Exists"},
		{"bad configuration", []string{"create", "badcfg", "--capacity", "1000"}, 2, "BadArgument"},
		{"bad priority", []string{"send", "errs", "-p", "2", "x"}, 1, "BadArgument"},
		{"too large", []string{"send", "errs", strings.Repeat("y", 1025)}, 1, "TooLarge"},
		{"empty", []string{"recv", "errs", "--nowait"}, 3, "Empty"},
		{"timeout", []string{"recv", "errs", "--timeout", "0.3"}, 3, "Timeout"},
		{"timeout go style", []string{"recv", "errs", "--timeout", "300ms"}, 3, "Timeout"},
		{"busy", []string{"recv", "held", "--nowait"}, 1, "Busy"},
		{"full", fill, 1, "Full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := d.py(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, ": "+tt.class+": ") {
				t.Fatalf("exit %d, stderr %q; want exit %d naming %s", r.code, r.stderr, tt.code, tt.class)
			}
			// One line, without the protocol's "NAME (code)".
			if strings.Count(r.stderr, "\n") != 1 || regexp.MustCompile(`[A-Z_]+ \([0-9]+\)`).MatchString(r.stderr) {
				t.Errorf("stderr %q: want one line without the error code", r.stderr)
			}
			if tt.class == "Timeout" {
				if want := ": Timeout: timed out after 300ms\n"; !strings.HasSuffix(r.stderr, want) {
					t.Errorf("stderr %q, want it to end %q", r.stderr, want)
				}
				if r.elapsed < 300*time.Millisecond {
					t.Errorf("Timeout after %v, before the 300ms asked for", r.elapsed)
				}
			}
		})
	}
	// The refused requests made nothing and took nothing: "errs" is empty
	// and still receivable, "tiny" holds what fit before FULL.
	if out := d.mustPy(t, "ls"); out != "errs\nheld\ntiny\n" {
		t.Errorf("ls = %q, want errs, held, tiny", out)
	}
	d.mustPy(t, "send", "errs", "-p", "1", "still works")
	if out := d.mustPy(t, "recv", "errs", "--nowait"); out != "still works\n" {
		t.Errorf("recv errs = %q", out)
	}
}

// TestProtocolErrors: requests the client never makes (an unknown type,
// payloads that do not decode, a wrong version, no HELLO, frames that
// cannot be read) get from the real daemon the errors the document names,
// as their exception classes; the daemon closes the connection only after
// a frame it cannot read.
func TestProtocolErrors(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("testdata", "raw_errors.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, script)
	cmd.Env = d.pyCommand(ctx).Env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("raw_errors.py: %v\n%s", err, out)
	}
	var got map[string]string
	decodeJSON(t, string(out), &got)
	want := map[string]string{
		"unknown type":    "UnknownType",
		"field past end":  "BadFrame",
		"bytes left over": "BadFrame",
		"not utf-8":       "BadFrame",
		"usable after":    "ok",
		"bad version":     "BadVersion",
		"hello required":  "HelloRequired",
		"flags set":       "BadFrame id 77, then closed",
		"too long":        "TooLarge id 77, then closed",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("cases %v, want %v", got, want)
	}
}

// busInfo is the JSON of `shmbus_cli.py open`, in the words of `shmbus
// stat --json`: the mode in octal, the kind and modes by name.
type busInfo struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Producers  string `json:"producers"`
	Wake       string `json:"wake"`
	Priorities int    `json:"priorities"`
	Mode       string `json:"mode"`
	UID        int    `json:"uid"`
	Size       int64  `json:"size"`
	FD         bool   `json:"fd"`
	FDSize     int64  `json:"fd_size"`
	FDMagic    string `json:"fd_magic"`
}

// TestDescriptorPassing: OPEN with WANT_FD passes the segment's descriptor
// (SCM_RIGHTS), of a file bus and of a memfd bus; Python checks its size
// and reads the segment's magic through it.
func TestDescriptorPassing(t *testing.T) {
	d := startDaemon(t)
	d.mustPy(t, "create", "filebus", "--priorities", "2", "--mode", "640")
	defer d.mustPy(t, "rm", "filebus")
	d.mustPy(t, "create", "membus", "--memfd")
	defer d.mustPy(t, "rm", "membus")
	magic := hex.EncodeToString(layout.Magic[:])

	for _, tt := range []struct {
		name string
		kind string
	}{{"filebus", "file"}, {"membus", "memfd"}} {
		t.Run(tt.name, func(t *testing.T) {
			var info busInfo
			decodeJSON(t, d.mustPy(t, "open", tt.name, "--fd"), &info)
			if info.Name != tt.name || info.Kind != tt.kind || !info.FD || info.FDSize != info.Size ||
				info.Size <= 0 || info.FDMagic != magic || info.UID != os.Getuid() ||
				info.Producers != "multi" || info.Wake != "futex" {
				t.Fatalf("open %s --fd: %+v; want kind %s, producers multi, wake futex, a descriptor of size %d with magic %s, owner %d",
					tt.name, info, tt.kind, info.Size, magic, os.Getuid())
			}
			if tt.kind == "file" {
				fi, err := os.Stat(filepath.Join(d.dir, "shmbus."+tt.name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() != info.Size || fi.Mode().Perm() != 0o640 || info.Mode != "0640" || info.Priorities != 2 {
					t.Errorf("file %v mode %v, BUS reply %+v", fi.Size(), fi.Mode(), info)
				}
			}
			var plain busInfo
			decodeJSON(t, d.mustPy(t, "open", tt.name), &plain)
			if plain.FD || plain.Size != info.Size {
				t.Errorf("open %s without --fd: %+v", tt.name, plain)
			}
		})
	}
	if out := d.mustPy(t, "ls"); out != "filebus\nmembus\n" {
		t.Errorf("ls = %q, want filebus and membus", out)
	}
}

// otherUID is the user the permission test runs Python as.
const otherUID = 65534 // nobody

// TestPermission: a client of another user is refused, as PermissionDenied,
// what a bus's owner and mode do not admit.
func TestPermission(t *testing.T) {
	requirePython(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run Python as another user (uid 65534)")
	}
	d := startDaemon(t)
	// Python and the scripts must be reachable by the other user: copy the
	// scripts, and find an interpreter it may run (pyenv's lives in /root).
	scripts := worldDir(t, "shmbus-pyclient-scripts-")
	for _, f := range []string{"shmbus.py", "shmbus_cli.py"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(scripts, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The protocol leaves who may connect to the socket to its file mode;
	// this test admits everyone and relies on the daemon's checks.
	if err := os.Chmod(d.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	asOther := func(interp string, args ...string) pyResult {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, interp, append([]string{filepath.Join(scripts, "shmbus_cli.py")}, args...)...)
		cmd.Dir = scripts
		cmd.Env = []string{"PATH=/usr/bin:/bin", "SHMBUS_SOCKET=" + d.sock, "PYTHONDONTWRITEBYTECODE=1"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := pyResult{stdout: stdout.String(), stderr: stderr.String()}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			r.code = exit.ExitCode()
		} else if err != nil {
			r.code = -1
			r.stderr += err.Error()
		}
		return r
	}
	var interp string
	var tried []string
	for _, p := range []string{python, "/usr/bin/python3", "/usr/local/bin/python3"} {
		if r := asOther(p, "hello"); r.code == 0 {
			var w struct{ UID, GID int }
			decodeJSON(t, r.stdout, &w)
			if w.UID != otherUID || w.GID != otherUID {
				t.Fatalf("WELCOME to uid %d says uid %d gid %d", otherUID, w.UID, w.GID)
			}
			interp = p
			break
		} else {
			tried = append(tried, fmt.Sprintf("%s: exit %d %s", p, r.code, strings.TrimSpace(r.stderr)))
		}
	}
	if interp == "" {
		t.Skipf("no python3 that uid %d can run and connect with:\n%s", otherUID, strings.Join(tried, "\n"))
	}

	d.mustPy(t, "create", "private", "--mode", "600")
	defer d.mustPy(t, "rm", "private")
	d.mustPy(t, "create", "readable", "--mode", "644")
	defer d.mustPy(t, "rm", "readable")
	d.mustPy(t, "send", "readable", "for everyone")

	tests := []struct {
		name string
		args []string
		ok   bool // admitted; else PermissionDenied
	}{
		{"stat private", []string{"stat", "private"}, false},
		{"open private", []string{"open", "private"}, false},
		{"recv private", []string{"recv", "private", "--nowait"}, false},
		{"send private", []string{"send", "private", "x"}, false},
		{"subscribe private", []string{"events", "private", "--count", "1"}, false},
		{"rm private", []string{"rm", "private"}, false},
		{"stat readable", []string{"stat", "readable"}, true},
		{"open readable", []string{"open", "readable"}, true},
		{"open readable with fd", []string{"open", "readable", "--fd"}, false},
		{"send readable", []string{"send", "readable", "x"}, false},
		{"rm readable", []string{"rm", "readable"}, false},
		{"recv readable", []string{"recv", "readable", "--nowait"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := asOther(interp, tt.args...)
			switch {
			case tt.ok && r.code != 0:
				t.Fatalf("exit %d, stderr %q; want it admitted", r.code, r.stderr)
			case !tt.ok && (r.code != 1 || !strings.Contains(r.stderr, ": PermissionDenied: ")):
				t.Fatalf("exit %d, stderr %q; want PermissionDenied", r.code, r.stderr)
			}
		})
	}
	if out := d.mustPy(t, "ls"); out != "private\nreadable\n" {
		t.Errorf("ls = %q: the refused requests changed the buses", out)
	}

	// A bus the other user creates is its own: it may use and remove it,
	// and root may read it.
	t.Run("own bus", func(t *testing.T) {
		for _, args := range [][]string{
			{"create", "theirs", "--mode", "600"},
			{"send", "theirs", "mine"},
			{"open", "theirs", "--fd"},
		} {
			if r := asOther(interp, args...); r.code != 0 {
				t.Fatalf("%s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
			}
		}
		var info busInfo
		decodeJSON(t, d.mustPy(t, "open", "theirs"), &info)
		if info.UID != otherUID || info.Mode != "0600" {
			t.Errorf("bus created by uid %d: %+v", otherUID, info)
		}
		if out := d.mustPy(t, "recv", "theirs", "--nowait"); out != "mine\n" {
			t.Errorf("root's recv = %q", out)
		}
		if r := asOther(interp, "rm", "theirs"); r.code != 0 {
			d.mustPy(t, "rm", "theirs")
			t.Fatalf("rm theirs: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}
