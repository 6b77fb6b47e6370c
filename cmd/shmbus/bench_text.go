package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shmbus/shmbus/bench"
)

// The text form of a bench report: prose wrapped to the width, and tables
// that fit it. A table wider than the width is split into blocks of
// columns, each repeating the method column, at the boundaries between
// groups of columns where it can be. Figures are written with two or
// three significant digits and short units (1.2µs, 32M/s, 16GB/s); the
// JSON has them in full.

// textOptions are how the text report is laid out.
type textOptions struct {
	width   int  // columns of the terminal (or --width); every line fits unless one word does not
	targets bool // end with the project's targets checked against this run (--targets)
}

// defaultWidth is the width when stdout is not a terminal and --width is
// not given.
const defaultWidth = 80

// minWidth is the narrowest layout --width accepts.
const minWidth = 40

// writeBenchText prints a report: a header, the three tables, the memcpy
// reference, the idle costs and, if asked for, the targets.
func writeBenchText(out io.Writer, r *bench.Report, o textOptions) {
	w := max(o.width, minWidth)
	p := &printer{out: out, width: w}
	h := r.Host
	p.para(fmt.Sprintf("shmbus bench: %s, %d CPUs, Linux %s, %s", orDash(h.CPUModel), h.CPUs, orDash(h.Kernel), h.GoVersion))
	pin := "not pinned"
	if c := r.Settings.CPUs; len(c) == 2 {
		pin = fmt.Sprintf("measuring process on CPU %d, peers on CPU %d", c[0], c[1])
	}
	load := ""
	if n := r.Settings.Load; n > 0 {
		load = fmt.Sprintf("; %d busy %s running (--load)", n, plural(n, "process", "processes"))
	}
	p.para(fmt.Sprintf("%s: %v per figure after %v of warm-up; %s%s; the run took %s.",
		r.Started.Format("2006-01-02 15:04 MST"), r.Settings.Duration.Duration(), r.Settings.Warmup.Duration(), pin, load, humanDuration(r.Elapsed.Duration())))

	sizes := r.Settings.Sizes
	if len(r.Methods) > 0 && len(sizes) > 0 {
		ref := refSize(r)
		writeTable1(p, r, ref)
		writeTable2(p, r, sizes)
		writeTable3(p, r, sizes)
	}
	if m := r.Memcpy; m != nil {
		p.blank()
		if m.Error != "" {
			p.para("memcpy reference: FAILED: " + m.Error)
		} else {
			p.para(fmt.Sprintf("memcpy reference: one core copying %s buffers (larger than the %s last-level cache) in %s pieces: %s.",
				bench.SizeString(m.Buffer), cacheString(m.Cache), bench.SizeString(m.Chunk), byteRate(m.BytesPerSec)))
		}
	}
	if len(r.Idle) > 0 {
		p.blank()
		p.para(fmt.Sprintf("Idle cost: CPU time (user + system, getrusage) a receiver process uses while it waits "+
			"%v for a message that does not come:", r.Settings.Idle.Duration()))
		t := &table{header: []string{"", "CPU PER S", "CPU", "WAITED"}, right: []bool{false, true, true, true}}
		for _, c := range r.Idle {
			if c.Error != "" {
				t.rows = append(t.rows, []string{"  " + c.Method, "FAILED", "", ""})
				continue
			}
			t.rows = append(t.rows, []string{"  " + c.Method, fmt.Sprintf("%.2f ms", c.MsPerSec),
				humanDuration(c.CPU.Duration()), humanDuration(c.Wall.Duration())})
		}
		t.header[0] = "  METHOD"
		t.write(p)
	}
	if b := r.Board; b != nil {
		writeBoard(p, b)
	}
	if o.targets && len(r.Ratios) > 0 {
		p.blank()
		p.para("Targets: the project's performance goals (docs/benchmarks.md), checked against this run's figures:")
		for _, q := range r.Ratios {
			met := "met"
			if !q.Met {
				met = "not met"
			}
			line := fmt.Sprintf("  %s: %.3f, target %s: %s", q.Name, q.Value, q.Target, met)
			if utf8.RuneCountInString(line) <= w {
				p.line(line)
				continue
			}
			p.line("  " + q.Name + ":")
			p.line(fmt.Sprintf("      %.3f, target %s: %s", q.Value, q.Target, met))
		}
	}
}

