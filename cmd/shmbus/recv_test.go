package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shmbus/shmbus"
)

// waiting is the number of messages in the lanes of bus.
func waiting(t *testing.T, bus *shmbus.Bus) uint64 {
	t.Helper()
	d, err := bus.Waiting()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, l := range d {
		n += l.Messages
	}
	return n
}

// A recv killed with SIGKILL while it writes to a slow reader loses no
// message: each is in what it wrote, or still on the bus (or, for the
// batch it was writing, both).
func TestRecvKilledLosesNothing(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) { testRecvKilled(t, format) })
	}
}

func testRecvKilled(t *testing.T, format string) {
	dir := t.TempDir()
	name := "killed"
	bus, err := shmbus.Create(name, &shmbus.Options{Dir: dir, LaneCapacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	p, err := bus.NewProducer()
	if err != nil {
		t.Fatal(err)
	}
	const sent = 200
	pad := strings.Repeat("x", 2000)
	for i := range sent {
		if err := p.TrySend(fmt.Appendf(nil, "%04d:%s", i, pad), 0); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()

	exe, err := exec.LookPath("shmbus") // this test binary, as testscript installs it
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "--dir", dir, "recv", name, "-n", "0", "--format", format)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer cmd.Process.Kill()

	// Read a little, then stop: recv fills the pipe and blocks writing.
	var out bytes.Buffer
	if _, err := io.CopyN(&out, pr, 10<<10); err != nil {
		t.Fatal(err)
	}
	for last, stable := waiting(t, bus), 0; stable < 3; {
		time.Sleep(50 * time.Millisecond)
		if now := waiting(t, bus); now == last {
			stable++
		} else {
			last, stable = now, 0
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	io.Copy(&out, pr) // what reached the pipe before the kill
	pr.Close()

	seen := map[int]int{}
	written := 0
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if format == "json" {
			var m jsonMessage
			if json.Unmarshal([]byte(line), &m) != nil {
				continue // the last line, cut short by the kill
			}
			line = string(m.Data)
		}
		if len(line) != 2005 {
			continue // the last line, cut short
		}
		i, err := strconv.Atoi(line[:4])
		if err != nil {
			t.Fatalf("output line %q", line[:min(len(line), 20)])
		}
		seen[i]++
		written++
	}
	// The rest is still on the bus.
	c, err := bus.NewConsumer()
	if err != nil {
		t.Fatal(err) // the killed recv's role is taken over
	}
	defer c.Close()
	left := 0
	buf := make([]byte, 4096)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		n, _, err := c.Receive(ctx, buf)
		cancel()
		if err != nil {
			break
		}
		i, _ := strconv.Atoi(string(buf[:4]))
		if n != 2005 {
			t.Fatalf("message of %d bytes on the bus", n)
		}
		seen[i]++
		left++
	}
	if written == 0 || left == 0 {
		t.Fatalf("the kill did not land mid-stream: %d written, %d left on the bus", written, left)
	}
	dups := 0
	for i := range sent {
		switch seen[i] {
		case 0:
			t.Errorf("message %d lost", i)
		case 1:
		default:
			dups++
		}
	}
	t.Logf("%d written before the kill, %d left on the bus, %d both", written, left, dups)
	if dups > 64<<10/2005+1 {
		t.Errorf("%d messages both written and left: more than one batch (64 KiB)", dups)
	}
}

// 'shmbus recv --stream pipe | head -c 100' with an endless writer: recv
// exits 141 when head closes the pipe, and the sender then fails with a
// broken pipe (141) instead of waiting for room for ever.
func TestStreamBrokenPipe(t *testing.T) {
	dir := t.TempDir()
	bus, err := shmbus.Create("pipe", &shmbus.Options{Dir: dir, LaneCapacity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	bus.Close()
	exe, err := exec.LookPath("shmbus")
	if err != nil {
		t.Fatal(err)
	}
	recv := exec.Command(exe, "--dir", dir, "recv", "--stream", "pipe")
	head, recvOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var recvErr, sendErr bytes.Buffer
	recv.Stdout, recv.Stderr = recvOut, &recvErr
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	recvOut.Close()
	defer recv.Process.Kill()

	send := exec.Command(exe, "--dir", dir, "send", "--stream", "pipe")
	send.Stderr = &sendErr
	in, err := send.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	defer send.Process.Kill()
	go func() { // cat /dev/zero
		chunk := make([]byte, 32<<10)
		for {
			if _, err := in.Write(chunk); err != nil {
				return
			}
		}
	}()

	if _, err := io.ReadFull(head, make([]byte, 100)); err != nil { // head -c 100
		t.Fatal(err)
	}
	head.Close()
	// Both must end by themselves; a minute later they are killed, and
	// fail below.
	watchdog := time.AfterFunc(time.Minute, func() { recv.Process.Kill(); send.Process.Kill() })
	defer watchdog.Stop()
	for _, p := range []struct {
		name   string
		cmd    *exec.Cmd
		stderr *bytes.Buffer
		want   string
	}{
		{"recv", recv, &recvErr, "broken pipe"},
		{"send", send, &sendErr, "stream reader gone (broken pipe)"},
	} {
		p.cmd.Wait()
		if code := p.cmd.ProcessState.ExitCode(); code != exitPipe || !strings.Contains(p.stderr.String(), p.want) {
			t.Errorf("%s: exit status %d (%v), stderr %q; want %d and %q", p.name, code, p.cmd.ProcessState, p.stderr, exitPipe, p.want)
		}
	}
}
