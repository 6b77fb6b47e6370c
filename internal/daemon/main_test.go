//go:build linux

package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shmbus/shmbus/internal/testutil"
)

// The test binary doubles as the client processes of the tests: TestMain
// runs the role named by DAEMON_TEST_ROLE instead of the tests.

const roleEnv = "DAEMON_TEST_ROLE"

var roles = map[string]func() error{}

func TestMain(m *testing.M) {
	testutil.RunRole(roleEnv, testutil.Table(roles))
	os.Exit(m.Run())
}

// testDaemon is a server on a socket in a temporary directory, with its
// buses in another.
type testDaemon struct {
	srv    *Server
	socket string
	dir    string
	logs   chan string
	done   chan error
	cancel context.CancelFunc
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	return startDaemonWith(t, nil)
}

// startDaemonWith is startDaemon with configure applied to its Config.
func startDaemonWith(t *testing.T, configure func(*Config)) *testDaemon {
	t.Helper()
	base := t.TempDir()
	// Children running as another user must reach the socket.
	os.Chmod(base, 0o755)
	os.Chmod(filepath.Dir(base), 0o755)
	d := &testDaemon{socket: filepath.Join(base, "d.sock"), dir: filepath.Join(base, "buses"),
		logs: make(chan string, 1000), done: make(chan error, 1)}
	if err := os.Mkdir(d.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(d.dir, 0o1777)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d.socket, 0o666)
	cfg := Config{Dir: d.dir, PollInterval: 20 * time.Millisecond, Version: "test",
		Logf: func(format string, args ...any) {
			select {
			case d.logs <- fmt.Sprintf(format, args...):
			default:
			}
		}}
	if configure != nil {
		configure(&cfg)
	}
	d.srv = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- d.srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		d.stop(t)
		if left, _ := filepath.Glob(filepath.Join(d.dir, "shmbus.*")); len(left) > 0 {
			t.Errorf("buses left behind: %v", left)
		}
	})
	return d
}

func (d *testDaemon) stop(t *testing.T) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("Serve did not return after shutdown")
	}
}

func (d *testDaemon) dial(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(d.socket, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// child starts the test binary in role with env added.
func child(t *testing.T, role string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	t.Cleanup(func() {
		if cmd.Process != nil {
			cmd.Process.Kill()
		}
	})
	return cmd
}
