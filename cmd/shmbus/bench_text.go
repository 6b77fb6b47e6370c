package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shmbus/shmbus/bench"
)

// writeBenchText prints a report as the three tables, the idle costs and
// the target ratios.
func writeBenchText(out io.Writer, r *bench.Report) {
	h := r.Host
	fmt.Fprintf(out, "shmbus bench: %s, %d CPUs, Linux %s, %s\n", orDash(h.CPUModel), h.CPUs, orDash(h.Kernel), h.GoVersion)
	pin := "not pinned"
	if c := r.Settings.CPUs; len(c) == 2 {
		pin = fmt.Sprintf("measuring process on CPU %d, peers on CPU %d", c[0], c[1])
	}
	fmt.Fprintf(out, "%v per figure after %v of warm-up; %s; run took %v\n",
		r.Settings.Duration.Duration(), r.Settings.Warmup.Duration(), pin, r.Elapsed.Duration().Round(time.Second))
	sizes := r.Settings.Sizes
	ref := sizes[0]
	if slices.Contains(sizes, 64) {
		ref = 64
	}

	fmt.Fprintf(out, "\nTable 1. Methods: properties on Linux, round trip and one-way rate at %s\n\n", bench.SizeString(ref))
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "METHOD\tCONNECTIONLESS\tRELIABLE\tFLOW CTL\tRECORDS\tPRIORITIES\tRTT p50\tp99\tp99.9\tmax\tMSGS/S\tMB/S")
	for _, m := range r.Methods {
		p := m.Properties
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t", m.Name, yesNo(p.Connectionless), yesNo(p.Reliable), yesNo(p.FlowControl),
			yesNo(p.Records), yesNo(p.Priorities))
		size, mark := ref, ""
		if m.Payload != "bytes" && len(m.Latency) > 0 {
			size, mark = m.Latency[0].Size, "†"
		}
		if l, ok := m.LatencyAt(size); ok && l.OK() {
			fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t", nanos(l.P50), mark, nanos(l.P99), nanos(l.P999), nanos(l.Max))
		} else {
			fmt.Fprintf(w, "%s\t\t\t\t", cellNote(l.Cell, ok))
		}
		if t, ok := m.ThroughputAt(size); ok && t.OK() {
			fmt.Fprintf(w, "%s%s\t%.0f\n", rate(t.MsgsPerSec), mark, t.BytesPerSec/1e6)
		} else {
			fmt.Fprintf(w, "%s\t\n", cellNote(t.Cell, ok))
		}
	}
	w.Flush()
	fmt.Fprintln(out, "\n† signal carries no payload and eventfd an 8-byte counter: their own size, not "+bench.SizeString(ref)+".")

	fmt.Fprintln(out, "\nTable 2. One-way throughput by message size (MB/s, messages/s); shmbus batched, and one message per call (1/call)")
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "METHOD\t%s\t\n", sizeHeader(sizes))
	row := func(name string, get func(int) (bench.Rate, bool)) {
		fmt.Fprintf(w, "%s\t", name)
		for _, s := range sizes {
			t, ok := get(s)
			if ok && t.OK() {
				fmt.Fprintf(w, "%.0f MB/s %s/s\t", t.BytesPerSec/1e6, rate(t.MsgsPerSec))
			} else {
				fmt.Fprintf(w, "%s\t", cellNote(t.Cell, ok))
			}
		}
		fmt.Fprintln(w)
	}
	for _, m := range r.Methods {
		if m.Payload != "bytes" {
			fmt.Fprintf(w, "%s\t%s\n", m.Name, strings.Repeat(onlyNote(m)+"\t", len(sizes)))
			continue
		}
		row(m.Name, m.ThroughputAt)
		if len(m.Unbatched) > 0 {
			row(m.Name+" 1/call", m.UnbatchedAt)
		}
	}
	w.Flush()

	fmt.Fprintln(out, "\nTable 3. Round trip p50 by message size")
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "METHOD\t%s\t\n", sizeHeader(sizes))
	for _, m := range r.Methods {
		if m.Payload != "bytes" {
			fmt.Fprintf(w, "%s\t%s\n", m.Name, strings.Repeat(onlyNote(m)+"\t", len(sizes)))
			continue
		}
		fmt.Fprintf(w, "%s\t", m.Name)
		for _, s := range sizes {
			l, ok := m.LatencyAt(s)
			if ok && l.OK() {
				fmt.Fprintf(w, "%s\t", nanos(l.P50))
			} else {
				fmt.Fprintf(w, "%s\t", cellNote(l.Cell, ok))
			}
		}
		fmt.Fprintln(w)
	}
	w.Flush()

	if len(r.Idle) > 0 {
		fmt.Fprintf(out, "\nIdle cost: CPU time of a blocked receiver process over %v (getrusage, user+system)\n", r.Settings.Idle.Duration())
		for _, c := range r.Idle {
			if c.Error != "" {
				fmt.Fprintf(out, "  %-13s error: %s\n", c.Method, c.Error)
				continue
			}
			fmt.Fprintf(out, "  %-13s %.3f ms CPU per s (%v in %v)\n", c.Method, c.MsPerSec, c.CPU.Duration(), c.Wall.Duration().Round(time.Millisecond))
		}
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(out, "\nTargets (this run)")
		for _, q := range r.Ratios {
			met := "met"
			if !q.Met {
				met = "NOT met"
			}
			fmt.Fprintf(out, "  %-55s %8.3f  target %s: %s\n", q.Name, q.Value, q.Target, met)
		}
	}
}

// onlyNote fills the size columns of a method that carries no messages.
func onlyNote(m bench.MethodReport) string {
	if m.Payload == "none" {
		return "n/a (no payload)"
	}
	return "n/a (" + m.Payload + ")"
}

func sizeHeader(sizes []int) string {
	s := make([]string, len(sizes))
	for i, n := range sizes {
		s[i] = bench.SizeString(n)
	}
	return strings.Join(s, "\t")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cellNote is what a table shows for a figure that is missing.
func cellNote(c bench.Cell, measured bool) string {
	switch {
	case !measured:
		return "-"
	case c.Unavailable != "" && c.Limit > 0 && strings.Contains(c.Unavailable, "limit"):
		return fmt.Sprintf("n/a (limit %d B)", c.Limit)
	case c.Unavailable != "":
		return strings.TrimPrefix(c.Unavailable, "n/a: ")
	case c.Error != "":
		return "FAILED"
	}
	return "-"
}

// nanos writes a latency with three significant digits.
func nanos(n bench.Nanos) string {
	d := float64(n)
	switch {
	case d < 1e3:
		return fmt.Sprintf("%.0fns", d)
	case d < 1e6:
		return sig3(d/1e3) + "µs"
	case d < 1e9:
		return sig3(d/1e6) + "ms"
	}
	return sig3(d/1e9) + "s"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// rate writes a message rate: 2.47M, 812k, 950.
func rate(v float64) string {
	switch {
	case v >= 1e6:
		return sig3(v/1e6) + "M"
	case v >= 1e3:
		return sig3(v/1e3) + "k"
	}
	return fmt.Sprintf("%.0f", v)
}
