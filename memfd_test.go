//go:build linux

package shmbus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	roles["memfd-producer"] = roleMemfdProducer
	roles["memfd-shrinker"] = roleMemfdShrinker
	roles["hold-producer"] = roleHoldProducer
}

// roleMemfdProducer attaches to the memfd bus inherited as descriptor 3 and
// sends SHMBUS_N test messages of up to SHMBUS_MAX bytes as producer 1, at
// its highest priority.
func roleMemfdProducer() error {
	f := os.NewFile(3, "bus")
	bus, err := OpenFile(os.Getenv("SHMBUS_NAME"), f, nil)
	f.Close()
	if err != nil {
		return err
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	defer p.Close()
	buf := make([]byte, envInt("SHMBUS_MAX"))
	for seq := 0; seq < envInt("SHMBUS_N"); seq++ {
		if err := p.Send(context.Background(), testMsg(buf, 1, uint32(seq), len(buf)), bus.Priorities()-1); err != nil {
			return err
		}
	}
	return nil
}

// roleMemfdShrinker tries to change the size of the inherited memfd and
// reports what the kernel said on stdout.
func roleMemfdShrinker() error {
	f := os.NewFile(3, "bus")
	shrink := f.Truncate(4096)
	grow := f.Truncate(1 << 30)
	_, err := os.Stdout.WriteString(errName(shrink) + " " + errName(grow) + "\n")
	return err
}

func errName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// roleHoldProducer opens bus SHMBUS_NAME, takes a producer, says "ready" and
// waits to be killed.
func roleHoldProducer() error {
	bus, err := Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	if _, err := bus.NewProducer(); err != nil {
		return err
	}
	os.Stdout.WriteString("ready\n")
	select {}
}

func TestMemfdBus(t *testing.T) {
	for _, wake := range []WakeMode{WakeFutex, WakeSem} {
		t.Run(wake.String(), func(t *testing.T) {
			bus, err := Create("memfd", &Options{Memfd: true, Priorities: 3, LaneCapacity: 64 << 10, Wake: wake, Mode: 0o640})
			if err != nil {
				t.Fatal(err)
			}
			defer bus.Remove()
			if !bus.Anonymous() {
				t.Error("memfd bus is not anonymous")
			}
			if _, err := os.Stat(filepath.Join(os.Getenv("SHMBUS_DIR"), "shmbus.memfd")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("memfd bus has a file in the directory: %v", err)
			}
			fi, err := bus.File().Stat()
			if err != nil || fi.Mode().Perm() != 0o640 {
				t.Errorf("memfd mode: %v, %v; want 0640", fi.Mode(), err)
			}
			seals, err := unix.FcntlInt(bus.File().Fd(), unix.F_GET_SEALS, 0)
			if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL; err != nil || seals != want {
				t.Errorf("seals %#x, %v; want %#x", seals, err, want)
			}

			// A child that inherits the descriptor sends messages larger
			// than a record (reassembled here in memfds) and small ones.
			const n, max = 300, 40 << 10
			cmd := child(t, "memfd-producer", "SHMBUS_NAME=memfd", "SHMBUS_N="+strconv.Itoa(n), "SHMBUS_MAX="+strconv.Itoa(max))
			cmd.ExtraFiles = []*os.File{bus.File()}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			c, err := bus.NewConsumer()
			if err != nil {
				t.Fatal(err)
			}
			chk := newChecker(t, max)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			buf := make([]byte, max)
			for i := 0; i < n; i++ {
				m, _, err := c.Receive(ctx, buf)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if err := chk.check(buf[:m]); err != nil {
					t.Fatal(err)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("producer: %v", err)
			}
			c.Close()

			// A process that holds the descriptor cannot change its size.
			sh := child(t, "memfd-shrinker")
			sh.ExtraFiles = []*os.File{bus.File()}
			out, err := sh.Output()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(out); got != "EPERM EPERM\n" {
				t.Errorf("truncating the sealed memfd: %q, want EPERM for both", got)
			}
		})
	}
}

func TestOpenFileRefusesReadOnly(t *testing.T) {
	bus, err := Create("rofd", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Remove()
	f, err := os.Open(bus.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := OpenFile("rofd", f, nil); !errors.Is(err, ErrPermission) {
		t.Errorf("OpenFile of a read-only descriptor: %v, want ErrPermission", err)
	}
	g, err := os.OpenFile(bus.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := OpenFile("rofd", g, nil)
	g.Close() // the bus keeps its own descriptor
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	p, err := b2.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.TrySend([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
}

func TestReleaseDead(t *testing.T) {
	bus, err := Create("reap", &Options{Producers: SingleProducer})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Remove()
	cmd := child(t, "hold-producer", "SHMBUS_NAME=reap")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	line := make([]byte, 6)
	if _, err := out.Read(line); err != nil || string(line) != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	if _, err := bus.NewProducer(); !errors.Is(err, ErrBusy) {
		t.Fatalf("second single producer while the first lives: %v, want ErrBusy", err)
	}
	if got, err := bus.ReleaseDead(); err != nil || len(got) != 0 {
		t.Fatalf("ReleaseDead with everyone alive: %v, %v", got, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	got, err := bus.ReleaseDead()
	if err != nil || len(got) != 1 || got[0].PID != cmd.Process.Pid || got[0].Role != "producer" {
		t.Fatalf("ReleaseDead after the kill: %+v, %v; want the child's producer slot", got, err)
	}
	s, err := bus.Stats()
	if err != nil || len(s.Peers) != 0 {
		t.Fatalf("peers after ReleaseDead: %+v, %v", s.Peers, err)
	}
	p, err := bus.NewProducer()
	if err != nil {
		t.Fatalf("single producer after the holder was released: %v", err)
	}
	p.Close()
}
