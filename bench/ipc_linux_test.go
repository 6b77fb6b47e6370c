package bench

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests check that every method carries verified traffic and that
// the harness cleans up; they assert no duration or speed (the figures are
// what `shmbus bench` and the testing.B benchmarks are for).

// brief are options for a short run that still exercises everything.
func brief(methods ...string) Options {
	return Options{Methods: methods, Sizes: []int{64}, Duration: 20 * time.Millisecond, Warmup: 5 * time.Millisecond,
		Idle: -1, Verify: true}
}

// TestEveryMethod runs every method briefly: round trips whose echoes are
// compared byte for byte, and one-way traffic whose every message is
// checked for its sequence number and content.
func TestEveryMethod(t *testing.T) {
	trackQueues(t)
	opts := brief()
	opts.Sizes = []int{8, 1000}
	opts.Idle = 100 * time.Millisecond
	var steps []Step
	opts.Progress = func(s Step) { steps = append(steps, s) }
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failed(); err != nil {
		t.Fatal(err)
	}
	if len(rep.Methods) != len(methods) {
		t.Fatalf("%d methods in the report, want %d", len(rep.Methods), len(methods))
	}
	if rep.Memcpy == nil || rep.Memcpy.BytesPerSec <= 0 {
		t.Errorf("memcpy reference: %+v", rep.Memcpy)
	}
	for _, m := range rep.Methods {
		if len(m.Latency) == 0 {
			t.Errorf("%s: no round-trip figures", m.Name)
		}
		for _, l := range m.Latency {
			if l.OK() && (l.RoundTrips == 0 || l.P50 <= 0 || l.Max < l.P999 || l.P999 < l.P99 || l.P99 < l.P50) {
				t.Errorf("%s %d B: implausible percentiles %+v", m.Name, l.Size, l)
			}
		}
		for _, r := range append(slices.Clone(m.Throughput), m.Unbatched...) {
			if r.OK() && (r.Messages == 0 || r.MsgsPerSec <= 0 || r.Elapsed <= 0) {
				t.Errorf("%s %d B: no messages counted: %+v", m.Name, r.Size, r)
			}
		}
		if m.Name == "signal" && (len(m.Throughput) != 0 || m.Latency[0].Size != 0) {
			t.Errorf("signal: want one round-trip figure without payload, got %+v / %+v", m.Latency, m.Throughput)
		}
		if m.Name == "eventfd" && m.Latency[0].Size != 8 {
			t.Errorf("eventfd: round trip of %d bytes, want 8", m.Latency[0].Size)
		}
	}
	if len(rep.Idle) != 3 {
		t.Fatalf("idle costs: %+v", rep.Idle)
	}
	for _, c := range rep.Idle {
		if c.Method == "" || c.Wall < Nanos(50*time.Millisecond) || c.CPU < 0 {
			t.Errorf("idle cost %+v", c)
		}
	}
	if len(steps) == 0 || steps[len(steps)-1].Index != steps[len(steps)-1].Total {
		t.Errorf("progress: %d steps, last %+v", len(steps), steps[len(steps)-1])
	}
	checkNoPeers(t)

	// The JSON form has the documented fields.
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "started", "elapsed_ns", "host", "settings", "methods", "idle", "ratios"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON report has no %q", k)
		}
	}
	if doc["schema"] != Schema {
		t.Errorf("schema %v", doc["schema"])
	}
	m0 := doc["methods"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "description", "api", "payload", "properties", "latency", "throughput"} {
		if _, ok := m0[k]; !ok {
			t.Errorf("JSON method has no %q", k)
		}
	}
	for _, k := range []string{"connectionless", "reliable", "flow_control", "records", "priorities"} {
		if _, ok := m0["properties"].(map[string]any)[k]; !ok {
			t.Errorf("JSON properties have no %q", k)
		}
	}
	l0 := m0["latency"].([]any)[0].(map[string]any)
	for _, k := range []string{"size", "round_trips", "p50_ns", "p99_ns", "p999_ns", "max_ns"} {
		if _, ok := l0[k]; !ok {
			t.Errorf("JSON latency has no %q", k)
		}
	}
	r0 := m0["throughput"].([]any)[0].(map[string]any)
	for _, k := range []string{"size", "messages", "msgs_per_s", "bytes_per_s", "producers", "batch_size"} {
		if _, ok := r0[k]; !ok {
			t.Errorf("JSON throughput has no %q", k)
		}
	}
}

