package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shmbus/shmbus/bench"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// writeBenchPlot draws the report into file, SVG or PNG by its extension:
// on top the round-trip percentiles of every method at the reference size,
// below the one-way throughput of every method by message size, both on
// log scales.
func writeBenchPlot(file string, r *bench.Report) error {
	lat, err := latencyPlot(r)
	if err != nil {
		return err
	}
	tput, err := throughputPlot(r)
	if err != nil {
		return err
	}
	const w, h = 12 * vg.Inch, 14 * vg.Inch
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".svg":
		c = vgsvg.New(w, h)
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))}
	default:
		return fmt.Errorf("%s: want a .svg or .png file", file)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(10), PadBottom: vg.Points(10),
		PadLeft: vg.Points(10), PadRight: vg.Points(10), PadY: vg.Points(30)}
	plots := [][]*plot.Plot{{lat}, {tput}}
	canvases := plot.Align(plots, tiles, dc)
	lat.Draw(canvases[0][0])
	tput.Draw(canvases[1][0])
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

func refSize(r *bench.Report) int {
	if slices.Contains(r.Settings.Sizes, 64) {
		return 64
	}
	return r.Settings.Sizes[0]
}

func latencyPlot(r *bench.Report) (*plot.Plot, error) {
	ref := refSize(r)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Round trip at %s between two processes (ping-pong): p50, p99, p99.9", bench.SizeString(ref))
	p.Y.Label.Text = "round trip (ns, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	series := map[string]plotter.XYs{}
	var ticks []plot.Tick
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
		}{{"p50", l.P50}, {"p99", l.P99}, {"p99.9", l.P999}} {
			series[q.name] = append(series[q.name], plotter.XY{X: float64(i), Y: float64(q.v)})
		}
	}
	if len(series["p50"]) == 0 {
		return nil, errors.New("no round trip was measured: nothing to plot")
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = text.XRight
	p.X.Tick.Label.YAlign = text.YCenter
	p.X.Min, p.X.Max = -0.5, float64(len(r.Methods))-0.5
	if err := plotutil.AddScatters(p, "p50", series["p50"], "p99", series["p99"], "p99.9", series["p99.9"]); err != nil {
		return nil, err
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p, nil
}

func throughputPlot(r *bench.Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "One-way throughput by message size (shmbus: batched)"
	p.X.Label.Text = "message size (bytes, log scale)"
	p.Y.Label.Text = "MB/s (log scale)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(r.Settings.Sizes)
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var args []any
	for _, m := range r.Methods {
		var xys plotter.XYs
		for _, t := range m.Throughput {
			if t.OK() && t.BytesPerSec > 0 {
				xys = append(xys, plotter.XY{X: float64(t.Size), Y: t.BytesPerSec / 1e6})
			}
		}
		if len(xys) > 0 {
			args = append(args, m.Name, xys)
		}
	}
	if len(args) == 0 {
		return nil, errors.New("no throughput was measured: nothing to plot")
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p, nil
}

// sizeTicks labels the message sizes of the run.
func sizeTicks(sizes []int) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, s := range sizes {
		t = append(t, plot.Tick{Value: float64(s), Label: bench.SizeString(s)})
	}
	return t
}