// writeBoard prints the board section: Get and Put per call, and the
// watch round trip beside the bus's futex round trip.
func writeBoard(p *printer, b *bench.BoardReport) {
	p.blank()
	p.para(fmt.Sprintf("Boards (%s values, one key): Get and Put per call, from batches of %d calls; the watch round trip "+
		"(a Put wakes a watcher in the other process, which puts the value back: two puts, two wake-ups) beside "+
		"the shmbus-futex round trip measured right after it:", bench.SizeString(b.ValueSize), b.Get.Batch))
	t := &table{header: []string{"  FIGURE", "p50", "p99", "max"}, right: []bool{false, true, true, true}}
	calls := func(name string, c bench.BoardCalls) {
		if c.Error != "" {
			t.rows = append(t.rows, []string{"  " + name, "FAILED", "", ""})
			return
		}
		t.rows = append(t.rows, []string{"  " + name, nanos(c.P50), nanos(c.P99), nanos(c.Max)})
	}
	calls("get", b.Get)
	calls("get, a process writing", b.GetWriter)
	calls("put", b.Put)
	for _, l := range []struct {
		name string
		l    bench.Latency
	}{{"watch round trip", b.Watch}, {"shmbus-futex round trip", b.BusFutex}} {
		if !l.l.OK() {
			t.rows = append(t.rows, []string{"  " + l.name, "FAILED", "", ""})
			continue
		}
		t.rows = append(t.rows, []string{"  " + l.name, nanos(l.l.P50), nanos(l.l.P99), nanos(l.l.Max)})
	}
	t.write(p)
	if w := b.GetWriter; w.Error == "" && w.WriterPuts > 0 {
		p.para(fmt.Sprintf("(the writing process put the key at %s meanwhile)", msgRate(w.WriterPuts)))
	}
	for _, e := range []string{b.Get.Error, b.GetWriter.Error, b.Put.Error, b.Watch.Error, b.BusFutex.Error} {
		if e != "" {
			p.para("  FAILED: " + e)
		}
	}
}

func writeTable1(p *printer, r *bench.Report, ref int) {
	p.blank()
	p.para(fmt.Sprintf("Table 1. Methods: their properties on Linux, and the round trip and one-way rate at %s "+
		"(batched where Table 2 has a 1/call row).", bench.SizeString(ref)))
	p.blank()
	t := &table{
		header: []string{"METHOD", "CONNECTIONLESS", "RELIABLE", "FLOW CTL", "RECORDS", "PRIORITIES",
			"RTT p50", "p99", "p99.9", "max", "MSGS/S", "BYTES/S"},
		group: []int{0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3},
		right: []bool{false, false, false, false, false, false, true, true, true, true, true, true},
	}
	var n notes
	var own []string // methods measured at their own size
	for _, m := range r.Methods {
		pr := m.Properties
		row := []string{m.Name, propYesNo(pr.Connectionless), propYesNo(pr.Reliable), propYesNo(pr.FlowControl),
			propYesNo(pr.Records), propYesNo(pr.Priorities)}
		size, mark := ref, ""
		if m.Payload != "bytes" && len(m.Latency) > 0 {
			size, mark = m.Latency[0].Size, "†"
			own = append(own, ownSize(m))
		}
		if l, ok := m.LatencyAt(size); ok && l.OK() {
			row = append(row, nanos(l.P50)+mark, nanos(l.P99), nanos(l.P999), nanos(l.Max))
		} else {
			row = append(row, n.cell(l.Cell, ok), "", "", "")
		}
		if t, ok := m.ThroughputAt(size); ok && t.OK() {
			row = append(row, msgRate(t.MsgsPerSec)+mark, byteRate(t.BytesPerSec))
		} else {
			row = append(row, n.cell(t.Cell, ok), "")
		}
		t.rows = append(t.rows, row)
	}
	t.write(p)
	if len(own) > 0 {
		p.blank()
		p.para("† measured at the method's own size, not " + bench.SizeString(ref) + ": " + strings.Join(own, "; ") + ".")
	}
	n.write(p)
}

// ownSize says what a method without a byte payload carries.
func ownSize(m bench.MethodReport) string {
	what := m.Name + " carries an " + m.Payload
	if m.Payload == "none" {
		what = m.Name + " carries no payload"
	}
	if len(m.Throughput) == 0 {
		what += " (round trips only)"
	}
	return what
}

