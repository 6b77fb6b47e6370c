package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ChildMain runs this process as a benchmark peer if it was started as
// one (the environment variable SHMBUS_BENCH_CHILD is set): it does its
// part of one measurement and returns handled == true with the error, and
// the caller must then exit (status 1 and the error on stderr if err is
// not nil). Otherwise it returns false at once. Programs that run Run
// (the shmbus command, tests) call it first thing in main or TestMain.
func ChildMain() (handled bool, err error) {
	v, ok := os.LookupEnv(childEnv)
	if !ok {
		return false, nil
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(v), &cfg); err != nil {
		return true, fmt.Errorf("bench peer: bad %s: %w", childEnv, err)
	}
	if err := runChild(cfg); err != nil {
		return true, fmt.Errorf("bench peer %s %s: %w", cfg.Method, cfg.Role, err)
	}
	return true, nil
}

func runChild(cfg childConfig) error {
	if cfg.Role == "load" {
		return busyLoop()
	}
	m := findMethod(cfg.Method)
	for _, b := range boardMethods {
		if b.name == cfg.Method {
			m = b
		}
	}
	if m == nil {
		return fmt.Errorf("%w %q", ErrUnknownMethod, cfg.Method)
	}
	if cfg.CPU >= 0 {
		if _, err := pinProcess(cfg.CPU); err != nil {
			return fmt.Errorf("pin to CPU %d: %w", cfg.CPU, err)
		}
	}
	ctl := os.NewFile(3, "control")
	res := os.NewFile(4, "result")
	defer res.Close()
	files := make([]*os.File, cfg.Files)
	for i := range files {
		files[i] = os.NewFile(uintptr(5+i), fmt.Sprintf("method file %d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stop, abort atomic.Bool
	go func() {
		// 's' asks a sender to stop; end of file means the measuring side
		// is gone (it closes the pipe when it is done with this peer).
		b := make([]byte, 1)
		for {
			if _, err := ctl.Read(b); err != nil {
				abort.Store(true)
				stop.Store(true)
				cancel()
				return
			}
			if b[0] == 's' {
				stop.Store(true)
			}
		}
	}()
	s := &side{size: cfg.Size, mode: cfg.Mode, producer: cfg.Producer, names: cfg.Names, files: files,
		ctx: ctx, abort: &abort, peer: cfg.Parent, res: res}
	return runRole(m, cfg.Role, s, &stop, res)
}

// runRole opens the peer's endpoint and plays role on it.
func runRole(m *method, role string, s *side, stop *atomic.Bool, res *os.File) error {
	ep, err := m.open(s)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	switch role {
	case "echo":
		err = echo(ep, s.size)
	case "send":
		err = sendAll(ep, s, stop)
	case "idle":
		err = idleReceive(ep, s.size, res)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	return errors.Join(err, ep.close())
}

// echo sends back every message until the end message.
func echo(ep endpoint, size int) error {
	buf := make([]byte, max(size, 8))
	for i := 0; ; i++ {
		n, err := ep.recv(buf)
		if errors.Is(err, errEnd) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receive %d: %w", i+1, err)
		}
		if n >= 8 {
			if _, seq := unstamp(buf[:n]); seq == endSeq {
				return nil
			}
		}
		if err := ep.send(buf[:n]); err != nil {
			return fmt.Errorf("send %d: %w", i+1, err)
		}
	}
}

// sendAll sends sequence-numbered messages as fast as the method allows
// (in batches where it has them) until told to stop, then its end message.
func sendAll(ep endpoint, s *side, stop *atomic.Bool) error {
	tmpl := template(s.size)
	if bs, ok := ep.(batchSender); ok && s.mode == modeThroughput {
		msgs := make([][]byte, batchSize(s.size))
		for i := range msgs {
			msgs[i] = append([]byte(nil), tmpl...)
		}
		seq := uint64(1)
		for !stop.Load() {
			for _, m := range msgs {
				stamp(m, s.producer, seq)
				seq++
			}
			if err := bs.sendBatch(msgs); err != nil {
				return fmt.Errorf("send batch at %d: %w", seq, err)
			}
		}
	} else {
		msg := append([]byte(nil), tmpl...)
		for seq := uint64(1); !stop.Load(); seq++ {
			stamp(msg, s.producer, seq)
			if err := ep.send(msg); err != nil {
				return fmt.Errorf("send %d: %w", seq, err)
			}
		}
	}
	if s.abort.Load() {
		return errAborted
	}
	if e, ok := ep.(ender); ok {
		return e.sendEnd()
	}
	stamp(tmpl, s.producer, endSeq)
	return ep.send(tmpl)
}

// idleReceive blocks in one receive and reports the CPU time the process
// used meanwhile on res, one JSON line (after a "ready" line sent just
// before blocking).
func idleReceive(ep endpoint, size int, res *os.File) error {
	buf := make([]byte, max(size, 8))
	if _, err := res.Write([]byte("ready\n")); err != nil {
		return err
	}
	cpu0, err := processCPU()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := ep.recv(buf); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	wall := time.Since(t0)
	cpu1, err := processCPU()
	if err != nil {
		return err
	}
	c := IdleCost{Wall: Nanos(wall), CPU: Nanos(cpu1 - cpu0)}
	c.MsPerSec = float64(c.CPU) / 1e6 / wall.Seconds()
	js, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = res.Write(append(js, '\n'))
	return err
}

// processCPU is the user and system time of the whole process so far.
func processCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
