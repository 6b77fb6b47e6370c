package cclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmbus/shmbus"
	"github.com/shmbus/shmbus/internal/failpoint"

	"github.com/shmbus/shmbus/internal/testutil"
)

// Test messages, made and checked exactly as tools/shmbus-c.c does: a
// 20-byte little-endian header {producer, seq, size, prio, crc32(body)},
// then a body generated from (producer, seq) by xorshift64. Sizes and
// priorities are functions of (producer, seq) and the gen parameters.

const tmHeader = 20

func tmMix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func tmBody(p []byte, k, seq uint32) {
	x := tmMix(uint64(k)<<32|uint64(seq)) | 1
	var w [8]byte
	for i := 0; i < len(p); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(w[:], x)
		copy(p[i:], w[:])
	}
}

// gen says which messages a producer sends (the shmbus-c produce options).
type gen struct {
	Min, Max          int    // sizes of ordinary messages
	BigEvery, BigSize int    // every BigEvery-th message is BigSize bytes
	Prio              string // a number, "cycle" or "rand"
}

func (g gen) args() []string {
	return []string{"--min", strconv.Itoa(g.Min), "--max", strconv.Itoa(g.Max),
		"--big-every", strconv.Itoa(g.BigEvery), "--big-size", strconv.Itoa(g.BigSize), "--prio", g.Prio}
}

func (g gen) size(k, seq uint32) int {
	if g.BigEvery > 0 && int(seq)%g.BigEvery == g.BigEvery-1 {
		return g.BigSize
	}
	return g.Min + int(tmMix(uint64(k)<<32|uint64(seq))%uint64(g.Max-g.Min+1))
}

func (g gen) prio(k, seq uint32, lanes int) int {
	switch g.Prio {
	case "cycle":
		return int(seq) % lanes
	case "rand":
		return int((tmMix(uint64(k)<<32|uint64(seq)) >> 32) % uint64(lanes))
	}
	n, _ := strconv.Atoi(g.Prio)
	return n
}

// msg returns message seq of producer k, in buf if it is large enough.
func (g gen) msg(buf []byte, k, seq uint32, lanes int) ([]byte, int) {
	n, prio := g.size(k, seq), g.prio(k, seq, lanes)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	m := buf[:n]
	tmBody(m[tmHeader:], k, seq)
	binary.LittleEndian.PutUint32(m[0:], k)
	binary.LittleEndian.PutUint32(m[4:], seq)
	binary.LittleEndian.PutUint32(m[8:], uint32(n))
	binary.LittleEndian.PutUint32(m[12:], uint32(prio))
	binary.LittleEndian.PutUint32(m[16:], crc32.ChecksumIEEE(m[tmHeader:]))
	return m, prio
}

// checker verifies received test messages: every byte, the priority, per
// (producer, priority) increasing sequence numbers, no duplicates.
type checker struct {
	seen  map[uint32]map[uint32]bool
	last  map[[2]uint32]int64
	prios []int // priority of every message, in arrival order
	msgs  int
	bytes int
	buf   []byte
}

func newChecker() *checker {
	return &checker{seen: map[uint32]map[uint32]bool{}, last: map[[2]uint32]int64{}}
}

func (c *checker) check(m []byte, prio int) error {
	if len(m) < tmHeader {
		return fmt.Errorf("%d-byte message, shorter than the header", len(m))
	}
	k, seq := binary.LittleEndian.Uint32(m), binary.LittleEndian.Uint32(m[4:])
	size, p, crc := binary.LittleEndian.Uint32(m[8:]), binary.LittleEndian.Uint32(m[12:]), binary.LittleEndian.Uint32(m[16:])
	if int(size) != len(m) {
		return fmt.Errorf("producer %d seq %d: size field %d, message has %d bytes", k, seq, size, len(m))
	}
	if int(p) != prio {
		return fmt.Errorf("producer %d seq %d: sent at priority %d, received at %d", k, seq, p, prio)
	}
	if crc32.ChecksumIEEE(m[tmHeader:]) != crc {
		return fmt.Errorf("producer %d seq %d: CRC mismatch", k, seq)
	}
	if cap(c.buf) < len(m) {
		c.buf = make([]byte, len(m))
	}
	body := c.buf[:len(m)-tmHeader]
	tmBody(body, k, seq)
	if !bytes.Equal(body, m[tmHeader:]) {
		return fmt.Errorf("producer %d seq %d: body differs from the generator's", k, seq)
	}
	s := c.seen[k]
	if s == nil {
		s = map[uint32]bool{}
		c.seen[k] = s
	}
	if s[seq] {
		return fmt.Errorf("producer %d seq %d received twice", k, seq)
	}
	s[seq] = true
	key := [2]uint32{k, p}
	if last, ok := c.last[key]; ok && int64(seq) <= last {
		return fmt.Errorf("producer %d priority %d: seq %d after %d", k, p, seq, last)
	}
	c.last[key] = int64(seq)
	c.prios = append(c.prios, prio)
	c.msgs++
	c.bytes += len(m)
	return nil
}

