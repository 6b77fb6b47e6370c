package bench

import (
	"errors"
	"fmt"
	"time"
)

// This file holds what the IPC comparison (Run) is asked and what it
// reports; it builds everywhere. The harness and the methods themselves
// are Linux code (ipc_linux.go and the method files).

// Schema names the JSON form of a Report. It changes only when a field
// changes meaning or goes away; new fields may be added under the same name.
const Schema = "shmbus-bench/1"

// DefaultSizes are the message sizes of a full run.
var DefaultSizes = []int{8, 64, 1 << 10, 64 << 10, 1 << 20}

// QuickSizes are the message sizes of a quick run.
var QuickSizes = []int{64, 64 << 10}

// Defaults for Options.
const (
	DefaultDuration = 250 * time.Millisecond
	QuickDuration   = 100 * time.Millisecond
	DefaultIdle     = time.Second
	MinSize         = 8        // every message carries an 8-byte sequence word
	MaxSize         = 16 << 20 // the largest message size a run accepts
	MaxLoad         = 64       // the most busy processes Options.Load may ask for
	MemcpyName      = "memcpy" // the name of the memcpy reference in Options.Methods
	BoardName       = "board"  // the name of the board section in Options.Methods
	BoardValue      = 64       // the value size of the board section's figures
)

// Errors of Run.
var (
	ErrUnknownMethod = errors.New("unknown method")
	ErrBadOptions    = errors.New("bad options")
	ErrUnsupported   = errors.ErrUnsupported // the comparison runs on Linux only
)

// Options configure a Run. The zero value is a full run of every method.
type Options struct {
	Methods  []string      // method names (MethodNames); nil: all of them
	Sizes    []int         // message sizes in bytes; nil: DefaultSizes
	Duration time.Duration // measured time of each latency and throughput figure; default DefaultDuration
	Warmup   time.Duration // traffic before each measurement that is not counted; default Duration/4, at least 20ms
	Idle     time.Duration // window of the idle-cost figures; default DefaultIdle; negative: skip them
	CPUs     []int         // nil, or [A, B]: pin this process to CPU A and the peer processes to CPU B
	Dir      string        // where the temporary buses live; default $SHMBUS_DIR or /dev/shm
	// Load is the number of busy processes (endless loops at the normal
	// priority, not pinned) kept running for the whole run, to measure the
	// methods on a machine that has other work to do.
	Load int
	// Verify compares every byte of every message received in throughput
	// runs too (round trips are always compared whole). It slows the
	// receiver; tests set it.
	Verify bool
	// Progress, if set, is called before each measurement.
	Progress func(Step)
}

// Step is one measurement of a run, for progress reports.
type Step struct {
	Index, Total int    // 1-based
	Method       string //
	What         string // "latency", "throughput", "unbatched", "idle", "memcpy"
	Size         int    // message size in bytes
}

func (s Step) String() string {
	switch s.What {
	case "idle":
		return fmt.Sprintf("[%d/%d] idle cost", s.Index, s.Total)
	case "memcpy":
		return fmt.Sprintf("[%d/%d] memcpy reference", s.Index, s.Total)
	}
	return fmt.Sprintf("[%d/%d] %s %s %s", s.Index, s.Total, s.Method, SizeString(s.Size), s.What)
}

// Report is everything a run measured. Its JSON form (Schema) is what
// `shmbus bench --json` prints; docs/benchmarks.md describes every field.
type Report struct {
	Schema   string         `json:"schema"`
	Started  time.Time      `json:"started"`
	Elapsed  Nanos          `json:"elapsed_ns"`
	Host     Host           `json:"host"`
	Settings Settings       `json:"settings"`
	Methods  []MethodReport `json:"methods"`
	Idle     []IdleCost     `json:"idle"`
	Memcpy   *Memcpy        `json:"memcpy,omitempty"` // the memcpy reference, when measured
	Board    *BoardReport   `json:"board,omitempty"`  // the board section, when measured
	// Ratios are the project's performance targets checked against this
	// run's figures (docs/benchmarks.md, "Targets").
	Ratios []Ratio `json:"ratios"`
}

// Nanos is a duration in nanoseconds (a plain integer in JSON).
type Nanos int64

// Duration is n as a time.Duration.
func (n Nanos) Duration() time.Duration { return time.Duration(n) }

