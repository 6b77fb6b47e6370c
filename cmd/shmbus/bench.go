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
table 3 the round-trip median by size. docs/benchmarks.md explains the
method, the columns and the JSON schema (--json).

SIZES are numbers of bytes with an optional k, m, KiB or MiB suffix
(powers of 1024): 8,64,1k,64k,1m.

A full run takes about a minute; --quick (sizes 64 and 64k, 100ms per
figure) well under one. The machine should be otherwise idle: other load
shows up in the figures.`

func (a *app) benchCmd() *cobra.Command {
	var (
		opts    bench.Options
		quick   bool
		sizes   string
		cpus    string
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
	f.StringSliceVar(&methods, "methods", nil, "measure only these methods (comma-separated; default all)")
	f.StringVar(&sizes, "sizes", "", "message `SIZES`, comma-separated (default 8,64,1k,64k,1m)")
	f.DurationVar(&opts.Duration, "duration", bench.DefaultDuration, "measured time of each figure")
	f.DurationVar(&opts.Warmup, "warmup", 0, "traffic before each figure that is not counted (default a quarter of --duration, at least 20ms)")
	f.DurationVar(&opts.Idle, "idle", bench.DefaultIdle, "window of the idle-cost figures; 0 skips them")
	f.StringVar(&cpus, "cpu", "", "pin this process to CPU `A` and the peer processes to CPU B (A,B)")
	f.BoolVar(&opts.Verify, "verify", false, "compare every byte of every message in throughput runs too (slower)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON (schema "+bench.Schema+")")
	f.StringVar(&plot, "plot", "", "draw latency percentiles and throughput into `FILE` (.svg or .png)")
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
