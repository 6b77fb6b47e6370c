package main

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/shmbus/shmbus/bench"
)

// fakeReport is a report as Run makes one, with figures made up.
func fakeReport() *bench.Report {
	r := syntheticReport([]string{"pipe", "signal", "shmbus-spin", "posix-mq"}, []int{64, 64 << 10})
	r.Methods[2].Latency[0].P50 = 150 // below 1µs: the axis must label 100ns
	return r
}

// syntheticReport is a report of the named methods at sizes, with
// figures made up but shaped like a real run's: fixed, so that the text
// can be compared with a golden file.
func syntheticReport(names []string, sizes []int) *bench.Report {
	r := &bench.Report{Schema: bench.Schema, Started: time.Date(2026, 12, 2, 13, 30, 0, 0, time.UTC),
		Elapsed: bench.Nanos(51*time.Second + 400*time.Millisecond),
		Host:    bench.Host{OS: "linux", Arch: "amd64", Kernel: "6.18.44", CPUModel: "AMD EPYC", CPUs: 2, GoVersion: "go1.26.8"},
		Settings: bench.Settings{Sizes: sizes, Duration: bench.Nanos(250 * time.Millisecond),
			Warmup: bench.Nanos(62500 * time.Microsecond), Idle: bench.Nanos(time.Second)}}
	yes := bench.Properties{Reliable: true, FlowControl: true}
	for i, name := range names {
		k := float64(i + 1)
		m := bench.MethodReport{Name: name, Payload: "bytes", Properties: yes}
		switch name {
		case "signal":
			m.Payload = "none"
			m.Properties = bench.Properties{Connectionless: true}
			m.Latency = []bench.Latency{{Cell: bench.Cell{Size: 0}, RoundTrips: 10, P50: 38300, P99: 82100, P999: 122000, Max: 1820000}}
			r.Methods = append(r.Methods, m)
			continue
		case "eventfd":
			m.Payload = "8-byte counter"
			m.Latency = []bench.Latency{{Cell: bench.Cell{Size: 8}, RoundTrips: 10, P50: 4360, P99: 65400, P999: 90700, Max: 144000}}
			m.Throughput = []bench.Rate{{Cell: bench.Cell{Size: 8}, Messages: 100, MsgsPerSec: 2.46e6, BytesPerSec: 8 * 2.46e6}}
			r.Methods = append(r.Methods, m)
			continue
		case "posix-mq", "sysv-msgq":
			m.Properties.Records, m.Properties.Priorities = true, true
		}
		spin := strings.HasPrefix(name, "shmbus") || name == "ring-minimal"
		for _, s := range sizes {
			c := bench.Cell{Size: s}
			switch {
			case name == "posix-mq" && s > 8192:
				c.Unavailable, c.Limit = "n/a: limit 8192 B (fs.mqueue.msgsize_max)", 8192
			case name == "sysv-msgq" && s > 8192:
				c.Unavailable, c.Limit = "n/a: limit 8192 B (kernel.msgmax)", 8192
			}
			base := 4710.0 * k
			if spin {
				base = 161 * k
			}
			scale := 1 + float64(s)/4096
			l := bench.Latency{Cell: c, RoundTrips: 1000}
			if c.OK() {
				l.P50, l.P99 = bench.Nanos(base*scale), bench.Nanos(3*base*scale)
				l.P999, l.Max = bench.Nanos(9*base*scale), bench.Nanos(100*base*scale)
			}
			m.Latency = append(m.Latency, l)
			msgs := 2.7e6 / k / scale
			if spin {
				msgs = 38e6 / k / scale
			}
			t := bench.Rate{Cell: c, Messages: 1000}
			if c.OK() {
				t.MsgsPerSec, t.BytesPerSec = msgs, msgs*float64(s)
			}
			m.Throughput = append(m.Throughput, t)
			if spin {
				u := t
				u.MsgsPerSec, u.BytesPerSec = msgs/3, msgs*float64(s)/3
				m.Unbatched = append(m.Unbatched, u)
			}
		}
		r.Methods = append(r.Methods, m)
	}
	r.Memcpy = &bench.Memcpy{Buffer: 64 << 20, Chunk: 1 << 20, Cache: 32 << 20, Bytes: 4e9, Elapsed: bench.Nanos(250 * time.Millisecond),
		BytesPerSec: 16.2e9}
	for _, n := range []string{"shmbus-futex", "shmbus-sem", "pipe"} {
		if slices.Contains(names, n) {
			r.Idle = append(r.Idle, bench.IdleCost{Method: n, Wall: bench.Nanos(1010 * time.Millisecond),
				CPU: bench.Nanos(212 * time.Microsecond), MsPerSec: 0.21})
		}
	}
	r.Board = &bench.BoardReport{ValueSize: 64,
		Get:       bench.BoardCalls{Batch: 64, Calls: 1e6, Min: 28, P50: 31, P99: 35, Max: 41000},
		GetWriter: bench.BoardCalls{Batch: 64, Calls: 1e6, Min: 29, P50: 96, P99: 188, Max: 97000, WriterPuts: 1.9e6},
		Put:       bench.BoardCalls{Batch: 64, Calls: 1e6, Min: 63, P50: 67, P99: 74, Max: 80000},
		Watch:     bench.Latency{Cell: bench.Cell{Size: 64}, RoundTrips: 1000, Min: 4900, P50: 8300, P99: 17500, P999: 31000, Max: 410000},
		BusFutex:  bench.Latency{Cell: bench.Cell{Size: 64}, RoundTrips: 1000, Min: 4100, P50: 8500, P99: 15600, P999: 29000, Max: 380000}}
	r.Ratios = []bench.Ratio{{Name: "shmbus-spin p50 / ring-minimal p50 (64B round trip)", Value: 1.771, Target: "<= 1.25"},
		{Name: "shmbus-spin 64B M msgs/s one way", Value: 32.3, Target: ">= 25", Met: true}}
	return r
}

