package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
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

SIZES are numbers of bytes with an optional k, m, KiB or MiB suffix
(powers of 1024): 8,64,1k,64k,1m. METHODS are the rows' names and memcpy.

A full run takes about a minute; --quick (sizes 64 and 64k, 100ms per
figure) well under one. The machine should be otherwise idle: other load
shows up in the figures. --load N starts N busy processes for the run, to
see the methods on a busy machine instead.`

func (a *app) benchCmd() *cobra.Command {
	var (
		opts    bench.Options
		quick   bool
		sizes   string
		cpus    string
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
				s, err := parseSizes(sizes)
				if err != nil {
					return usagef("bench: --sizes: %v", err)
				}
				opts.Sizes = s
			}
			if f.Changed("methods") {
				known := bench.MethodNames()
				for _, m := range methods {
					if !contains(known, m) {
						return usagef("bench: --methods: unknown method %q (known: %s)", m, strings.Join(known, ", "))
					}
				}
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
				c, err := parseCPUs(cpus)
				if err != nil {
					return usagef("bench: --cpu: %v", err)
				}
				opts.CPUs = c
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
	f.StringSliceVar(&methods, "methods", nil, "measure only these methods (comma-separated; default all)")
	f.StringVar(&sizes, "sizes", "", "message `SIZES`, comma-separated (default 8,64,1k,64k,1m)")
	f.DurationVar(&opts.Duration, "duration", bench.DefaultDuration, "measured time of each figure")
	f.DurationVar(&opts.Warmup, "warmup", 0, "traffic before each figure that is not counted (default a quarter of --duration, at least 20ms)")
	f.DurationVar(&opts.Idle, "idle", bench.DefaultIdle, "window of the idle-cost figures; 0 skips them")
	f.StringVar(&cpus, "cpu", "", "pin this process to CPU `A` and the peer processes to CPU B (A,B)")
	f.BoolVar(&opts.Verify, "verify", false, "compare every byte of every message in throughput runs too (slower)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON (schema "+bench.Schema+")")
	f.StringVar(&plot, "plot", "", "draw latency percentiles and throughput into `FILE` (.svg or .png)")
	f.IntVar(&width, "width", 0, "lay the text report out in `COLUMNS` (default: the terminal's width, or 80)")
	f.BoolVar(&targets, "targets", false, "end the text report with the project's performance targets checked against this run")
	f.IntVar(&opts.Load, "load", 0, "keep `N` busy processes (normal priority, not pinned) running during the run")
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

// parseSizes parses "8,64,1k,64k,1m" (k/K/KiB and m/M/MiB are powers of
// 1024; a plain SIZE as elsewhere works too).
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"), strings.HasSuffix(f, "K"):
			f, mult = f[:len(f)-1], 1<<10
		case strings.HasSuffix(f, "m"), strings.HasSuffix(f, "M"):
			f, mult = f[:len(f)-1], 1<<20
		}
		n, err := parseSize(f)
		if err != nil {
			return nil, err
		}
		if n > bench.MaxSize/mult {
			return nil, fmt.Errorf("size %q is larger than %s", f, bench.SizeString(bench.MaxSize))
		}
		n *= mult
		if n < bench.MinSize {
			return nil, fmt.Errorf("size %d is smaller than %d bytes (every message carries an 8-byte sequence number)", n, bench.MinSize)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseCPUs(s string) ([]int, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return nil, fmt.Errorf("%q: want two CPU numbers, A,B", s)
	}
	var out []int
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a CPU number", p)
		}
		out = append(out, n)
	}
	return out, nil
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
