package shmbus

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shmbus/shmbus/internal/testutil"
)

// The test binary doubles as the child processes of cross-process tests:
// TestMain runs the role named by SHMBUS_TEST_ROLE instead of the tests.

const roleEnv = "SHMBUS_TEST_ROLE"

var roles = map[string]func() error{}

// Semaphore sets created by this test process, checked for leaks at exit.
var (
	semMu      sync.Mutex
	semCreated []int
)

func TestMain(m *testing.M) {
	testutil.RunRole(roleEnv, testutil.Table(roles))
	onSemCreate = func(id int) {
		semMu.Lock()
		semCreated = append(semCreated, id)
		semMu.Unlock()
	}
	dir, err := os.MkdirTemp("", "shmbus-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("SHMBUS_DIR", dir)
	before := testutil.ShmFiles()
	code := m.Run()
	if code == 0 {
		if leaks := leakedSems(); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: semaphore sets left behind: %v\n", leaks)
			code = 1
		}
		if left, _ := os.ReadDir(dir); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: segment files left behind in %s: %d\n", dir, len(left))
			code = 1
		}
		if after := testutil.ShmFiles(); len(after) > len(before) {
			fmt.Fprintf(os.Stderr, "FAIL: /dev/shm gained shmbus files: %v\n", after)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// leakedSems lists the sets this process created that still exist.
func leakedSems() []int {
	semMu.Lock()
	defer semMu.Unlock()
	return testutil.LiveSems(semCreated)
}

// child starts the test binary in role with env (KEY=VALUE) added.
func child(t *testing.T, role string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	return cmd
}

func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// Test messages. Message seq of producer k has a size and content that
// are functions of (k, seq), so the consumer knows exactly what must come
// next from each producer. Each carries its header, or as much of it as
// fits: producer id (1 byte), sequence number, CRC-32 of the body, size.
const testHeader = 13

var pool = func() []byte {
	b := make([]byte, 1<<17)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}()

func mix(k, seq uint32) uint64 {
	x := uint64(k)<<32 | uint64(seq)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	return x ^ x>>33
}

// testSize is the size of message seq of producer k: a quarter are 1-16
// bytes, the rest log-uniform up to max.
func testSize(k, seq uint32, max int) int {
	h := mix(k, seq)
	if h%4 == 0 {
		return 1 + int(h>>8%16)
	}
	bits := 1 + int(h>>8%uint64(bitsLen(max)))
	n := 1 + int(h>>16%(uint64(1)<<bits))
	return min(n, max)
}

func bitsLen(n int) int {
	b := 0
	for n > 0 {
		b++
		n >>= 1
	}
	return b
}

// testMsg fills buf with message seq of producer k and returns it.
func testMsg(buf []byte, k, seq uint32, max int) []byte {
	n := testSize(k, seq, max)
	var hdr [testHeader]byte
	body := buf[:0]
	if n > testHeader {
		off := int(mix(seq, k) % uint64(len(pool)-n))
		body = pool[off : off+n-testHeader]
	}
	hdr[0] = byte(k)
	binary.LittleEndian.PutUint32(hdr[1:], seq)
	binary.LittleEndian.PutUint32(hdr[5:], crc32.ChecksumIEEE(body))
	binary.LittleEndian.PutUint32(hdr[9:], uint32(n))
	m := buf[:n]
	c := copy(m, hdr[:])
	copy(m[c:], body)
	return m
}

// msgChecker verifies messages from several producers: none lost,
// duplicated, reordered within a producer, or corrupted.
type msgChecker struct {
	t    testing.TB
	max  int
	next map[uint32]uint32
	buf  []byte
}

func newChecker(t testing.TB, max int) *msgChecker {
	return &msgChecker{t: t, max: max, next: map[uint32]uint32{}, buf: make([]byte, max)}
}

func (c *msgChecker) check(got []byte) error {
	if len(got) == 0 {
		return fmt.Errorf("empty message")
	}
	k := uint32(got[0])
	seq := c.next[k]
	want := testMsg(c.buf, k, seq, c.max)
	if !bytes.Equal(got, want) {
		gs := uint32(0)
		if len(got) >= 5 {
			gs = binary.LittleEndian.Uint32(got[1:])
		}
		return fmt.Errorf("producer %d: expected seq %d (%d bytes), got %d bytes claiming seq %d", k, seq, len(want), len(got), gs)
	}
	c.next[k] = seq + 1
	return nil
}

func waitTimeout(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("child %v timed out after %v", cmd.Args, d)
	}
}
