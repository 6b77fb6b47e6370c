//go:build linux

package daemon

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// buildShmbus builds cmd/shmbus, without the race detector even when this
// test binary has it: TestMemoryAttack measures the memory of the daemon
// as it ships, which the race detector's shadow memory would multiply.
func buildShmbus(t *testing.T) string {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		gocmd = "/usr/local/go/bin/go" // a standard installation
	}
	bin := filepath.Join(t.TempDir(), "shmbus")
	out, err := exec.Command(gocmd, "build", "-o", bin, "github.com/shmbus/shmbus/cmd/shmbus").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/shmbus: %v\n%s", err, out)
	}
	return bin
}

// procStatus returns a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+) kB$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// metric returns the value of the sample named exactly series (name and
// labels as the text format writes them) from a scrape of url.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in the metrics", series)
	return 0
}

// connOverhead is what a connection may cost the daemon outside its
// memory budget: two goroutines' stacks, a 16 KiB read and a 16 KiB write
// buffer, the runtime's bookkeeping; generous.
const connOverhead = 96 << 10

// TestMemoryAttack is the attack of issue 11 against a real daemon
// process: connections that send most of a huge frame and stop, and many
// that send only a header declaring one. The daemon's peak resident memory
// grows by no more than the runtime memory limit its budget sets, plus a
// per-connection overhead; a good client is served throughout; the frames
// over the budget are refused with OVERLOADED; and a large SEND within
// the budget goes through once the attack ends.
func TestMemoryAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/shmbus and pushes 768 MiB through a socket")
	}
	const (
		budget   = 48 << 20
		payload  = 32 << 20
		hogs     = 24
		headers  = 200
		nowhere  = 4096 // what the hogs leave unsent of their frames
		perUser  = hogs + headers + 20
		maxConns = perUser + 10
	)
	bin := buildShmbus(t)
	base := t.TempDir()
	sock, dir := filepath.Join(base, "d.sock"), filepath.Join(base, "buses")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "daemon", "--socket", sock, "--dir", dir, "--metrics", "127.0.0.1:0",
		"--max-memory", strconv.Itoa(budget), "--max-payload", strconv.Itoa(payload),
		"--max-conns", strconv.Itoa(maxConns), "--max-conns-per-uid", strconv.Itoa(perUser),
		"--frame-timeout", "2m")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	logs := bufio.NewScanner(stderr)
	var metricsURL string
	for metricsURL == "" && logs.Scan() {
		if _, after, ok := strings.Cut(logs.Text(), "metrics on "); ok {
			metricsURL = after
		}
	}
	go io.Copy(io.Discard, stderr)
	waitFor(t, "the daemon's socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	pid := cmd.Process.Pid
	before := procStatus(t, pid, "VmRSS")

	hello := AppendFrame(nil, TypeHello, 1, Hello{Version: 1}.encode())
	header := func(n int) []byte {
		h := binary.LittleEndian.AppendUint32(append([]byte(nil), hello...), uint32(8+n))
		h = binary.LittleEndian.AppendUint16(h, TypeSend)
		h = binary.LittleEndian.AppendUint16(h, 0)
		return binary.LittleEndian.AppendUint32(h, 2)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, hogs+headers)
	body := make([]byte, payload-nowhere)
	for i := 0; i < hogs+headers; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func(hog bool) {
			defer wg.Done()
			out := header(payload)
			if _, err := c.Write(out); err != nil {
				errs <- err
				return
			}
			if hog {
				c.SetWriteDeadline(time.Now().Add(2 * time.Minute))
				if _, err := c.Write(body); err != nil {
					errs <- fmt.Errorf("hog: %w", err)
				}
			}
		}(i < hogs)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// A good client is served in the middle of it.
	start := time.Now()
	good, err := Dial(sock, "good")
	if err != nil {
		t.Fatalf("a good client during the attack: %v", err)
	}
	defer good.Close()
	if _, _, err := good.Create(Create{Name: "good", MaxMessage: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	defer good.Remove("good")
	if err := good.Send("good", 0, []byte("ping"), false, 10*time.Second); err != nil {
		t.Fatalf("send during the attack: %v", err)
	}
	if _, got, err := good.Recv("good", false, 10*time.Second); err != nil || string(got) != "ping" {
		t.Fatalf("recv during the attack: %q, %v", got, err)
	}
	t.Logf("a good client's HELLO, CREATE, SEND and RECV during the attack took %v", time.Since(start))

	// The daemon sets the Go runtime's soft memory limit from its budget
	// (RuntimeMemoryLimit): what the runtime holds, garbage included,
	// stays under it, and the connections cost a little outside it.
	peak := procStatus(t, pid, "VmHWM")
	bound := before + RuntimeMemoryLimit(budget) + int64(len(conns)+1)*connOverhead
	t.Logf("daemon RSS: %d MiB before, peak %d MiB during the attack; bound %d MiB (budget %d MiB, %d connections)",
		before>>20, peak>>20, bound>>20, budget>>20, len(conns)+1)
	if peak > bound {
		t.Errorf("the daemon's peak RSS %d MiB is over the bound %d MiB", peak>>20, bound>>20)
	}
	if held := metric(t, metricsURL, "shmbus_daemon_buffered_bytes"); held > budget {
		t.Errorf("%v bytes of frame buffers held, over the budget of %d", held, budget)
	}
	if n := metric(t, metricsURL, "shmbus_daemon_memory_refusals_total"); n < 1 {
		t.Errorf("no SEND was refused with OVERLOADED, though %d hogs sent %d MiB each into a budget of %d MiB",
			hogs, (payload-nowhere)>>20, budget>>20)
	}

	// The attack ends; its buffers are given back, and a large message
	// within the budget goes through both ways.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitFor(t, "the attack's buffers to be given back", func() bool {
		return metric(t, metricsURL, "shmbus_daemon_buffered_bytes") <= smallMessage+5
	})
	// It is larger than the lane: it is received while it is sent, so the
	// SEND's and the RECV's buffers are held at once, both by this user:
	// together they must fit into one user's share of the budget (half).
	big := bytes.Repeat([]byte("large legitimate message "), (12<<20)/25)
	good.Release("good")
	reader, err := Dial(sock, "reader")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	received := make(chan error, 1)
	go func() {
		_, got, err := reader.Recv("good", false, 30*time.Second)
		if err == nil && !bytes.Equal(got, big) {
			err = fmt.Errorf("received %d bytes, not the %d sent", len(got), len(big))
		}
		received <- err
	}()
	if err := good.Send("good", 0, big, false, 30*time.Second); err != nil {
		t.Fatalf("a large SEND within the budget: %v", err)
	}
	if err := <-received; err != nil {
		t.Fatalf("recv of the large message: %v", err)
	}
	reader.Close()
	if err := good.Remove("good"); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
}