func writeTable2(p *printer, r *bench.Report, sizes []int) {
	p.blank()
	p.para("Table 2. One-way throughput by message size: messages and bytes per second. " +
		"Rows without a suffix send in batches where the method has them (shmbus SendBatch/Poll, ring-minimal); " +
		"1/call rows send and receive one message per call, as every kernel method does.")
	p.blank()
	t := sizeTable(sizes)
	var n notes
	row := func(name string, get func(int) (bench.Rate, bool)) {
		cells := []string{name}
		for _, s := range sizes {
			v, ok := get(s)
			if ok && v.OK() {
				cells = append(cells, fmt.Sprintf("%6s %7s", msgRate(v.MsgsPerSec), byteRate(v.BytesPerSec)))
			} else {
				cells = append(cells, n.cell(v.Cell, ok))
			}
		}
		t.rows = append(t.rows, cells)
	}
	var none []bench.MethodReport
	for _, m := range r.Methods {
		if m.Payload != "bytes" {
			none = append(none, m)
			continue
		}
		row(m.Name, m.ThroughputAt)
		if len(m.Unbatched) > 0 {
			row(m.Name+" 1/call", m.UnbatchedAt)
		}
	}
	t.write(p)
	if len(none) > 0 {
		var names []string
		for _, m := range none {
			names = append(names, m.Name)
		}
		p.blank()
		p.para(joinAnd(names) + " carry no messages of these sizes, so Tables 2 and 3 leave them out " +
			"(Table 1 has their figures).")
	}
	n.write(p)
}

func writeTable3(p *printer, r *bench.Report, sizes []int) {
	p.blank()
	p.para("Table 3. Round trip (ping-pong) median by message size.")
	p.blank()
	t := sizeTable(sizes)
	var n notes
	for _, m := range r.Methods {
		if m.Payload != "bytes" {
			continue // said under Table 2
		}
		cells := []string{m.Name}
		for _, s := range sizes {
			l, ok := m.LatencyAt(s)
			if ok && l.OK() {
				cells = append(cells, nanos(l.P50))
			} else {
				cells = append(cells, n.cell(l.Cell, ok))
			}
		}
		t.rows = append(t.rows, cells)
	}
	t.write(p)
	n.write(p)
}

func sizeTable(sizes []int) *table {
	t := &table{header: []string{"METHOD"}, right: []bool{false}}
	for i, s := range sizes {
		t.header = append(t.header, bench.SizeString(s))
		t.group = append(t.group, i)
		t.right = append(t.right, true)
	}
	t.group = append([]int{-1}, t.group...)
	return t
}

// notes numbers the reasons of a table's missing figures: the cell shows
// "n/a¹" and the note under the table the reason, as the JSON has it
// ("n/a: limit 8192 B (kernel.msgmax)").
type notes struct{ reasons []string }

var superscripts = []rune("⁰¹²³⁴⁵⁶⁷⁸⁹")

func superscript(n int) string {
	var b []rune
	for _, d := range fmt.Sprint(n) {
		b = append(b, superscripts[d-'0'])
	}
	return string(b)
}

// cell is what a table shows for a figure that is missing.
func (n *notes) cell(c bench.Cell, measured bool) string {
	switch {
	case !measured:
		return "-"
	case c.Unavailable != "":
		why := c.Unavailable
		if !strings.HasPrefix(why, "n/a") {
			why = "n/a: " + why
		}
		i := slices.Index(n.reasons, why)
		if i < 0 {
			n.reasons = append(n.reasons, why)
			i = len(n.reasons) - 1
		}
		return "n/a" + superscript(i+1)
	case c.Error != "":
		return "FAILED"
	}
	return "-"
}

func (n *notes) write(p *printer) {
	if len(n.reasons) == 0 {
		return
	}
	p.blank()
	for i, why := range n.reasons {
		p.hanging(superscript(i+1)+" ", why)
	}
}

// printer writes lines of at most width columns.
type printer struct {
	out   io.Writer
	width int
}

func (p *printer) line(s string) { fmt.Fprintln(p.out, strings.TrimRight(s, " ")) }
func (p *printer) blank()        { fmt.Fprintln(p.out) }

// para writes s wrapped at word boundaries.
func (p *printer) para(s string) { p.hanging("", s) }

