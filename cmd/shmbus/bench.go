package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shmbus/shmbus/bench"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

const benchLong = `Bench measures every IPC method of this machine between two processes
and prints the textbook comparison table with measured figures beside it:
pipes, FIFOs, UNIX stream, datagram and seqpacket sockets, TCP over
loopback, POSIX and System V message queues, signals, eventfd, shmbus in
its modes, a minimal shared-memory ring (the reference a ring in Go can
reach) and Go channels inside one process.

For each message size it measures round trips (ping-pong: percentiles of
every round trip after a warm-up, from an HdrHistogram) and one-way
throughput (timed by the receiver). A method that cannot carry a size says
so, with the limit, instead of failing. Then it measures the CPU time that a
blocked receiver uses while nothing arrives.

Table 1 shows the qualitative columns and the figures at 64 B (or the
smallest size measured; † marks a method that carries no payload, or only an
8-byte counter, measured at that size); table 2 one-way throughput by size;
table 3 the round-trip median by size. A memcpy reference (one core copying
memory larger than the last-level cache) and the idle cost follow. The
tables fit the terminal's width (80 columns when stdout is not a terminal,
or --width). docs/benchmarks.md explains every figure and the JSON schema
(--json).

--sizes takes a LIST of SIZEs (see 'shmbus --help'), from 8 bytes to
16MiB: 8,64,1k,64k,1M. --methods takes the rows' names and memcpy.

A full run takes about a minute; --quick (sizes 64 and 64k, 100ms per
figure) well under one. The machine should be otherwise idle: other load
shows up in the figures. --load N starts N busy processes for the run, to
see the methods on a busy machine instead.`

