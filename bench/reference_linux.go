package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"time"

	"golang.org/x/sys/unix"
)

// Two things a run can add around the methods: the memcpy reference (how
// fast one core copies memory that is not in any cache) and busy
// processes that load the machine while the methods are measured.

// memcpyChunk is the bytes of one copy call of the memcpy reference: a
// large message's worth.
const memcpyChunk = 1 << 20

// memcpyBuffer is the size of each of the reference's two buffers for a
// last-level cache of cache bytes: twice the cache, so that every byte
// read has been evicted since it was last touched, at least 64 MiB (for
// machines that report no cache) and at most 512 MiB. The cap matters on
// virtual machines that report the host's whole last-level cache as one
// (480 MiB on the CI machines): no one core's share of a cache is that
// large, and two 1 GiB buffers would cost more to fault in than the
// measurement takes.
func memcpyBuffer(cache int) int {
	return min(max(2*cache, 64<<20), 512<<20)
}

// memcpy measures the memcpy reference in this process (pinned to the
// measuring CPU with --cpu): copy() from one buffer to the other in
// memcpyChunk pieces, walking both buffers, for the warm-up and then for
// the measured window.
func (r *runner) memcpy(ctx context.Context) *Memcpy {
	cache := lastLevelCache()
	out := &Memcpy{Buffer: memcpyBuffer(cache), Chunk: memcpyChunk, Cache: cache}
	src := make([]byte, out.Buffer)
	dst := make([]byte, out.Buffer)
	copy(src, template(4096)) // fault the pages in, with bytes that are not all zero
	for off := 4096; off < len(src); off *= 2 {
		copy(src[off:], src[:off])
	}
	off := 0
	copyFor := func(d time.Duration) (int64, time.Duration) {
		var n int64
		t0 := time.Now()
		for {
			if off+memcpyChunk > len(src) {
				off = 0
			}
			n += int64(copy(dst[off:off+memcpyChunk], src[off:off+memcpyChunk]))
			off += memcpyChunk
			if el := time.Since(t0); el >= d || ctx.Err() != nil {
				return n, el
			}
		}
	}
	copyFor(max(r.opts.Warmup, time.Duration(out.Buffer/memcpyChunk)*100*time.Microsecond))
	n, el := copyFor(r.opts.Duration)
	if err := ctx.Err(); err != nil {
		out.Error = err.Error()
		return out
	}
	out.Bytes, out.Elapsed = n, Nanos(el)
	out.BytesPerSec = float64(n) / el.Seconds()
	return out
}

// lastLevelCache is the size in bytes of CPU 0's highest-level cache as
// sysfs reports it, or 0 if it reports none.
func lastLevelCache() int {
	dirs, _ := filepath.Glob("/sys/devices/system/cpu/cpu0/cache/index*")
	level, size := 0, 0
	for _, d := range dirs {
		l, err1 := readSysInt(filepath.Join(d, "level"))
		s, err2 := readSysSize(filepath.Join(d, "size"))
		switch {
		case err1 != nil || err2 != nil:
		case l > level:
			level, size = l, s
		case l == level:
			size = max(size, s)
		}
	}
	return size
}

func readSysInt(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// readSysSize reads a sysfs size: "32768K", "2M" or a byte count.
func readSysSize(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	s, mult := strings.TrimSpace(string(b)), 1
	switch {
	case strings.HasSuffix(s, "K"):
		s, mult = s[:len(s)-1], 1<<10
	case strings.HasSuffix(s, "M"):
		s, mult = s[:len(s)-1], 1<<20
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("%s: bad size %q", file, b)
	}
	return n * mult, nil
}

// startLoad starts n busy processes: this executable again in the "load"
// role, each an endless loop at the normal priority, not pinned. They run
// until the returned function stops them, and die with this process
// (PR_SET_PDEATHSIG) or when their control pipe closes.
func (r *runner) startLoad(n int) (stop func(), err error) {
	js, err := json.Marshal(childConfig{Role: "load", CPU: -1, Parent: os.Getpid()})
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	var ctls []*os.File
	stop = func() {
		for _, f := range ctls {
			f.Close()
		}
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for range n {
		ctlR, ctlW, err := os.Pipe()
		if err != nil {
			stop()
			return nil, err
		}
		cmd := &exec.Cmd{Path: r.self, Args: []string{os.Args[0]}}
		cmd.Env = append(os.Environ(), childEnv+"="+string(js))
		cmd.ExtraFiles = []*os.File{ctlR}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
		err = cmd.Start()
		ctlR.Close()
		if err != nil {
			ctlW.Close()
			stop()
			return nil, fmt.Errorf("start busy process: %w", err)
		}
		cmds, ctls = append(cmds, cmd), append(ctls, ctlW)
	}
	return stop, nil
}

// busyLoop is the load role: it spins until its control pipe (fd 3)
// closes.
func busyLoop() error {
	ctl := os.NewFile(3, "control")
	var done atomic.Bool
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := ctl.Read(b); err != nil {
				done.Store(true)
				return
			}
		}
	}()
	x := uint64(1)
	for !done.Load() {
		x = x*6364136223846793005 + 1442695040888963407 // work the scheduler cannot tell from any other
	}
	if x == 0 {
		return errors.New("unreachable")
	}
	return nil
}