// Host describes the machine a report comes from.
type Host struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	Kernel    string `json:"kernel"`
	CPUModel  string `json:"cpu_model"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
}

// Settings are the options a run used, with defaults filled in.
type Settings struct {
	Sizes    []int `json:"sizes"`
	Duration Nanos `json:"duration_ns"`
	Warmup   Nanos `json:"warmup_ns"`
	Idle     Nanos `json:"idle_ns"`
	CPUs     []int `json:"cpus"` // null when not pinned
	Verify   bool  `json:"verify"`
	Load     int   `json:"load"` // busy processes running during the run
}

// Properties are the qualitative columns of the textbook table, as they
// hold on Linux (docs/benchmarks.md explains each answer).
type Properties struct {
	Connectionless bool `json:"connectionless"` // a message can be sent without first opening or connecting to the receiver's end
	Reliable       bool `json:"reliable"`       // nothing accepted by a send is lost while the receiver lives
	FlowControl    bool `json:"flow_control"`   // a sender faster than its receiver is held back, not dropped
	Records        bool `json:"records"`        // message boundaries are kept
	Priorities     bool `json:"priorities"`     // a receiver can take urgent messages first
}

// MethodReport is one row of the comparison.
type MethodReport struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	API         string     `json:"api"`     // the calls each side makes, as measured
	Payload     string     `json:"payload"` // "bytes", "8-byte counter" or "none"
	Properties  Properties `json:"properties"`
	Notes       string     `json:"notes,omitempty"`
	Latency     []Latency  `json:"latency"`
	Throughput  []Rate     `json:"throughput"`
	// Unbatched is the throughput with one call per message on each side,
	// for methods whose Throughput uses batches (shmbus).
	Unbatched []Rate `json:"unbatched,omitempty"`
}

// Cell is what every measured figure has: its message size, and why it is
// missing if it is.
type Cell struct {
	Size int `json:"size"`
	// Unavailable says why the method cannot carry this size (or cannot be
	// measured this way), e.g. "limit 8192 B (kernel.msgmax)"; the figures
	// are then zero.
	Unavailable string `json:"unavailable,omitempty"`
	Limit       int    `json:"limit,omitempty"` // the largest message the method carries here, when that is the reason
	Error       string `json:"error,omitempty"` // the measurement failed
}

// OK reports whether the cell holds figures.
func (c Cell) OK() bool { return c.Unavailable == "" && c.Error == "" }

// Latency is a round-trip (ping-pong) figure: percentiles of every round
// trip measured after the warm-up, from an HdrHistogram with nanosecond
// resolution and 3 significant digits.
type Latency struct {
	Cell
	RoundTrips int64 `json:"round_trips"`
	Min        Nanos `json:"min_ns"`
	P50        Nanos `json:"p50_ns"`
	P99        Nanos `json:"p99_ns"`
	P999       Nanos `json:"p999_ns"`
	Max        Nanos `json:"max_ns"`
	Mean       Nanos `json:"mean_ns"`
}

// Rate is a one-way throughput figure, timed by the receiver from the
// first message after the warm-up to the last message of the measured
// window.
type Rate struct {
	Cell
	Messages    int64   `json:"messages"`
	Elapsed     Nanos   `json:"elapsed_ns"`
	MsgsPerSec  float64 `json:"msgs_per_s"`
	BytesPerSec float64 `json:"bytes_per_s"`
	Producers   int     `json:"producers"`  // sending processes
	BatchSize   int     `json:"batch_size"` // messages per send call (1: unbatched)
}

// IdleCost is the CPU time a blocked receiver used while nothing arrived.
type IdleCost struct {
	Method   string  `json:"method"`
	Wall     Nanos   `json:"wall_ns"`
	CPU      Nanos   `json:"cpu_ns"` // user + system, whole process
	MsPerSec float64 `json:"cpu_ms_per_s"`
	Error    string  `json:"error,omitempty"`
}

// Memcpy is the memcpy reference: one core copying buffers larger than
// the last-level cache, as fast as the Go runtime's copy does it. It bounds
// what any method that copies a large message once can reach.
type Memcpy struct {
	Buffer      int     `json:"buffer"` // bytes of each of the two buffers (source, destination)
	Chunk       int     `json:"chunk"`  // bytes per copy call
	Cache       int     `json:"cache"`  // the last-level cache's size in bytes, as the system reports it (0: unknown)
	Bytes       int64   `json:"bytes"`  // bytes copied in the measured window
	Elapsed     Nanos   `json:"elapsed_ns"`
	BytesPerSec float64 `json:"bytes_per_s"`
	Error       string  `json:"error,omitempty"`
}

// BoardReport is the board section: the latency of Get and Put of one
// key, and the watch round trip beside a bus's futex round trip, all with
// values (messages) of ValueSize bytes.
type BoardReport struct {
	ValueSize int        `json:"value_size"`
	Get       BoardCalls `json:"get"`        // Board.Get, nobody else on the board
	GetWriter BoardCalls `json:"get_writer"` // Board.Get while a peer process puts the same key as fast as it can
	Put       BoardCalls `json:"put"`        // Board.Put, nobody else on the board
	// Watch is the watch round trip: a Put of one key wakes a watcher of
	// it in the peer process, which puts the value to a second key, which
	// wakes a watcher here (two puts, two wake-ups). Both watchers spin
	// briefly before they sleep, as a bus consumer does.
	Watch Latency `json:"watch"`
	// BusFutex is the round trip of shmbus-futex at the same size,
	// measured right after Watch by the same harness (two sends, two
	// consumer wake-ups): what a watch round trip is compared with.
	BusFutex Latency `json:"bus_futex"`
}

// BoardCalls is the latency of one call (Get or Put) from timed batches:
// every sample is the time of Batch consecutive calls divided by Batch, so
// the percentiles are of batch means and hide single slow calls inside a
// batch (the clock costs about as much as one call).
type BoardCalls struct {
	Batch int   `json:"batch"`
	Calls int64 `json:"calls"` // calls measured (after the warm-up)
	Min   Nanos `json:"min_ns"`
	P50   Nanos `json:"p50_ns"`
	P99   Nanos `json:"p99_ns"`
	Max   Nanos `json:"max_ns"`
	// WriterPuts is the writing peer's rate (puts per second) while
	// the Gets were measured (get_writer only).
	WriterPuts float64 `json:"writer_puts_per_s,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// Ratio compares two figures of the same run against a target.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
}