func (a *app) benchCmd() *cobra.Command {
	var (
		opts    bench.Options
		quick   bool
		sizes   []int
		texts   []string // sizes as typed
		cpus    []int
		asJSON  bool
		plot    string
		methods []string
		width   int
		targets bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure every IPC method of this machine against shmbus",
		Long:  benchLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if quick {
				opts.Sizes = bench.QuickSizes
				if !f.Changed("duration") {
					opts.Duration = bench.QuickDuration
				}
			}
			if f.Changed("sizes") {
				if err := checkBenchSizes(sizes, texts); err != nil {
					return usagef("bench: %v", err)
				}
				opts.Sizes = sizes
			}
			if f.Changed("methods") {
				opts.Methods = methods
			}
			if opts.Duration <= 0 {
				return usagef("bench: --duration must be positive")
			}
			if f.Changed("warmup") && opts.Warmup <= 0 {
				opts.Warmup = -1 // no warm-up
			}
			if f.Changed("idle") && opts.Idle <= 0 {
				opts.Idle = -1 // skip
			}
			if f.Changed("cpu") {
				opts.CPUs = cpus
			}
			if f.Changed("width") && width < minWidth {
				return usagef("bench: --width %d: at least %d columns", width, minWidth)
			}
			if f.Changed("load") && (opts.Load < 0 || opts.Load > bench.MaxLoad) {
				return usagef("bench: --load %d: from 0 to %d busy processes", opts.Load, bench.MaxLoad)
			}
			if plot != "" {
				if !plotFormat(plot) {
					return usagef("bench: --plot %q: the file name must end in .svg or .png", plot)
				}
				if err := checkWritableDir(plot); err != nil {
					return fmt.Errorf("bench: --plot: %w", err)
				}
			}
			if !f.Changed("width") {
				width = terminalWidth(a.stdout)
			}
			opts.Dir = a.dir
			var st *statusLine
			if stderrIsTerminal(a.stderr) {
				st = &statusLine{w: a.stderr, cols: terminalWidth(a.stderr)}
				opts.Progress = st.show
			}
			rep, err := bench.Run(cmd.Context(), opts)
			st.clear() // before anything else is written
			if errors.Is(err, bench.ErrBadOptions) || errors.Is(err, bench.ErrUnknownMethod) {
				return usagef("%v", err)
			}
			if err != nil && rep == nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false) // targets read ">= 10", not "\u003e= 10"
				if werr := enc.Encode(rep); werr != nil {
					return werr
				}
			} else {
				writeBenchText(a.stdout, rep, textOptions{width: width, targets: targets})
			}
			if err != nil {
				return err
			}
			if plot != "" {
				if err := writeBenchPlot(plot, rep); err != nil {
					return fmt.Errorf("bench: --plot: %w", err)
				}
			}
			if err := rep.Failed(); err != nil {
				return fmt.Errorf("bench: some measurements failed: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "sizes 64 and 64k, 100ms per figure: well under a minute")
	f.Var(listValue{&methods, "method", bench.MethodNames()}, "methods", "measure only these methods (default all)")
	f.Var(sizeListValue{&sizes, &texts}, "sizes", "message sizes (default 8,64,1k,64k,1m)")
	opts.Duration, opts.Idle = bench.DefaultDuration, bench.DefaultIdle
	f.Var(durValue{&opts.Duration}, "duration", "measured time of each figure")
	f.Var(durValue{&opts.Warmup}, "warmup", "traffic before each figure that is not counted (default a quarter of --duration, at least 20ms)")
	f.Var(durValue{&opts.Idle}, "idle", "window of the idle-cost figures; 0 skips them")
	f.Var(cpuPairValue{&cpus}, "cpu", "pin this process to CPU A and the peer processes to CPU B")
	f.BoolVar(&opts.Verify, "verify", false, "compare every byte of every message in throughput runs too (slower)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON (schema "+bench.Schema+")")
	f.StringVar(&plot, "plot", "", "draw latency percentiles and throughput into the file `PATH` (.svg or .png)")
	cmd.MarkFlagFilename("plot", "svg", "png")
	f.IntVar(&width, "width", 0, "lay the text report out in `N` columns (default: the terminal's width, or 80)")
	f.BoolVar(&targets, "targets", false, "end the text report with the project's performance targets checked against this run")
	f.IntVar(&opts.Load, "load", 0, "keep `N` busy processes (normal priority, not pinned) running during the run")
	completeEnums(cmd)
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// parseSizes parses the LIST of SIZEs "8,64,1k,64k,1m" that bench can
// measure.
func parseSizes(s string) ([]int, error) {
	var sizes []int
	var texts []string
	if err := (sizeListValue{&sizes, &texts}).Set(s); err != nil {
		return nil, err
	}
	return sizes, checkBenchSizes(sizes, texts)
}

// checkBenchSizes refuses sizes bench cannot measure, echoing them as typed.
func checkBenchSizes(sizes []int, texts []string) error {
	for i, n := range sizes {
		switch {
		case n > bench.MaxSize:
			return fmt.Errorf("invalid size %q for --sizes: at most %s", texts[i], formatSize(bench.MaxSize))
		case n < bench.MinSize:
			return fmt.Errorf("invalid size %q for --sizes: at least %d bytes (every message carries an 8-byte sequence number)",
				texts[i], bench.MinSize)
		}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// stderrIsTerminal decides whether bench shows its progress line; tests
// replace it.
var stderrIsTerminal = isTerminal

// terminalWidth is the width of the terminal w writes to, or defaultWidth
// when w is not a terminal.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			return cols
		}
	}
	return defaultWidth
}

func plotFormat(file string) bool {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".svg", ".png":
		return true
	}
	return false
}

// checkWritableDir checks, before a run, that a file can be made where
// file goes: its directory exists and takes a new file.
func checkWritableDir(file string) error {
	dir := filepath.Dir(file)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %s is not a directory", file, dir)
	}
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory", file)
	}
	probe, err := os.CreateTemp(dir, ".shmbus-bench-*")
	if err != nil {
		return fmt.Errorf("%s: cannot write in %s: %w", file, dir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// statusLine is the progress indicator: one line on a terminal, rewritten
// in place. A run is a known list of steps of about equal length, so a
// counter and the step's name say all a bar would.
type statusLine struct {
	w     io.Writer
	cols  int // the terminal's width: a longer line would wrap and could not be rewritten
	width int // of the line shown
	start time.Time
}

func (s *statusLine) show(st bench.Step) {
	if s.start.IsZero() {
		s.start = time.Now()
	}
	line := []rune(fmt.Sprintf("bench: %v (%v)", st, time.Since(s.start).Round(time.Second)))
	if s.cols > 1 && len(line) > s.cols-1 {
		line = line[:s.cols-1]
	}
	pad := max(s.width-len(line), 0)
	s.width = len(line)
	fmt.Fprintf(s.w, "\r%s%s", string(line), strings.Repeat(" ", pad))
}

// clear blanks the line shown, if any, and leaves the cursor at its start.
func (s *statusLine) clear() {
	if s != nil && s.width > 0 {
		fmt.Fprintf(s.w, "\r%s\r", strings.Repeat(" ", s.width))
		s.width = 0
	}
}
