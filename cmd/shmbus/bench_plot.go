package main

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shmbus/shmbus/bench"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The plot of a bench report: one panel of round-trip percentiles at the
// reference size, and one-way throughput by message size in two panels
// (kernel methods; shared memory and channels), each with its legend
// beside it rather than over the data. Both axes of figures are
// logarithmic with the tables' units (100ns, 1µs; 10MB/s, 1GB/s). A
// method has one colour everywhere; its one-message-per-call series is the
// same colour, dashed, with hollow markers. A caption names the host and
// the date.

// panel is one plot and its legend.
type panel struct {
	plot   *plot.Plot
	legend plot.Legend
}

// writeBenchPlot draws the report into file, SVG or PNG by its extension.
func writeBenchPlot(file string, r *bench.Report) error {
	if !plotFormat(file) {
		return fmt.Errorf("%s: want a .svg or .png file", file)
	}
	lat, err := latencyPanel(r)
	if err != nil {
		return err
	}
	panels := []panel{lat}
	tput, err := throughputPanels(r)
	if err != nil {
		return err
	}
	panels = append(panels, tput...)

	const w, panelH, captionH, legendW = 13 * vg.Inch, 5 * vg.Inch, 0.6 * vg.Inch, 2.9 * vg.Inch
	h := vg.Length(len(panels))*panelH + captionH
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if strings.EqualFold(filepath.Ext(file), ".svg") {
		c = vgsvg.New(w, h)
	} else {
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))}
	}
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	body := draw.Crop(dc, 0, 0, captionH, 0)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Points(10), PadBottom: vg.Points(6),
		PadLeft: vg.Points(10), PadRight: vg.Points(10), PadY: vg.Points(24)}
	for i, p := range panels {
		tc := tiles.At(body, 0, i)
		p.plot.Draw(draw.Crop(tc, 0, -legendW, 0, 0))
		p.legend.Draw(draw.Crop(tc, tc.Max.X-tc.Min.X-legendW+vg.Points(12), 0, 0, -vg.Points(24)))
	}
	drawCaption(draw.Crop(dc, vg.Points(14), 0, 0, captionH-h), r)

	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// drawCaption writes the host, the run's settings and the date.
func drawCaption(c draw.Canvas, r *bench.Report) {
	h := r.Host
	pin := "not pinned"
	if p := r.Settings.CPUs; len(p) == 2 {
		pin = fmt.Sprintf("pinned to CPUs %d,%d", p[0], p[1])
	}
	load := ""
	if r.Settings.Load > 0 {
		load = fmt.Sprintf(", %d busy processes", r.Settings.Load)
	}
	line1 := fmt.Sprintf("shmbus bench on %s: %s, %d CPUs, Linux %s, %s", orDash(hostName()), orDash(h.CPUModel), h.CPUs,
		orDash(h.Kernel), h.GoVersion)
	line2 := fmt.Sprintf("%s; %v per figure; %s%s", r.Started.Format("2006-01-02 15:04 MST"),
		r.Settings.Duration.Duration(), pin, load)
	sty := text.Style{Color: color.Black, Font: font.From(plot.DefaultFont, 11), Handler: plot.DefaultTextHandler}
	c.FillText(sty, vg.Point{X: c.Min.X, Y: c.Min.Y + vg.Points(22)}, line1)
	c.FillText(sty, vg.Point{X: c.Min.X, Y: c.Min.Y + vg.Points(8)}, line2)
}

func hostName() string {
	n, _ := os.Hostname()
	return n
}

func refSize(r *bench.Report) int {
	if slices.Contains(r.Settings.Sizes, 64) {
		return 64
	}
	return r.Settings.Sizes[0]
}

// palette are colours that stay distinct from each other (and for the
// common forms of colour blindness, together with the dashes and
// markers that go with them).
var palette = []color.RGBA{
	{0x00, 0x72, 0xb2, 0xff}, // blue
	{0xe6, 0x9f, 0x00, 0xff}, // orange
	{0x00, 0x9e, 0x73, 0xff}, // green
	{0xd5, 0x5e, 0x00, 0xff}, // vermilion
	{0xcc, 0x79, 0xa7, 0xff}, // purple-pink
	{0x56, 0xb4, 0xe9, 0xff}, // sky blue
	{0x66, 0x66, 0x66, 0xff}, // grey
	{0x8c, 0x56, 0x3c, 0xff}, // brown
	{0x6a, 0x3d, 0x9a, 0xff}, // violet
	{0xb8, 0xa4, 0x00, 0xff}, // olive yellow
}