// The idle figures are those of the methods asked for, and none when
// none of the idle methods is.
func TestIdleHonoursMethods(t *testing.T) {
	for _, tc := range []struct {
		methods []string
		want    []string
	}{
		{[]string{"pipe", "go-chan"}, []string{"pipe"}},
		{[]string{"shmbus-sem", "shmbus-spin"}, []string{"shmbus-sem"}},
		{[]string{"go-chan"}, nil},
	} {
		t.Run(strings.Join(tc.methods, ","), func(t *testing.T) {
			opts := brief(tc.methods...)
			opts.Idle = 50 * time.Millisecond
			var idleSteps int
			var last Step
			opts.Progress = func(s Step) {
				last = s
				if s.What == "idle" {
					idleSteps++
				}
			}
			rep, err := Run(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := rep.Failed(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range rep.Idle {
				got = append(got, c.Method)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("idle figures of %v, want %v", got, tc.want)
			}
			if want := min(len(tc.want), 1); idleSteps != want {
				t.Errorf("%d idle steps, want %d", idleSteps, want)
			}
			if last.Index != last.Total {
				t.Errorf("last step %+v: the plan counted steps that did not run", last)
			}
		})
	}
}

// The memcpy reference runs alone when it is the only name asked for.
func TestMemcpyReference(t *testing.T) {
	rep, err := Run(context.Background(), brief(MemcpyName))
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Memcpy
	if m == nil || m.Error != "" || m.Bytes <= 0 || m.Elapsed <= 0 || m.BytesPerSec <= 0 || m.Buffer != memcpyBuffer(m.Cache) || m.Chunk <= 0 {
		t.Fatalf("memcpy reference %+v", m)
	}
	if len(rep.Methods) != 0 {
		t.Errorf("methods measured: %+v", rep.Methods)
	}
}

// --load keeps busy processes running during the run and none after it.
func TestLoad(t *testing.T) {
	opts := brief("pipe")
	opts.Load = 2
	busy := -1
	opts.Progress = func(s Step) {
		if busy < 0 {
			busy = len(childPIDs(t)) // before the first measurement starts its peers
		}
	}
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failed(); err != nil {
		t.Fatal(err)
	}
	if busy != 2 || rep.Settings.Load != 2 {
		t.Errorf("%d busy processes during the run, settings say %d; want 2", busy, rep.Settings.Load)
	}
	checkNoPeers(t)
	if _, err := Run(context.Background(), Options{Load: -1}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("load -1: %v", err)
	}
}

// A size a method cannot carry is reported with its limit, not as an
// error, and nothing is started for it.
func TestLimits(t *testing.T) {
	opts := brief("posix-mq", "sysv-msgq", "unix-dgram", "eventfd", "signal")
	opts.Sizes = []int{12 << 20}
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failed(); err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.Methods {
		for _, c := range append(latencyCells(m), rateCells(m)...) {
			if c.Size == 12<<20 && (c.Unavailable == "" || c.Limit <= 0 || c.Limit >= 12<<20) {
				t.Errorf("%s: %+v, want unavailable with a limit", m.Name, c)
			}
		}
	}
	for _, name := range []string{"posix-mq", "sysv-msgq", "unix-dgram"} {
		l, _ := rep.Method(name).LatencyAt(12 << 20)
		if !strings.Contains(l.Unavailable, "limit "+strconv.Itoa(l.Limit)+" B") {
			t.Errorf("%s: %q does not say the limit", name, l.Unavailable)
		}
	}
}

func latencyCells(m MethodReport) (out []Cell) {
	for _, l := range m.Latency {
		out = append(out, l.Cell)
	}
	return out
}

func rateCells(m MethodReport) (out []Cell) {
	for _, r := range m.Throughput {
		out = append(out, r.Cell)
	}
	return out
}

// Ending the run's context stops every kind of method at once, in the
// middle of a measurement, and leaves no process or object behind.
func TestCancel(t *testing.T) {
	trackQueues(t)
	for _, name := range []string{"pipe", "fifo", "tcp", "posix-mq", "sysv-msgq", "signal", "eventfd",
		"shmbus-spin", "shmbus-futex", "shmbus-sem", "ring-minimal", "go-chan"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			opts := brief(name)
			opts.Duration = time.Minute
			opts.Progress = func(Step) { time.AfterFunc(300*time.Millisecond, cancel) }
			start := time.Now()
			rep, err := Run(ctx, opts)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v, want context.Canceled", err)
			}
			if time.Since(start) > 30*time.Second {
				t.Errorf("Run took %v to stop", time.Since(start))
			}
			if rep == nil || len(rep.Methods) != 1 {
				t.Fatalf("partial report %+v", rep)
			}
			checkNoPeers(t)
		})
	}
}

