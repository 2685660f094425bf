package main

import (
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// percentileTicks label the x axis of a latency-by-percentile plot, where x
// is -log10(1 - q): 0 is p0, 0.3 is p50, 1 is p90, 2 is p99, and so on, so
// that the tail gets as much room as the body.
type percentileTicks struct{}

func (percentileTicks) Ticks(min, max float64) []plot.Tick {
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"}
	out := []plot.Tick{{Value: math.Log10(2), Label: "50%"}}
	for i, l := range labels {
		if float64(i) >= min-1e-9 && float64(i) <= max+1e-9 {
			out = append(out, plot.Tick{Value: float64(i), Label: l})
		}
	}
	return out
}

// logTicks125 marks 1, 2 and 5 times the powers of ten, so that a panel
// whose latencies span less than a decade still has labelled ticks.
type logTicks125 struct{}

func (logTicks125) Ticks(min, max float64) []plot.Tick {
	var out []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < min || v > max {
				continue
			}
			out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
		}
	}
	return out
}

// distribution returns the latency (ms) at percentiles of h, as x =
// -log10(1 - q) and y, up to p99.99.
func distribution(h *hdrhistogram.Histogram) plotter.XYs {
	var xys plotter.XYs
	for _, q := range quantiles() {
		v := float64(h.ValueAtQuantile(q*100)) / 1e6
		if v <= 0 {
			v = 1e-6
		}
		xys = append(xys, plotter.XY{X: -math.Log10(1 - q), Y: v})
	}
	return xys
}

// quantiles are 200 points spread evenly on the -log10(1-q) axis from 0 to
// p99.99.
func quantiles() []float64 {
	var qs []float64
	for i := range 201 {
		x := 4 * float64(i) / 200
		qs = append(qs, 1-math.Pow(10, -x))
	}
	return qs
}

// plotDistributions draws, for each measured scenario, the latency by
// percentile of every system, side by side, into a PNG at path.
func plotDistributions(path string, rep *report) error {
	var row []*plot.Plot
	for _, sc := range rep.order {
		p := plot.New()
		p.Title.Text = sc
		p.X.Label.Text = "percentile"
		p.Y.Label.Text = "latency (ms, log scale)"
		p.X.Tick.Marker = percentileTicks{}
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks125{}
		p.Add(plotter.NewGrid())
		// The curves rise to the right: the bottom right corner is free.
		p.Legend.Top = false
		p.Legend.Left = false
		var args []any
		for _, m := range rep.Merged[sc] {
			args = append(args, fmt.Sprintf("%s (p99 %.2f ms)", m.System, m.Latency.P99/1e3), distribution(m.Hist))
		}
		if err := plotutil.AddLines(p, args...); err != nil {
			return err
		}
		row = append(row, p)
	}
	if len(row) == 0 {
		return nil
	}
	const cell = 5 * vg.Inch
	img := vgimg.New(cell*vg.Length(len(row)), cell*0.8)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