var glyphs = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PyramidGlyph{},
	draw.CrossGlyph{}, draw.PlusGlyph{}}

// style is how a method is drawn: its colour, marker and dashes, the
// same in every panel.
type style struct {
	color  color.RGBA
	glyph  draw.GlyphDrawer
	dashes []vg.Length
}

// styles gives each method of the report its own style. Within a panel of
// up to len(palette) series no two share a colour; methods further apart
// in the list that share one differ in marker and dashes.
func styles(r *bench.Report) map[string]style {
	out := map[string]style{}
	next := map[bool]int{} // per throughput panel: kernel methods, shared memory
	for _, m := range r.Methods {
		if m.Payload != "bytes" {
			continue
		}
		k := next[isSharedMemory(m.Name)]
		next[isSharedMemory(m.Name)]++
		st := style{color: palette[k%len(palette)], glyph: glyphs[k%len(glyphs)]}
		if k >= len(palette) {
			st.dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		}
		out[m.Name] = st
	}
	return out
}

func isSharedMemory(name string) bool {
	return strings.HasPrefix(name, "shmbus") || name == "ring-minimal" || name == "go-chan"
}

// logTicker labels the powers of ten between min and max with label and
// marks the multiples between them without a label.
type logTicker struct{ label func(v float64) string }

func (t logTicker) Ticks(min, max float64) []plot.Tick {
	var out []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		base := math.Pow(10, e)
		for k := 1.0; k < 10; k++ {
			v := k * base
			if v < min*0.999 || v > max*1.001 {
				continue
			}
			tk := plot.Tick{Value: v}
			if k == 1 {
				tk.Label = strings.Replace(t.label(v), "1.0", "1", 1) // a power of ten: 1µs, not 1.0µs
			}
			out = append(out, tk)
		}
	}
	if labelled := slices.IndexFunc(out, func(tk plot.Tick) bool { return tk.Label != "" }); labelled < 0 && len(out) > 0 {
		// Less than a decade: label the ends.
		out[0].Label, out[len(out)-1].Label = t.label(out[0].Value), t.label(out[len(out)-1].Value)
	}
	return out
}

func latencyPanel(r *bench.Report) (panel, error) {
	ref := refSize(r)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Round trip at %s between two processes (ping-pong): median, p99, p99.9", bench.SizeString(ref))
	p.Y.Label.Text = "round trip (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicker{func(v float64) string { return nanos(bench.Nanos(math.Round(v))) }}
	var ticks []plot.Tick
	series := map[string]plotter.XYs{}
	lo, hi := math.Inf(1), 0.0
	for i, m := range r.Methods {
		size := ref
		if m.Payload != "bytes" && len(m.Latency) > 0 {
			size = m.Latency[0].Size
		}
		label := m.Name
		if size != ref {
			label += " (" + bench.SizeString(size) + ")"
		}
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: label})
		l, ok := m.LatencyAt(size)
		if !ok || !l.OK() || l.P50 <= 0 {
			continue
		}
		for _, q := range []struct {
			name string
			v    bench.Nanos
		}{{"median", l.P50}, {"p99", l.P99}, {"p99.9", l.P999}} {
			series[q.name] = append(series[q.name], plotter.XY{X: float64(i), Y: float64(q.v)})
			lo, hi = math.Min(lo, float64(q.v)), math.Max(hi, float64(q.v))
		}
	}
	if len(series["median"]) == 0 {
		return panel{}, errors.New("no round trip was measured: nothing to plot")
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = text.XRight
	p.X.Tick.Label.YAlign = text.YCenter
	p.X.Min, p.X.Max = -0.5, float64(len(r.Methods))-0.5
	p.Y.Min, p.Y.Max = decadeBelow(lo), decadeAbove(hi)
	p.Add(plotter.NewGrid())
	lg := newLegend()
	for i, name := range []string{"median", "p99", "p99.9"} {
		s, err := plotter.NewScatter(series[name])
		if err != nil {
			return panel{}, err
		}
		s.GlyphStyle = draw.GlyphStyle{Color: palette[i], Radius: vg.Points(3.5), Shape: glyphs[i]}
		p.Add(s)
		lg.Add(name, s)
	}
	return panel{p, lg}, nil
}