// allMethods are the rows of a full run.
var allMethods = []string{"pipe", "fifo", "unix-stream", "unix-dgram", "unix-seqpacket", "tcp", "posix-mq", "sysv-msgq",
	"signal", "eventfd", "shmbus-spin", "shmbus-futex", "shmbus-sem", "shmbus-mpsc", "ring-minimal", "go-chan"}

var update = flag.Bool("update", false, "rewrite the golden files of the tests in testdata")

// The text report of a full synthetic run at 80 columns is the golden
// file (go test -run TestBenchTextGolden -update rewrites it).
func TestBenchTextGolden(t *testing.T) {
	var b bytes.Buffer
	writeBenchText(&b, syntheticReport(allMethods, bench.DefaultSizes), textOptions{width: 80})
	golden := filepath.Join("testdata", "bench-80.txt")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("text report differs from %s (-update rewrites it):\n%s", golden, got)
	}
}

// Every line fits the width, and every table row of a block has the
// width of its header (aligned, whatever the runes).
func TestBenchTextWidth(t *testing.T) {
	for _, width := range []int{80, 100, 120, 132} {
		for _, sizes := range [][]int{{64}, bench.QuickSizes, bench.DefaultSizes, {8, 16, 32, 64, 128, 256, 512, 1 << 10, 4 << 10, 64 << 10, 1 << 20}} {
			var b bytes.Buffer
			writeBenchText(&b, syntheticReport(allMethods, sizes), textOptions{width: width, targets: true})
			lines := strings.Split(b.String(), "\n")
			for i, l := range lines {
				if n := utf8.RuneCountInString(l); n > width {
					t.Errorf("width %d, %d sizes: line %d is %d columns: %q", width, len(sizes), i+1, n, l)
				}
			}
			if width >= 120 && len(sizes) <= 2 && strings.Count(b.String(), "\nMETHOD ") != 3 {
				t.Errorf("width %d, %d sizes: a table was split though it fits:\n%s", width, len(sizes), b.String())
			}
		}
	}
	// At 80 columns Table 1 splits between the properties and the figures.
	var b bytes.Buffer
	writeBenchText(&b, syntheticReport(allMethods, bench.DefaultSizes), textOptions{width: 80})
	if !regexp.MustCompile(`(?m)^METHOD +CONNECTIONLESS +RELIABLE +FLOW CTL +RECORDS +PRIORITIES$`).MatchString(b.String()) ||
		!regexp.MustCompile(`(?m)^METHOD +RTT p50 +p99 +p99\.9 +max +MSGS/S +BYTES/S$`).MatchString(b.String()) {
		t.Errorf("Table 1 not split into properties and figures at 80 columns:\n%s", b.String())
	}
}

