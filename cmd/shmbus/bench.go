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
table 3 the round-trip median by size. docs/benchmarks.md explains the
method, the columns and the JSON schema (--json).

--sizes takes a LIST of SIZEs (see 'shmbus --help'), from 8 bytes to
16MiB: 8,64,1k,64k,1M.

A full run takes about a minute; --quick (sizes 64 and 64k, 100ms per
figure) well under one. The machine should be otherwise idle: other load
shows up in the figures.`

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
			if plot != "" {
				switch strings.ToLower(filepath.Ext(plot)) {
				case ".svg", ".png":
				default:
					return usagef("bench: --plot %q: the file name must end in .svg or .png", plot)
				}
			}
			opts.Dir = a.dir
			if isTerminal(a.stderr) {
				st := &statusLine{w: a.stderr}
				opts.Progress = st.show
				defer st.clear()
			}
			rep, err := bench.Run(cmd.Context(), opts)
			if errors.Is(err, bench.ErrBadOptions) || errors.Is(err, bench.ErrUnknownMethod) {
				return usagef("%v", err)
			}
			if err != nil && rep == nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if werr := enc.Encode(rep); werr != nil {
					return werr
				}
			} else {
				writeBenchText(a.stdout, rep)
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

// statusLine is the progress indicator: one line on a terminal, rewritten
// in place. A run is a known list of steps of about equal length, so a
// counter and the step's name say all a bar would.
type statusLine struct {
	w     io.Writer
	width int
	start time.Time
}

func (s *statusLine) show(st bench.Step) {
	if s.start.IsZero() {
		s.start = time.Now()
	}
	line := fmt.Sprintf("bench: %v (%v)", st, time.Since(s.start).Round(time.Second))
	pad := max(s.width-len(line), 0)
	s.width = len(line)
	fmt.Fprintf(s.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

func (s *statusLine) clear() {
	if s.width > 0 {
		fmt.Fprintf(s.w, "\r%s\r", strings.Repeat(" ", s.width))
	}
}
