package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/bench"
	"github.com/shmbus/shmbus/internal/failpoint"
)

// shmbusMain is the command as the scripts run it. With
// $SHMBUS_TEST_CREATE_STEP_DELAY set (a duration), creating a segment
// sleeps that long before each chunk of it, so that a script can interrupt
// a create in the middle.
func shmbusMain() {
	if d, err := time.ParseDuration(os.Getenv("SHMBUS_TEST_CREATE_STEP_DELAY")); err == nil {
		failpoint.CreateStep.Set(func() { time.Sleep(d) })
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// programs are the commands the scripts run as processes.
var programs = map[string]func(){
	"shmbus":   shmbusMain,
	"exitcode": exitcodeMain,
	"takedie":  takeDieMain,

	"streamdie":  streamDieMain,
	"streamhead": streamHeadMain,
}

// streamDieMain is the program "streamdie NAME FILE": it writes FILE as a
// stream to the bus NAME, without ending the stream, and kills itself with
// SIGKILL, as a writer killed in mid-stream dies.
func streamDieMain() {
	data, err := os.ReadFile(os.Args[2])
	var bus *shmbus.Bus
	if err == nil {
		bus, err = shmbus.Open(os.Args[1], nil)
	}
	if err == nil {
		var p *shmbus.Producer
		if p, err = bus.NewProducer(); err == nil {
			w := shmbus.NewStreamWriter(context.Background(), p, 0)
			if _, err = w.Write(data); err == nil {
				err = w.Flush()
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamdie:", err)
		os.Exit(1)
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}

// streamHeadMain is the program "streamhead NAME N": it reads the first N
// bytes of the stream on the bus NAME to stdout and exits, as
// 'shmbus recv --stream NAME | head -c N' does.
func streamHeadMain() {
	n, _ := strconv.Atoi(os.Args[2])
	bus, err := shmbus.Open(os.Args[1], nil)
	if err == nil {
		var c *shmbus.Consumer
		if c, err = bus.NewConsumer(); err == nil {
			_, err = io.CopyN(os.Stdout, shmbus.NewStreamReader(context.Background(), c), int64(n))
		}
		bus.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamhead:", err)
		os.Exit(1)
	}
}

// takeDieMain is the program "takedie NAME COUNT": it receives COUNT
// messages from the bus NAME as a consumer (too few for the consumer to add
// them to the shared counters) and kills itself with SIGKILL, as a consumer
// killed in mid-flight dies.
func takeDieMain() {
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		os.Exit(2)
	}
	bus, err := shmbus.Open(os.Args[1], nil)
	if err == nil {
		var c *shmbus.Consumer
		if c, err = bus.NewConsumer(); err == nil {
			buf := make([]byte, bus.MaxMessage())
			for i := 0; i < n && err == nil; i++ {
				_, _, err = c.TryReceive(buf)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "takedie:", err)
		os.Exit(1)
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}

func TestMain(m *testing.M) {
	// The peers of "shmbus bench" are this test binary started again.
	if handled, err := bench.ChildMain(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, errorLine(err))
			os.Exit(exitFailure)
		}
		os.Exit(exitOK)
	}
	testscript.Main(m, programs)
}

// asUserBin holds copies of the programs that other users may run (asuser).
var asUserBin string

func TestScripts(t *testing.T) {
	if os.Geteuid() == 0 {
		// Copied before any script runs: a copy made while other scripts
		// fork would fail to execute (ETXTBSY).
		dir, err := os.MkdirTemp("", "shmbus-asuser")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		for name := range programs {
			if err := copyFile(self, filepath.Join(dir, name), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		asUserBin = dir
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// Every script has its own bus directory; whatever a failing
			// script leaves there is removed through the library, so that
			// sem-mode buses take their semaphore sets with them.
			shm := filepath.Join(env.WorkDir, "shm")
			if err := os.MkdirAll(shm, 0o777); err != nil {
				return err
			}
			if err := os.Chmod(shm, 0o1777); err != nil {
				return err
			}
			env.Setenv("SHMBUS_DIR", shm)
			// Race-enabled programs sleep a second at exit by default.
			if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
				env.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=0"))
			}
			env.Defer(func() {
				names, _ := shmbus.List(shm)
				for _, n := range names {
					shmbus.Remove(shm, n)
				}
				boards, _ := shmbus.ListBoards(shm)
				for _, n := range boards {
					shmbus.RemoveBoard(shm, n)
				}
			})
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			case "tmpfs":
				return canMountTmpfs(), nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"asuser":     cmdAsUser,
			"randfile":   cmdRandFile,
			"poke":       cmdPoke,
			"waitpeer":   cmdWaitPeer,
			"waitempty":  cmdWaitEmpty,
			"jsonvalid":  cmdJSONValid,
			"trimnl":     cmdTrimNL,
			"tmpfs":      cmdTmpfs,
			"waitlane":   cmdWaitLane,
			"waitfile":   cmdWaitFile,
			"waitwatch":  cmdWaitWatch,
			"natsserver": cmdNatsServer,
		},
	})
}

// exitcodeMain is the program "exitcode WANT PROGRAM ARGS...": it runs
// PROGRAM with its own stdin and stdout, forwards SIGINT and SIGTERM to it,
// and succeeds if PROGRAM exits with status WANT and, when WANT is not 0,
// wrote exactly one line on stderr, starting "shmbus: ". A WANT written
// "+130" lets progress lines come before that last line.
func exitcodeMain() {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "exitcode: "+format+"\n", args...)
		os.Exit(1)
	}
	if len(os.Args) < 3 {
		fail("usage: exitcode WANT PROGRAM [ARGS...]")
	}
	progress := strings.HasPrefix(os.Args[1], "+")
	want, err := strconv.Atoi(strings.TrimPrefix(os.Args[1], "+"))
	if err != nil {
		fail("bad exit status %q", os.Args[1])
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, unix.SIGTERM)
	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, &stderr
	if err := cmd.Start(); err != nil {
		fail("%v", err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	os.Stderr.Write(stderr.Bytes())
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		fail("%v", err)
	}
	got := cmd.ProcessState.ExitCode()
	if got != want {
		fail("%s exited with status %d (%v), want %d", os.Args[2], got, cmd.ProcessState, want)
	}
	if want != 0 {
		s := stderr.String()
		if i := strings.LastIndex(strings.TrimSuffix(s, "\n"), "\n"); progress && i >= 0 {
			s = s[i+1:]
		}
		if !strings.HasPrefix(s, "shmbus: ") || !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
			fail("stderr is not one line starting \"shmbus: \": %q", s)
		}
	}
}

// cmdAsUser is "asuser UID PROGRAM ARGS...": it runs one of the scripts'
// programs as the user UID (and group UID). Needs root.
func cmdAsUser(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: asuser UID PROGRAM [ARGS...]")
	}
	uid, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		ts.Fatalf("bad uid %q", args[0])
	}
	if os.Geteuid() != 0 {
		ts.Fatalf("asuser needs root (guard the script with [!root] skip)")
	}
	if asUserBin == "" {
		ts.Fatalf("asuser: programs not installed")
	}
	bin := asUserBin
	// The user must reach the bus directory: let others through the
	// directories above it (the test's private temporary directories).
	work := ts.Getenv("WORK")
	for _, d := range []string{work, filepath.Dir(work)} {
		fi, err := os.Stat(d)
		ts.Check(err)
		ts.Check(os.Chmod(d, fi.Mode().Perm()|0o011))
	}
	cmd := exec.Command(filepath.Join(bin, args[1]), args[2:]...)
	cmd.Dir = work
	cmd.Env = []string{
		"PATH=" + bin + ":/usr/bin:/bin",
		"HOME=/",
		"SHMBUS_DIR=" + ts.Getenv("SHMBUS_DIR"),
		"GORACE=" + ts.Getenv("GORACE"),
	}
	cmd.Stdout, cmd.Stderr = ts.Stdout(), ts.Stderr()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	err = cmd.Run()
	if err != nil && !neg {
		ts.Fatalf("asuser %s: %v", args[1], err)
	}
	if err == nil && neg {
		ts.Fatalf("asuser %s: unexpected success", args[1])
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cmdRandFile is "randfile FILE SIZE": SIZE pseudo-random bytes.
func cmdRandFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: randfile FILE SIZE")
	}
	n, err := parseSize(args[1])
	ts.Check(err)
	r := rand.NewChaCha8([32]byte{'s', 'h', 'm', 'b', 'u', 's'})
	b := make([]byte, n)
	r.Read(b)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// canMountTmpfs is the condition [tmpfs]: this process can mount (and