// Method returns the row of the method called name, or nil.
func (r *Report) Method(name string) *MethodReport {
	for i := range r.Methods {
		if r.Methods[i].Name == name {
			return &r.Methods[i]
		}
	}
	return nil
}

// LatencyAt returns the round-trip figure of size bytes, if measured.
func (m *MethodReport) LatencyAt(size int) (Latency, bool) {
	for _, l := range m.Latency {
		if l.Size == size {
			return l, true
		}
	}
	return Latency{}, false
}

// ThroughputAt returns the throughput figure of size bytes, if measured.
func (m *MethodReport) ThroughputAt(size int) (Rate, bool) {
	return rateAt(m.Throughput, size)
}

// UnbatchedAt returns the unbatched throughput figure of size bytes.
func (m *MethodReport) UnbatchedAt(size int) (Rate, bool) {
	return rateAt(m.Unbatched, size)
}

func rateAt(rs []Rate, size int) (Rate, bool) {
	for _, r := range rs {
		if r.Size == size {
			return r, true
		}
	}
	return Rate{}, false
}

// Failed returns the cells whose measurement failed, as errors.
func (r *Report) Failed() error {
	var errs []error
	for _, m := range r.Methods {
		for _, l := range m.Latency {
			if l.Error != "" {
				errs = append(errs, fmt.Errorf("%s %s latency: %s", m.Name, SizeString(l.Size), l.Error))
			}
		}
		for _, t := range append(append([]Rate(nil), m.Throughput...), m.Unbatched...) {
			if t.Error != "" {
				errs = append(errs, fmt.Errorf("%s %s throughput: %s", m.Name, SizeString(t.Size), t.Error))
			}
		}
	}
	for _, c := range r.Idle {
		if c.Error != "" {
			errs = append(errs, fmt.Errorf("%s idle cost: %s", c.Method, c.Error))
		}
	}
	if r.Memcpy != nil && r.Memcpy.Error != "" {
		errs = append(errs, fmt.Errorf("memcpy reference: %s", r.Memcpy.Error))
	}
	if b := r.Board; b != nil {
		for _, c := range []struct {
			what string
			err  string
		}{{"get", b.Get.Error}, {"get with a writer", b.GetWriter.Error}, {"put", b.Put.Error},
			{"watch round trip", b.Watch.Error}, {"bus futex round trip", b.BusFutex.Error}} {
			if c.err != "" {
				errs = append(errs, fmt.Errorf("board %s: %s", c.what, c.err))
			}
		}
	}
	return errors.Join(errs...)
}