// A peer that dies fails its measurement with its error; the run goes on.
func TestPeerDies(t *testing.T) {
	opts := brief("pipe", "shmbus-futex", "ring-minimal")
	opts.Duration = time.Minute
	opts.Progress = func(s Step) {
		time.AfterFunc(200*time.Millisecond, func() {
			for _, pid := range childPIDs(t) {
				syscallKill(pid)
			}
		})
	}
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	failed := rep.Failed()
	if failed == nil {
		t.Fatal("no measurement failed")
	}
	for _, name := range []string{"pipe", "shmbus-futex", "ring-minimal"} {
		if !strings.Contains(failed.Error(), name) {
			t.Errorf("%s did not fail: %v", name, failed)
		}
	}
	checkNoPeers(t)
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Methods: []string{"carrier-pigeon"}},
		{Sizes: []int{4}},
		{Sizes: []int{MaxSize + 1}},
		{Duration: -time.Second},
		{CPUs: []int{0}},
		{CPUs: []int{0, 4096}},
	} {
		if _, err := Run(context.Background(), o); !errors.Is(err, ErrBadOptions) && !errors.Is(err, ErrUnknownMethod) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestPinned(t *testing.T) {
	opts := brief("pipe")
	opts.CPUs = []int{0, 0}
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failed(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckMessage(t *testing.T) {
	tmpl := template(100)
	msg := slices.Clone(tmpl)
	stamp(msg, 1, 42)
	if err := checkMessage(msg, tmpl, true); err != nil {
		t.Fatal(err)
	}
	if p, seq := unstamp(msg); p != 1 || seq != 42 {
		t.Fatalf("unstamp: %d %d", p, seq)
	}
	for name, bad := range map[string][]byte{
		"short":   msg[:99],
		"torn":    append(slices.Clone(msg[:92]), 0, 0, 0, 0, 0, 0, 0, 0),
		"shifted": append([]byte{0}, msg[:99]...),
		"flipped": func() []byte { b := slices.Clone(msg); b[50] ^= 1; return b }(),
	} {
		if checkMessage(bad, tmpl, true) == nil {
			t.Errorf("%s message not caught", name)
		}
	}
}

// childPIDs lists this process's child processes.
func childPIDs(t *testing.T) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}

func checkNoPeers(t *testing.T) {
	t.Helper()
	if pids := childPIDs(t); len(pids) > 0 {
		t.Errorf("peer processes left: %v", pids)
	}
}

// trackQueues records the System V queues the test makes and, at its
// end, fails it if any is still there. (Other processes on the machine
// make and remove queues too, so only these are looked for.)
func trackQueues(t *testing.T) {
	var mu sync.Mutex
	var ids []int
	onMsgget = func(id int) {
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
	}
	t.Cleanup(func() {
		onMsgget = nil
		b, err := os.ReadFile("/proc/sysvipc/msg")
		if err != nil {
			return
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(l); len(f) > 1 {
				if id, _ := strconv.Atoi(f[1]); slices.Contains(ids, id) {
					t.Errorf("System V message queue %d left behind", id)
				}
			}
		}
		if len(ids) == 0 {
			t.Errorf("no System V queue was made")
		}
	})
}

func syscallKill(pid int) { unix.Kill(pid, unix.SIGKILL) }

// The memcpy reference's buffers: twice the last-level cache, within
// [64 MiB, 512 MiB].
func TestMemcpyBuffer(t *testing.T) {
	for _, c := range []struct{ cache, want int }{
		{0, 64 << 20},
		{8 << 20, 64 << 20},
		{100 << 20, 200 << 20},
		{480 << 20, 512 << 20},
	} {
		if got := memcpyBuffer(c.cache); got != c.want {
			t.Errorf("memcpyBuffer(%d) = %d, want %d", c.cache, got, c.want)
		}
	}
}

// The board section runs alone when it is the only name asked for: every
// figure is measured (the writer and the watchers in peer processes), its
// steps are counted in the plan, and the boards it made are gone.
func TestBoardSection(t *testing.T) {
	dir := t.TempDir()
	opts := brief(BoardName)
	opts.Dir = dir
	var last Step
	opts.Progress = func(s Step) { last = s }
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failed(); err != nil {
		t.Fatal(err)
	}
	b := rep.Board
	if b == nil || b.ValueSize != BoardValue {
		t.Fatalf("board section %+v", b)
	}
	for name, c := range map[string]BoardCalls{"get": b.Get, "get with a writer": b.GetWriter, "put": b.Put} {
		if c.Calls <= 0 || c.Batch != boardBatch || c.Min <= 0 || c.P50 < c.Min || c.P99 < c.P50 || c.Max < c.P99 {
			t.Errorf("%s: %+v", name, c)
		}
	}
	if b.GetWriter.WriterPuts <= 0 {
		t.Errorf("the writer put nothing while the Gets were measured: %+v", b.GetWriter)
	}
	for name, l := range map[string]Latency{"watch": b.Watch, "bus futex": b.BusFutex} {
		if l.RoundTrips <= 0 || l.P50 <= 0 || l.Size != BoardValue {
			t.Errorf("%s: %+v", name, l)
		}
	}
	if len(rep.Methods) != 0 {
		t.Errorf("methods measured: %+v", rep.Methods)
	}
	if last.Index != last.Total {
		t.Errorf("last step %+v: the plan counted steps that did not run", last)
	}
	var ratios int
	for _, q := range rep.Ratios {
		if strings.HasPrefix(q.Name, "board ") {
			ratios++
		}
	}
	if ratios != 4 {
		t.Errorf("%d board ratios, want 4: %+v", ratios, rep.Ratios)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("left in %s: %v", dir, left)
	}
}