// unmount) a tmpfs.
var canMountTmpfs = sync.OnceValue(func() bool {
	dir, err := os.MkdirTemp("", "shmbus-tmpfs")
	if err != nil {
		return false
	}
	defer os.Remove(dir)
	if exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).Run() != nil {
		return false
	}
	return exec.Command("umount", dir).Run() == nil
})

// cmdTmpfs is "tmpfs DIR SIZE": mount a tmpfs of SIZE (mount's syntax,
// 2m) on the new directory DIR, unmounted when the script ends. Scripts
// check [tmpfs] first.
func cmdTmpfs(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: tmpfs DIR SIZE")
	}
	dir := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(dir, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+args[1], "tmpfs", dir).CombinedOutput(); err != nil {
		ts.Fatalf("mount a tmpfs on %s: %v: %s", dir, err, out)
	}
	ts.Defer(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			ts.Logf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// cmdPoke is "poke FILE OFFSET HEX": overwrite bytes of FILE at OFFSET.
func cmdPoke(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || neg {
		ts.Fatalf("usage: poke FILE OFFSET HEX")
	}
	off, err := strconv.ParseInt(args[1], 0, 64)
	ts.Check(err)
	b, err := hex.DecodeString(args[2])
	ts.Check(err)
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY, 0)
	ts.Check(err)
	_, err = f.WriteAt(b, off)
	ts.Check(err)
	ts.Check(f.Close())
}