// hanging writes s wrapped, the first line after lead and the others
// indented by its width.
func (p *printer) hanging(lead, s string) {
	indent := strings.Repeat(" ", utf8.RuneCountInString(lead))
	line := lead
	n := utf8.RuneCountInString(lead)
	empty := true
	for _, word := range strings.Fields(s) {
		k := utf8.RuneCountInString(word)
		if !empty && n+1+k > p.width {
			p.line(line)
			line, n, empty = indent, len(indent), true
		}
		if !empty {
			line += " "
			n++
		}
		line += word
		n += k
		empty = false
	}
	p.line(line)
}

// table is columns of cells; column 0 names the row and is repeated in
// every block when the table is split to fit.
type table struct {
	header []string
	rows   [][]string
	group  []int  // per column: columns of one group stay in one block when they can (nil: one group)
	right  []bool // per column: right-aligned (figures)
}

const colGap = 2

func (t *table) widths() []int {
	w := make([]int, len(t.header))
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, c := range row {
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	return w
}

// blocks splits columns 1.. into runs that fit width beside column 0.
func (t *table) blocks(width int) [][]int {
	w := t.widths()
	groupOf := func(i int) int {
		if t.group == nil {
			return 0
		}
		return t.group[i]
	}
	// The groups, in order, as runs of columns.
	var groups [][]int
	for i := 1; i < len(w); i++ {
		if len(groups) == 0 || groupOf(i) != groupOf(i-1) {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], i)
	}
	span := func(cols []int) int {
		n := 0
		for _, c := range cols {
			n += colGap + w[c]
		}
		return n
	}
	room := width - w[0]
	var out [][]int
	var cur []int
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	for _, g := range groups {
		switch {
		case span(cur)+span(g) <= room:
			cur = append(cur, g...)
		case span(g) <= room:
			flush()
			cur = append(cur, g...)
		default: // a group wider than the room: split it by columns
			for _, c := range g {
				if len(cur) > 0 && span(cur)+span([]int{c}) > room {
					flush()
				}
				cur = append(cur, c)
			}
		}
	}
	flush()
	return out
}

func (t *table) write(p *printer) {
	w := t.widths()
	for b, cols := range t.blocks(p.width) {
		if b > 0 {
			p.blank()
		}
		for _, row := range append([][]string{t.header}, t.rows...) {
			var sb strings.Builder
			sb.WriteString(pad(row[0], w[0], false))
			for _, c := range cols {
				sb.WriteString(strings.Repeat(" ", colGap))
				sb.WriteString(pad(row[c], w[c], t.right[c]))
			}
			p.line(sb.String())
		}
	}
}

// pad fills s to n columns (runes: µ, † and superscripts are one column).
func pad(s string, n int, right bool) string {
	fill := strings.Repeat(" ", max(n-utf8.RuneCountInString(s), 0))
	if right {
		return fill + s
	}
	return s + fill
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// joinAnd writes "a", "a and b", "a, b and c".
func joinAnd(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// humanDuration writes a duration for people: 391µs, 1.5ms, 850ms,
// 12.3s, 1m12s.
func humanDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second-500*time.Microsecond: // what rounds to a second is written as one: 1s, not 1.0s
		return nanos(bench.Nanos(d))
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// compact writes v in the largest of units (each 1000 times the one
// before) that leaves it at least 1, with two significant digits below 10
// and none after the point above: 1.2, 32, 950.
func compact(v float64, units ...string) string {
	i := 0
	for i < len(units)-1 && v >= 999.5 {
		v /= 1000
		i++
	}
	switch {
	case i == 0 && v == math.Trunc(v), v >= 9.95:
		return fmt.Sprintf("%.0f%s", v, units[i])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

// nanos writes a latency: 161ns, 1.2µs, 34µs, 2.1ms.
func nanos(n bench.Nanos) string { return compact(float64(n), "ns", "µs", "ms", "s") }

// msgRate writes messages per second: 950/s, 41k/s, 2.7M/s, 32M/s.
func msgRate(v float64) string { return compact(math.Round(v), "/s", "k/s", "M/s", "G/s") }

// byteRate writes bytes per second (powers of 1000): 22MB/s, 9.7GB/s.
func byteRate(v float64) string { return compact(math.Round(v), "B/s", "kB/s", "MB/s", "GB/s", "TB/s") }

// cacheString writes a cache size, or "unknown" if the system reports none.
func cacheString(n int) string {
	if n <= 0 {
		return "unknown"
	}
	return bench.SizeString(n)
}

func propYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