// throughputPanels draws the kernel methods and the shared-memory ones
// (with Go channels) apart, each method batched (solid) and, where it has
// them, one message per call (dashed, hollow markers).
func throughputPanels(r *bench.Report) ([]panel, error) {
	st := styles(r)
	var out []panel
	for _, shared := range []bool{false, true} {
		p := plot.New()
		if shared {
			p.Title.Text = "One-way throughput by message size: shared memory (and Go channels in one process)"
		} else {
			p.Title.Text = "One-way throughput by message size: kernel methods (one message per call)"
		}
		p.X.Label.Text = "message size (log scale)"
		p.Y.Label.Text = "payload bytes/s (log scale)"
		p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
		p.X.Tick.Marker = sizeTicks(r.Settings.Sizes)
		p.Y.Tick.Marker = logTicker{byteRate}
		lg := newLegend()
		lo, hi := math.Inf(1), 0.0
		add := func(name string, rates []bench.Rate, s style, perCall bool) error {
			var xys plotter.XYs
			for _, t := range rates {
				if t.OK() && t.BytesPerSec > 0 {
					xys = append(xys, plotter.XY{X: float64(t.Size), Y: t.BytesPerSec})
					lo, hi = math.Min(lo, t.BytesPerSec), math.Max(hi, t.BytesPerSec)
				}
			}
			if len(xys) == 0 {
				return nil
			}
			l, sc, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			l.Color, l.Width, l.Dashes = s.color, vg.Points(1.5), s.dashes
			sc.GlyphStyle = draw.GlyphStyle{Color: s.color, Radius: vg.Points(3), Shape: s.glyph}
			if perCall {
				l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
				if g, ok := hollowOf(s.glyph); ok {
					sc.Shape = g
				}
			}
			p.Add(l, sc)
			lg.Add(name, l, sc)
			return nil
		}
		for _, m := range r.Methods {
			if m.Payload != "bytes" || isSharedMemory(m.Name) != shared {
				continue
			}
			name := m.Name
			if len(m.Unbatched) > 0 {
				name += " batched"
			}
			if err := add(name, m.Throughput, st[m.Name], false); err != nil {
				return nil, err
			}
			if err := add(m.Name+" 1/call", m.Unbatched, st[m.Name], true); err != nil {
				return nil, err
			}
		}
		if hi == 0 {
			continue // nothing of this kind measured
		}
		sizes := r.Settings.Sizes
		p.X.Min, p.X.Max = float64(sizes[0])/1.5, float64(sizes[len(sizes)-1])*1.5
		p.Y.Min, p.Y.Max = decadeBelow(lo), decadeAbove(hi)
		p.Add(plotter.NewGrid())
		out = append(out, panel{p, lg})
	}
	if len(out) == 0 {
		return nil, errors.New("no throughput was measured: nothing to plot")
	}
	return out, nil
}

// hollowOf is the outline of a filled marker, for 1/call series.
func hollowOf(g draw.GlyphDrawer) (draw.GlyphDrawer, bool) {
	switch g.(type) {
	case draw.CircleGlyph:
		return draw.RingGlyph{}, true
	case draw.SquareGlyph:
		return draw.BoxGlyph{}, true
	}
	return nil, false
}

func newLegend() plot.Legend {
	lg := plot.NewLegend()
	lg.Top, lg.Left = true, true
	lg.ThumbnailWidth = vg.Points(28)
	lg.TextStyle.Font.Size = vg.Points(10)
	return lg
}

// decadeBelow and decadeAbove widen an axis to whole powers of ten, so
// that at least two labelled ticks show.
func decadeBelow(v float64) float64 { return math.Pow(10, math.Floor(math.Log10(v))) }

func decadeAbove(v float64) float64 {
	e := math.Ceil(math.Log10(v))
	if math.Pow(10, e) == v {
		e++
	}
	return math.Pow(10, e)
}

// sizeTicks labels the message sizes of the run.
func sizeTicks(sizes []int) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, s := range sizes {
		t = append(t, plot.Tick{Value: float64(s), Label: bench.SizeString(s)})
	}
	return t
}