// pollBus opens the bus NAME of the script until ok says its stats are
// what the script waits for (10 s at most).
func pollBus(ts *testscript.TestScript, name, what string, ok func(shmbus.Stats) bool) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		bus, err := shmbus.Open(name, &shmbus.OpenOptions{Dir: ts.Getenv("SHMBUS_DIR")})
		if err == nil {
			s, err := bus.Stats()
			bus.Close()
			if err == nil && ok(s) {
				return
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("bus %s: no %s after 10s (last error %v)", name, what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdWaitPeer is "waitpeer NAME ROLE": wait until a live peer holds ROLE.
func cmdWaitPeer(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: waitpeer NAME producer|consumer")
	}
	pollBus(ts, args[0], args[1], func(s shmbus.Stats) bool {
		for _, p := range s.Peers {
			if p.Alive && p.Role == args[1] {
				return true
			}
		}
		return false
	})
}

// cmdWaitEmpty is "waitempty NAME": wait until no message waits on the bus.
func cmdWaitEmpty(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: waitempty NAME")
	}
	pollBus(ts, args[0], "empty lanes", func(s shmbus.Stats) bool { return s.Depth() == 0 })
}

// cmdWaitLane is "waitlane NAME PRIO": wait until ring bytes are in use in
// lane PRIO.
func cmdWaitLane(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 || neg {
		ts.Fatalf("usage: waitlane NAME PRIO")
	}
	prio, err := strconv.Atoi(args[1])
	ts.Check(err)
	pollBus(ts, args[0], "bytes in lane "+args[1], func(s shmbus.Stats) bool {
		return prio < len(s.Lanes) && s.Lanes[prio].Used() > 0
	})
}

// cmdJSONValid is "jsonvalid [-lines] FILE": FILE (or stdout) is one JSON
// value, or with -lines, one JSON value per line.
func cmdJSONValid(ts *testscript.TestScript, neg bool, args []string) {
	lines := len(args) > 0 && args[0] == "-lines"
	if lines {
		args = args[1:]
	}
	if len(args) != 1 {
		ts.Fatalf("usage: jsonvalid [-lines] FILE")
	}
	data := ts.ReadFile(args[0])
	var docs []string
	if lines {
		docs = strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	} else {
		docs = []string{data}
	}
	var bad error
	for i, d := range docs {
		if !json.Valid([]byte(d)) {
			bad = fmt.Errorf("%s: document %d is not valid JSON: %q", args[0], i+1, d)
			break
		}
	}
	if bad != nil && !neg {
		ts.Fatalf("%v", bad)
	}
	if bad == nil && neg {
		ts.Fatalf("%s is valid JSON", args[0])
	}
}

// cmdTrimNL is "trimnl FILE": remove the newline at the end of FILE (txtar
// files always end with one).
func cmdTrimNL(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: trimnl FILE")
	}
	name := ts.MkAbs(args[0])
	b, err := os.ReadFile(name)
	ts.Check(err)
	ts.Check(os.WriteFile(name, bytes.TrimSuffix(b, []byte("\n")), 0o644))
}

// cmdWaitFile is "waitfile GLOB": wait until a file matches GLOB (10 s at
// most); "! waitfile GLOB" waits until none does.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: waitfile GLOB")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := filepath.Glob(ts.MkAbs(args[0]))
		ts.Check(err)
		if (len(m) > 0) != neg {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile %s: still %d match(es) after 10s", args[0], len(m))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdWaitWatch is "waitwatch BOARD": wait until a watcher of BOARD has
// gone to sleep on its doorbell at least once.
func cmdWaitWatch(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || neg {
		ts.Fatalf("usage: waitwatch BOARD")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := shmbus.OpenBoard(args[0], &shmbus.OpenOptions{Dir: ts.Getenv("SHMBUS_DIR")})
		if err == nil {
			s, err := b.Stats()
			b.Close()
			if err == nil && s.Sleeps > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitwatch %s: no watcher asleep after 30s", args[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