// The tables stay aligned: in each block, a column's cells end (right
// aligned figures) or start (names) at the same column on every line.
func TestBenchTextAligned(t *testing.T) {
	var b bytes.Buffer
	writeBenchText(&b, syntheticReport(allMethods, bench.DefaultSizes), textOptions{width: 80})
	for _, block := range strings.Split(b.String(), "\n\n") {
		lines := strings.Split(strings.Trim(block, "\n"), "\n")
		if !strings.HasPrefix(lines[0], "METHOD ") || strings.HasSuffix(lines[0], "PRIORITIES") {
			continue // not a table, or one whose last column is words (left-aligned)
		}
		// The last column holds figures, right-aligned: every row that
		// has one ends where the header does.
		want := utf8.RuneCountInString(lines[0])
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if n := utf8.RuneCountInString(l); n != want && f[len(f)-1] != "-" {
				t.Errorf("row %q ends at column %d, header at %d", l, n, want)
			}
		}
	}
}

// The † note is there only when a method measured at its own size is.
func TestBenchTextFootnote(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  string // in the note; "" for no note
	}{
		{[]string{"pipe", "shmbus-futex"}, ""},
		{[]string{"pipe", "signal"}, "signal carries no payload (round trips only)"},
		{[]string{"eventfd", "pipe"}, "eventfd carries an 8-byte counter"},
	} {
		var b bytes.Buffer
		writeBenchText(&b, syntheticReport(tc.names, []int{64, 1 << 10}), textOptions{width: 80})
		out := b.String()
		if got := strings.Count(out, "†"); (tc.want == "") != (got == 0) {
			t.Errorf("%v: %d † marks:\n%s", tc.names, got, out)
		}
		if tc.want != "" && !strings.Contains(strings.Join(strings.Fields(out), " "), "† measured at the method's own size, not 64B: "+tc.want) {
			t.Errorf("%v: no note %q:\n%s", tc.names, tc.want, out)
		}
		hasSignalNote := strings.Count(out, "carry no messages of these sizes")
		if hasSignalNote != min(len(tc.want), 1) {
			t.Errorf("%v: the note on Tables 2 and 3 is there: %v:\n%s", tc.names, hasSignalNote, out)
		}
		for _, n := range tc.names {
			if n != "pipe" && regexp.MustCompile(`(?m)^`+n+` .*n/a`).MatchString(out) {
				t.Errorf("%v: a row of n/a for %s:\n%s", tc.names, n, out)
			}
		}
	}
}

// Targets are printed only when asked for; they are in the JSON always.
func TestBenchTextTargets(t *testing.T) {
	r := syntheticReport([]string{"pipe", "shmbus-spin"}, []int{64})
	var plain, with bytes.Buffer
	writeBenchText(&plain, r, textOptions{width: 80})
	writeBenchText(&with, r, textOptions{width: 80, targets: true})
	if strings.Contains(plain.String(), "arget") {
		t.Errorf("targets in the default report:\n%s", plain.String())
	}
	if !strings.Contains(with.String(), "Targets:") || !strings.Contains(with.String(), "1.771, target <= 1.25: not met") {
		t.Errorf("no targets with targets set:\n%s", with.String())
	}
}

func TestFigureFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{nanos(161), "161ns"}, {nanos(999), "999ns"}, {nanos(1240), "1.2µs"}, {nanos(9960), "10µs"},
		{nanos(34567), "35µs"}, {nanos(999600), "1.0ms"}, {nanos(2_100_000), "2.1ms"},
		{msgRate(915), "915/s"}, {msgRate(41_000), "41k/s"}, {msgRate(2.7e6), "2.7M/s"}, {msgRate(32.3e6), "32M/s"},
		{byteRate(16.2e9), "16GB/s"}, {byteRate(9.71e9), "9.7GB/s"}, {byteRate(22e6), "22MB/s"},
		{humanDuration(0), "0s"}, {humanDuration(850 * time.Millisecond), "850ms"},
		{humanDuration(12345 * time.Millisecond), "12.3s"}, {humanDuration(72 * time.Second), "1m12s"},
		{humanDuration(391 * time.Microsecond), "391µs"}, {humanDuration(1480 * time.Microsecond), "1.5ms"},
		{humanDuration(999600 * time.Microsecond), "1s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestBenchPlot(t *testing.T) {
	dir := t.TempDir()
	r := fakeReport()
	png := filepath.Join(dir, "b.png")
	if err := writeBenchPlot(png, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("%s is not a PNG: %q", png, b[:min(len(b), 16)])
	}
	svg := filepath.Join(dir, "b.SVG")
	if err := writeBenchPlot(svg, r); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", svg, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("%s: root element %q, want svg", svg, root)
	}
	for _, want := range []string{"shmbus-spin batched", "shmbus-spin 1/call", "pipe", "1µs", "100ns", "AMD EPYC", "2026-12-02"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s has no %q (legend, tick labels, caption)", svg, want)
		}
	}
	if strings.Contains(string(b), ">100000<") {
		t.Errorf("%s labels nanoseconds raw", svg)
	}
	// One size still has its tick.
	one := syntheticReport([]string{"pipe", "shmbus-spin"}, []int{64})
	if err := writeBenchPlot(svg, one); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(svg); !strings.Contains(string(b), ">64B<") {
		t.Errorf("a one-size plot has no size tick")
	}
	if err := writeBenchPlot(filepath.Join(dir, "b.gif"), r); err == nil {
		t.Error("a .gif plot did not fail")
	}
	if err := writeBenchPlot(filepath.Join(dir, "e.svg"), &bench.Report{Settings: bench.Settings{Sizes: []int{64}}}); err == nil {
		t.Error("an empty report plotted")
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("8,64,1k,64K,1m,2MiB,4096")
	if err != nil {
		t.Fatal(err)
	}
	want := []int{8, 64, 1 << 10, 64 << 10, 1 << 20, 2 << 20, 4096}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "4", "1x", "-8", "64,", "32m", "1km"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// On a terminal the progress line is cleared before the report starts.
func TestBenchProgressCleared(t *testing.T) {
	old := stderrIsTerminal
	stderrIsTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { stderrIsTerminal = old })
	var out bytes.Buffer // stdout and stderr, as on a terminal
	code := run([]string{"bench", "--methods", "go-chan", "--sizes", "64", "--duration", "20ms", "--idle", "0"},
		strings.NewReader(""), &out, &out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	s := out.String()
	i := strings.Index(s, "shmbus bench:")
	if i < 0 || !strings.Contains(s[:i], "bench: [") {
		t.Fatalf("no progress line before the report:\n%q", s)
	}
	before := s[:i]
	if !strings.HasSuffix(before, "\r") {
		t.Fatalf("the report does not start at the beginning of the line: %q", before)
	}
	last := before[strings.LastIndex(before[:len(before)-1], "\r")+1 : len(before)-1]
	if strings.TrimLeft(last, " ") != "" {
		t.Errorf("the progress line %q is left before the report", last)
	}
}