// SizeString writes a message size the way the tables do: 8B, 64B, 1KiB,
// 64KiB, 1MiB (or a plain byte count).
func SizeString(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// ratios compares the figures the project has targets for (README,
// docs/benchmarks.md), at 64-byte messages and 64 KiB, where measured.
func (r *Report) ratios() []Ratio {
	var out []Ratio
	lat := func(method string, size int) (float64, bool) {
		m := r.Method(method)
		if m == nil {
			return 0, false
		}
		l, ok := m.LatencyAt(size)
		return float64(l.P50), ok && l.OK() && l.P50 > 0
	}
	rate := func(method string, size int) (Rate, bool) {
		m := r.Method(method)
		if m == nil {
			return Rate{}, false
		}
		t, ok := m.ThroughputAt(size)
		return t, ok && t.OK() && t.MsgsPerSec > 0
	}
	if a, ok := lat("shmbus-spin", 64); ok {
		if b, ok := lat("ring-minimal", 64); ok {
			out = append(out, Ratio{"shmbus-spin p50 / ring-minimal p50 (64B round trip)", a / b, "<= 1.25", a/b <= 1.25})
		}
	}
	if a, ok := lat("shmbus-futex", 64); ok {
		if b, ok := lat("pipe", 64); ok {
			out = append(out, Ratio{"shmbus-futex p50 / pipe p50 (64B round trip)", a / b, "<= 1", a/b <= 1})
		}
		if b, ok := lat("shmbus-spin", 64); ok {
			out = append(out, Ratio{"shmbus-futex p50 / shmbus-spin p50 (64B round trip)", a / b, "approach 1", a/b <= 2})
		}
	}
	if a, ok := rate("shmbus-spin", 64); ok {
		if b, ok := rate("pipe", 64); ok {
			out = append(out, Ratio{"shmbus-spin / pipe (64B msgs/s one way)", a.MsgsPerSec / b.MsgsPerSec, ">= 10", a.MsgsPerSec/b.MsgsPerSec >= 10})
		}
		out = append(out, Ratio{"shmbus-spin 64B M msgs/s one way", a.MsgsPerSec / 1e6, ">= 25", a.MsgsPerSec >= 25e6})
	}
	if a, ok := rate("shmbus-spin", 64<<10); ok {
		out = append(out, Ratio{"shmbus-spin 64KiB GB/s one way", a.BytesPerSec / 1e9, ">= 9", a.BytesPerSec >= 9e9})
	}
	if b := r.Board; b != nil {
		calls := func(name string, c BoardCalls, limit float64) {
			if c.Error == "" && c.P50 > 0 {
				v := float64(c.P50)
				out = append(out, Ratio{fmt.Sprintf("board %s p50 (%s value), ns", name, SizeString(b.ValueSize)), v, fmt.Sprintf("<= %g", limit), v <= limit})
			}
		}
		calls("get", b.Get, 50)
		calls("get with a writer process", b.GetWriter, 150)
		calls("put", b.Put, 100)
		if b.Watch.OK() && b.BusFutex.OK() && b.Watch.P50 > 0 && b.BusFutex.P50 > 0 {
			v := float64(b.Watch.P50) / float64(b.BusFutex.P50)
			out = append(out, Ratio{fmt.Sprintf("board watch p50 / shmbus-futex p50 (%s round trip)", SizeString(b.ValueSize)), v, "<= 1", v <= 1})
		}
	}
	var shm, pipe *IdleCost
	for i := range r.Idle {
		switch c := &r.Idle[i]; c.Method {
		case "shmbus-futex":
			shm = c
		case "pipe":
			pipe = c
		}
	}
	if shm != nil && pipe != nil && shm.Error == "" && pipe.Error == "" {
		out = append(out, Ratio{"idle CPU: shmbus-futex consumer - pipe reader (ms/s)", shm.MsPerSec - pipe.MsPerSec, "<= 0 (noise: a few hundredths)", shm.MsPerSec <= pipe.MsPerSec+0.05})
	}
	for _, c := range r.Idle {
		if c.Method == "shmbus-sem" && pipe != nil && c.Error == "" && pipe.Error == "" {
			out = append(out, Ratio{"idle CPU: shmbus-sem consumer - pipe reader (ms/s)", c.MsPerSec - pipe.MsPerSec, "<= 0 (noise: a few hundredths)", c.MsPerSec <= pipe.MsPerSec+0.05})
		}
	}
	return out
}
