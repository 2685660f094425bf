// Command compare measures cachenode side by side with groupcache and olric
// in one run on one machine: remote hits through member 0 (keys owned by the
// other members, 100-byte values, 50 callers) and cold-key stampedes (many
// callers over every member, one key and many keys). Runs alternate,
// cachenode then the other system, pair after pair, and every ratio is taken
// within a pair, so that the load of a shared machine weighs on both sides.
//
//	cd bench/compare && go run . -duration 5s
//
// It writes DIR/bench-compare.md (tables), .json (every run) and .png
// (latency distributions per system), DIR being -out (../../docs).
//
// It is a module of its own so that the main module does not depend on
// groupcache and olric.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/bench/internal/scenario"
)

type settings struct {
	opts                        scenario.Options
	rounds, stRounds            int
	stCallers, stKeys, stKeyCal int
	out                         string
	systems                     string
}

// pair is one alternation: cachenode's run and the other system's run right
// after it.
type pair struct {
	Scenario string       `json:"scenario"`
	Round    int          `json:"round"`
	Ours     *load.Result `json:"cachenode"`
	Theirs   *load.Result `json:"theirs"`
}

func main() {
	if os.Getenv(envGroupcachePeer) != "" {
		os.Exit(groupcachePeerMain())
	}
	var c settings
	memPlot := flag.String("memory-plot", "", "draw the heap samples of `go run ./bench -scenarios memory -memory-samples FILE` into OUT.png (with -memory-plot-out) and exit")
	memPlotOut := flag.String("memory-plot-out", filepath.Join("..", "..", "docs", "memory-heap.png"), "the PNG of -memory-plot")
	flag.DurationVar(&c.opts.Duration, "duration", 5*time.Second, "measured time of each remote-hit run")
	flag.DurationVar(&c.opts.Warmup, "warmup", 500*time.Millisecond, "warm-up before each remote-hit run")
	flag.IntVar(&c.opts.Callers, "callers", 50, "concurrent callers of the remote hits")
	flag.IntVar(&c.opts.Nodes, "nodes", 3, "members of each cluster")
	flag.IntVar(&c.opts.Keys, "keys", 1000, "keys read by the remote hits")
	flag.IntVar(&c.opts.ValueSize, "value-size", 100, "value size in bytes")
	flag.DurationVar(&c.opts.FillDelay, "fill-delay", 10*time.Millisecond, "load (getter) latency in the stampedes")
	flag.IntVar(&c.rounds, "rounds", 3, "remote-hit pairs per compared system")
	flag.IntVar(&c.stRounds, "stampede-rounds", 3, "stampede pairs per compared system and variant")
	flag.IntVar(&c.stCallers, "stampede-callers", 500, "callers of the one-key stampede")
	flag.IntVar(&c.stKeys, "stampede-keys", 1000, "keys of the many-key stampede")
	flag.IntVar(&c.stKeyCal, "stampede-key-callers", 30, "callers of the many-key stampede, each asking every key")
	flag.StringVar(&c.out, "out", filepath.Join("..", "..", "docs"), "directory of bench-compare.{md,json,png}")
	flag.StringVar(&c.systems, "systems", "olric,groupcache", "systems compared with cachenode")
	flag.Parse()
	if *memPlot != "" {
		if err := plotMemory(*memPlot, *memPlotOut); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			os.Exit(1)
		}
		return
	}
	c.opts.Progress = os.Stderr
	c.opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c settings) error {
	began := time.Now()
	fmt.Fprintln(os.Stderr, "starting cachenode")
	ours, err := newOurs(ctx, c.opts)
	if err != nil {
		return fmt.Errorf("cachenode: %w", err)
	}
	defer ours.close()
	var others []system
	var failures []string
	for _, name := range strings.Split(c.systems, ",") {
		fmt.Fprintln(os.Stderr, "starting", name)
		var s system
		switch name {
		case "olric":
			s, err = newOlric(ctx, c.opts)
		case "groupcache":
			s, err = newGroupcache(ctx, c.opts)
		default:
			err = fmt.Errorf("unknown system")
		}
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", name, err))
			fmt.Fprintf(os.Stderr, "%s did not start: %v\n", name, err)
			continue
		}
		defer s.close()
		others = append(others, s)
	}

	var pairs []pair
	for r := range c.rounds {
		for _, o := range others {
			fmt.Fprintf(os.Stderr, "remote-hit round %d/%d: cachenode, then %s\n", r+1, c.rounds, o.name())
			a := ours.remoteHit(ctx)
			b := o.remoteHit(ctx)
			pairs = append(pairs, pair{Scenario: a.Scenario, Round: r, Ours: a, Theirs: b})
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	for r := range c.stRounds {
		for _, v := range [][2]int{{1, c.stCallers}, {c.stKeys, c.stKeyCal}} {
			for _, o := range others {
				fmt.Fprintf(os.Stderr, "%s round %d/%d: cachenode, then %s\n", scenario.StampedeName(v[0]), r+1, c.stRounds, o.name())
				a := ours.stampede(ctx, v[0], v[1])
				b := o.stampede(ctx, v[0], v[1])
				pairs = append(pairs, pair{Scenario: a.Scenario, Round: r, Ours: a, Theirs: b})
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
	}
	took := time.Since(began)
	fmt.Fprintf(os.Stderr, "measured in %v\n", took.Round(time.Second))

	rep := summarize(c, pairs, failures, took)
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	md := rep.markdown()
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(c.out, "bench-compare.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := load.WriteJSON(filepath.Join(c.out, "bench-compare.json"), rep); err != nil {
		return err
	}
	return plotDistributions(filepath.Join(c.out, "bench-compare.png"), rep)
}

// report is everything a comparison run measured.
type report struct {
	When     string   `json:"when"`
	Machine  string   `json:"machine"`
	Args     []string `json:"args"`
	Seconds  float64  `json:"seconds"`
	Failures []string `json:"failures,omitempty"`
	// Merged holds, per scenario, the merged runs of each system
	// (cachenode first).
	Merged map[string][]*load.Result `json:"merged"`
	// Ratios holds, per scenario and other system, the ratios taken within
	// each pair.
	Ratios map[string]map[string]ratios `json:"ratios"`
	Pairs  []pair                       `json:"pairs"`
	order  []string
}

// ratios are figures of cachenode divided by the same figures of the other
// system in the same pair: their median over the pairs, and the range.
type ratios struct {
	OpsPerSec spread `json:"ops_per_sec"`
	P50       spread `json:"p50"`
	P99       spread `json:"p99"`
	Fills     spread `json:"fills"`
}

type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// MarshalJSON writes a ratio that has no value (a division by zero) as
// null.
func (s spread) MarshalJSON() ([]byte, error) {
	f := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "null"
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	return []byte(`{"median":` + f(s.Median) + `,"min":` + f(s.Min) + `,"max":` + f(s.Max) + `}`), nil
}

func spreadOf(xs []float64) spread {
	xs = slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(xs) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	slices.Sort(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return spread{Median: m, Min: xs[0], Max: xs[len(xs)-1]}
}

func summarize(c settings, pairs []pair, failures []string, took time.Duration) *report {
	host, _ := os.Hostname()
	rep := &report{
		When:     time.Now().UTC().Format(time.RFC3339),
		Machine:  fmt.Sprintf("%s: %d cores, %s %s/%s", host, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH),
		Args:     os.Args[1:],
		Seconds:  took.Seconds(),
		Failures: failures,
		Merged:   map[string][]*load.Result{},
		Ratios:   map[string]map[string]ratios{},
		Pairs:    pairs,
	}
	type acc struct{ ops, p50, p99, fills []float64 }
	accs := map[string]map[string]*acc{}
	runs := map[string]map[string][]*load.Result{}
	var systems []string
	for _, p := range pairs {
		if !slices.Contains(rep.order, p.Scenario) {
			rep.order = append(rep.order, p.Scenario)
		}
		if !slices.Contains(systems, p.Theirs.System) {
			systems = append(systems, p.Theirs.System)
		}
		if runs[p.Scenario] == nil {
			runs[p.Scenario] = map[string][]*load.Result{}
			accs[p.Scenario] = map[string]*acc{}
		}
		runs[p.Scenario]["cachenode"] = append(runs[p.Scenario]["cachenode"], p.Ours)
		runs[p.Scenario][p.Theirs.System] = append(runs[p.Scenario][p.Theirs.System], p.Theirs)
		a := accs[p.Scenario][p.Theirs.System]
		if a == nil {
			a = &acc{}
			accs[p.Scenario][p.Theirs.System] = a
		}
		a.ops = append(a.ops, load.Ratio(p.Ours.OpsPerSec, p.Theirs.OpsPerSec))
		a.p50 = append(a.p50, load.Ratio(p.Ours.Latency.P50, p.Theirs.Latency.P50))
		a.p99 = append(a.p99, load.Ratio(p.Ours.Latency.P99, p.Theirs.Latency.P99))
		a.fills = append(a.fills, load.Ratio(float64(p.Ours.Fills), float64(p.Theirs.Fills)))
	}
	for _, sc := range rep.order {
		for _, sys := range append([]string{"cachenode"}, systems...) {
			rs := runs[sc][sys]
			if len(rs) == 0 {
				continue
			}
			m := load.Merge(rs...)
			most := 0.0
			for _, r := range rs {
				most = max(most, r.Figures["max_fills_per_key"])
			}
			if m.Keys > 0 {
				m.Figure("fills_per_key", float64(m.Fills)/float64(m.Keys)).Figure("max_fills_per_key", most)
			}
			m.Figure("runs", float64(len(rs)))
			rep.Merged[sc] = append(rep.Merged[sc], m)
		}
		rep.Ratios[sc] = map[string]ratios{}
		for sys, a := range accs[sc] {
			rep.Ratios[sc][sys] = ratios{OpsPerSec: spreadOf(a.ops), P50: spreadOf(a.p50), P99: spreadOf(a.p99), Fills: spreadOf(a.fills)}
		}
	}
	return rep
}

func fmtRatio(s spread) string {
	if math.IsNaN(s.Median) {
		return "n/a"
	}
	if s.Min == s.Max {
		return fmt.Sprintf("%.3g", s.Median)
	}
	return fmt.Sprintf("%.3g (%.3g–%.3g)", s.Median, s.Min, s.Max)
}

func (rep *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. Run: `go run . %s` at %s, %.0f s of measuring.\n\n", rep.Machine, strings.Join(rep.Args, " "), rep.When, rep.Seconds)
	for _, f := range rep.Failures {
		fmt.Fprintf(&b, "- not measured: %s\n", f)
	}
	if len(rep.Failures) > 0 {
		b.WriteString("\n")
	}
	for _, sc := range rep.order {
		fmt.Fprintf(&b, "### %s\n\n", sc)
		stampede := strings.HasPrefix(sc, "stampede")
		if stampede {
			b.WriteString("| system | runs | callers | Gets | p50 | p99 | p99.9 | errors | keys | fills | fills per key | most fills of one key |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		} else {
			b.WriteString("| system | runs | callers | ops | ops/s | p50 | p99 | p99.9 | max | errors |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		}
		for _, m := range rep.Merged[sc] {
			if stampede {
				fmt.Fprintf(&b, "| %s | %.0f | %d | %d | %s | %s | %s | %d | %d | %d | %.2f | %.0f |\n",
					m.System, m.Figures["runs"], m.Callers, m.Ops, load.FormatMicros(m.Latency.P50), load.FormatMicros(m.Latency.P99),
					load.FormatMicros(m.Latency.P999), m.Errors, m.Keys, m.Fills, m.Figures["fills_per_key"], m.Figures["max_fills_per_key"])
			} else {
				fmt.Fprintf(&b, "| %s | %.0f | %d | %d | %s | %s | %s | %s | %s | %d |\n",
					m.System, m.Figures["runs"], m.Callers, m.Ops, load.FormatRate(m.OpsPerSec), load.FormatMicros(m.Latency.P50),
					load.FormatMicros(m.Latency.P99), load.FormatMicros(m.Latency.P999), load.FormatMicros(m.Latency.Max), m.Errors)
			}
		}
		b.WriteString("\nRatios, cachenode ÷ the other system, within each pair (median, range over the pairs):\n\n")
		if stampede {
			b.WriteString("| vs | fills | p50 | p99 |\n|---|---:|---:|---:|\n")
		} else {
			b.WriteString("| vs | ops/s | p50 | p99 |\n|---|---:|---:|---:|\n")
		}
		var names []string
		for sys := range rep.Ratios[sc] {
			names = append(names, sys)
		}
		slices.Sort(names)
		for _, sys := range names {
			r := rep.Ratios[sc][sys]
			first := r.OpsPerSec
			if stampede {
				first = r.Fills
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", sys, fmtRatio(first), fmtRatio(r.P50), fmtRatio(r.P99))
		}
		b.WriteString("\n")
	}
	b.WriteString(rep.goals())
	return b.String()
}

// goals states the goals for the comparison against this run.
func (rep *report) goals() string {
	var b strings.Builder
	b.WriteString("### Goals\n\n| goal | this run | met |\n|---|---|---|\n")
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	if r, ok := rep.Ratios[scenario.RemoteHit.Name()]["olric"]; ok {
		fmt.Fprintf(&b, "| remote hit ≥ 3× olric's Get ops/s | %.2f× (pairs %.2f–%.2f) | %s |\n",
			r.OpsPerSec.Median, r.OpsPerSec.Min, r.OpsPerSec.Max, yes(r.OpsPerSec.Median >= 3))
		fmt.Fprintf(&b, "| remote hit p99 < ⅓ of olric's | %.2f× olric's (pairs %.2f–%.2f) | %s |\n",
			r.P99.Median, r.P99.Min, r.P99.Max, yes(r.P99.Median < 1.0/3))
	}
	for _, sc := range rep.order {
		if !strings.HasPrefix(sc, "stampede") {
			continue
		}
		for _, m := range rep.Merged[sc] {
			if m.System == "cachenode" {
				fmt.Fprintf(&b, "| %s: exactly 1 fill per key | %d fills for %d keys, at most %.0f for one key | %s |\n",
					sc, m.Fills, m.Keys, m.Figures["max_fills_per_key"], yes(m.Fills == m.Keys && m.Figures["max_fills_per_key"] == 1))
			}
		}
	}
	b.WriteString("\n")
	return b.String()
}