// complete checks that producer k's messages 0..n-1 all arrived (and no
// others).
func (c *checker) complete(k uint32, n int) error {
	s := c.seen[k]
	if len(s) != n {
		return fmt.Errorf("producer %d: %d messages received, want %d", k, len(s), n)
	}
	for seq := 0; seq < n; seq++ {
		if !s[uint32(seq)] {
			return fmt.Errorf("producer %d: seq %d missing", k, seq)
		}
	}
	return nil
}

// goProduce sends n test messages as producer k on bus (Send, or TrySend
// if try).
func goProduce(ctx context.Context, bus *shmbus.Bus, k uint32, n int, g gen, try bool) error {
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	defer p.Close()
	var buf []byte
	for seq := 0; seq < n; seq++ {
		m, prio := g.msg(buf, k, uint32(seq), bus.Priorities())
		buf = m
		if try {
			err = p.TrySend(m, prio)
		} else {
			err = p.Send(ctx, m, prio)
		}
		if err != nil {
			return fmt.Errorf("go producer %d: send %d: %w", k, seq, err)
		}
	}
	return p.Close()
}

// goConsume receives n messages on bus into ck, each within perMsg.
func goConsume(bus *shmbus.Bus, n int, ck *checker, perMsg time.Duration) error {
	c, err := bus.NewConsumer()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<16)
	for i := 0; i < n; {
		ctx, cancel := context.WithTimeout(context.Background(), perMsg)
		m, prio, err := c.Receive(ctx, buf)
		cancel()
		var short *shmbus.ShortBufferError
		if asShort(err, &short) {
			buf = make([]byte, short.Need)
			continue
		}
		if err != nil {
			return fmt.Errorf("go consumer: after %d of %d messages: %w", i, n, err)
		}
		if err := ck.check(buf[:m], prio); err != nil {
			return fmt.Errorf("go consumer: message %d: %w", i, err)
		}
		i++
	}
	return c.Close()
}

// runRole runs a child role of the test binary: "go-producer-die" sends
// SHMBUS_N messages as producer SHMBUS_K and SIGKILLs itself right after
// claiming the space of message SHMBUS_DIE_AT.
func runRole(role string) error {
	if role != "go-producer-die" {
		return fmt.Errorf("%w %q", testutil.ErrUnknownRole, role)
	}
	bus, err := shmbus.Open(os.Getenv("SHMBUS_NAME"), nil)
	if err != nil {
		return err
	}
	k, _ := strconv.Atoi(os.Getenv("SHMBUS_K"))
	n, _ := strconv.Atoi(os.Getenv("SHMBUS_N"))
	dieAt, _ := strconv.Atoi(os.Getenv("SHMBUS_DIE_AT"))
	g := gen{Min: 20, Max: 300, Prio: "0"}
	p, err := bus.NewProducer()
	if err != nil {
		return err
	}
	claims := 0
	failpoint.AfterClaim.Set(func() {
		if claims == dieAt {
			unix.Kill(os.Getpid(), unix.SIGKILL)
			time.Sleep(time.Hour)
		}
		claims++
	})
	var buf []byte
	for seq := 0; seq < n; seq++ {
		m, prio := g.msg(buf, uint32(k), uint32(seq), bus.Priorities())
		buf = m
		if err := p.Send(context.Background(), m, prio); err != nil {
			return err
		}
	}
	return fmt.Errorf("sent everything without dying")
}
