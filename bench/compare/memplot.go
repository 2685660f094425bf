package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// memorySamples is what `go run ./bench -scenarios memory -memory-samples
// FILE` writes: the heap after GC through each fill of 10× --memory.
type memorySamples struct {
	MemoryMiB float64 `json:"memory_mib"`
	Runs      map[string][]struct {
		Seconds float64 `json:"s"`
		Fills   int     `json:"fills"`
		HeapMiB float64 `json:"heap_mib"`
	} `json:"runs"`
}

// plotMemory draws the heap over the fills of the memory scenario, with
// the bound 1.1 × --memory + 32 MiB, into the PNG file out.
func plotMemory(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var ms memorySamples
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("heap after GC through a fill of 10× --memory %.0f MiB", ms.MemoryMiB)
	p.X.Label.Text = "fills, as a multiple of what the bound holds"
	p.Y.Label.Text = "heap in use (MiB)"
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.Legend.Left = false
	names := make([]string, 0, len(ms.Runs))
	for name := range ms.Runs {
		names = append(names, name)
	}
	slices.Sort(names)
	var args []any
	for _, name := range names {
		run := ms.Runs[name]
		if len(run) == 0 {
			continue
		}
		last := float64(max(run[len(run)-1].Fills, 1))
		xy := make(plotter.XYs, len(run))
		for i, s := range run {
			xy[i].X, xy[i].Y = 10*float64(s.Fills)/last, s.HeapMiB
		}
		args = append(args, name, xy)
	}
	limit := 1.1*ms.MemoryMiB + 32
	args = append(args, fmt.Sprintf("bound 1.1 × memory + 32 MiB = %.1f MiB", limit), plotter.XYs{{X: 0, Y: limit}, {X: 10, Y: limit}})
	if err := plotutil.AddLines(p, args...); err != nil {
		return err
	}
	p.Y.Min = 0
	return p.Save(8*vg.Inch, 5*vg.Inch, out)
}
