// Command bench is the load generator of cachenode: it runs the benchmark
// scenarios against an embedded cluster (nodes in this process on loopback)
// and, with -http, against running cachenode processes, and prints ops/s,
// latency percentiles from HDR histograms, fills and errors per scenario, as
// a Markdown table and optionally as JSON.
//
//	go run ./bench                                  every embedded scenario
//	go run ./bench -scenarios remote,stampede -duration 10s
//	go run ./bench -scenarios http -http 127.0.0.1:8080,127.0.0.1:8081
//	go run ./bench -json docs/bench.json -md docs/bench.md
//
// Scenarios: owner (hit on the owner), near (near-cache hit), remote (hit
// through the peer transport, no near cache on the asking node), stampede
// (cold keys asked by many callers over every node), invalidation (time
// until every node serves the new value; bulk change events per second),
// reroute (kill -9 of an owner until its keys are served again), http (GET
// /v1/cache hits over keep-alive connections), records (created-cache
// records written per second), processes (the HTTP hits and the kill -9
// re-route again, against cachenode processes that the bench starts, with
// an origin it serves), origin (issue 21: the origin's peak concurrency
// under 3,000 distinct misses and a 10,000-key refresh, and the hits of
// another worker during the refresh against the same hits before it, with and
// without the limit), memory (issue 14: heap per entry and overhead over
// key and value for cachenode, raw otter and redis-server, each in its own
// process, and the heap through a fill of 10× --memory). The comparison with groupcache and olric is the
// separate module bench/compare.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/bench/internal/scenario"
)

var allScenarios = []string{"owner", "near", "remote", "stampede", "invalidation", "reroute", "http", "records", "processes", "origin", "memory"}

type flags struct {
	scenarios                    string
	duration, warmup             time.Duration
	callers, nodes, keys, size   int
	stCallers, stKeys, stKeyCall int
	stRounds                     int
	fillDelay                    time.Duration
	invNodes, invRounds          int
	bulkEvents, bulkChanges      int
	rrRounds, rrKeys, rrNodes    int
	httpAddrs, httpLabel         string
	cachenode                    string
	jsonPath, mdPath, cpuProfile string
	dataDir                      string
	verbose                      bool
	origin                       scenario.OriginConfig
	originLimits                 string
	memory                       scenario.MemoryConfig
}

func main() {
	if scenario.IsVictim() {
		os.Exit(scenario.VictimMain())
	}
	if scenario.IsMemoryJob() {
		os.Exit(scenario.MemoryJobMain())
	}
	var f flags
	flag.StringVar(&f.scenarios, "scenarios", "all", "comma-separated scenarios: "+strings.Join(allScenarios, ", ")+", or all")
	flag.DurationVar(&f.duration, "duration", 5*time.Second, "measured time of each closed-loop run")
	flag.DurationVar(&f.warmup, "warmup", 500*time.Millisecond, "warm-up before each closed-loop run")
	flag.IntVar(&f.callers, "callers", 50, "concurrent callers of the closed-loop scenarios")
	flag.IntVar(&f.nodes, "nodes", 3, "nodes of the embedded cluster")
	flag.IntVar(&f.keys, "keys", 1000, "keys read by the hit scenarios")
	flag.IntVar(&f.size, "value-size", 100, "value size in bytes")
	flag.IntVar(&f.stCallers, "stampede-callers", 500, "callers of the one-key stampede, spread over the nodes")
	flag.IntVar(&f.stKeys, "stampede-keys", 1000, "keys of the many-key stampede")
	flag.IntVar(&f.stKeyCall, "stampede-key-callers", 30, "callers of the many-key stampede; each asks every key")
	flag.IntVar(&f.stRounds, "stampede-rounds", 5, "rounds of each stampede (fresh keys each round)")
	flag.DurationVar(&f.fillDelay, "fill-delay", 10*time.Millisecond, "getter latency in the stampede")
	flag.IntVar(&f.invNodes, "invalidation-nodes", 5, "nodes of the invalidation scenario")
	flag.IntVar(&f.invRounds, "invalidation-rounds", 500, "invalidations of one key measured")
	flag.IntVar(&f.bulkEvents, "bulk-events", 50, "bulk change events measured")
	flag.IntVar(&f.bulkChanges, "bulk-changes", 1000, "changes per bulk event")
	flag.IntVar(&f.rrRounds, "reroute-rounds", 10, "kills measured by the reroute and processes scenarios")
	flag.IntVar(&f.rrNodes, "reroute-nodes", 5, "cluster size of the reroute scenarios, the victim included")
	flag.IntVar(&f.rrKeys, "reroute-keys", 50, "keys of the killed owner read after each kill")
	flag.StringVar(&f.httpAddrs, "http", "", "HOST:PORT,... of running cachenode HTTP APIs; the http scenario reads from them instead of an embedded node")
	flag.StringVar(&f.httpLabel, "http-label", scenario.Label, "worker label read with -http (argument id=k0, k1, ...)")
	flag.StringVar(&f.cachenode, "cachenode", "", "cachenode binary of the processes scenario; default: build ./cmd/cachenode")
	flag.StringVar(&f.jsonPath, "json", "", "write the results as JSON to this file")
	flag.StringVar(&f.mdPath, "md", "", "write the results as a Markdown table to this file")
	flag.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of each closed-loop scenario to PREFIX-SCENARIO.pprof")
	flag.StringVar(&f.dataDir, "data", os.TempDir(), "directory for the Pebble stores of the records scenario")
	flag.BoolVar(&f.verbose, "v", false, "log the nodes' warnings to stderr")
	flag.IntVar(&f.origin.Keys, "origin-keys", 10000, "cached keys the origin scenario invalidates")
	flag.IntVar(&f.origin.Misses, "origin-misses", 3000, "concurrent distinct cold reads of the origin scenario")
	flag.DurationVar(&f.origin.Delay, "origin-delay", 20*time.Millisecond, "origin latency during the origin scenario's refresh")
	flag.DurationVar(&f.origin.MissDelay, "origin-miss-delay", 200*time.Millisecond, "origin latency during the origin scenario's misses")
	flag.StringVar(&f.originLimits, "origin-limits", "64,-1", "max_concurrent_fills of the origin scenario's runs, comma-separated; -1: no limit")
	flag.IntVar(&f.memory.N, "memory-entries", 300000, "entries of the memory scenario's per-entry runs")
	flag.Int64Var(&f.memory.Memory, "memory-bound", 64<<20, "--memory of the memory scenario's 10x fills, in bytes")
	flag.StringVar(&f.memory.Samples, "memory-samples", "", "write the heap samples of the memory scenario's fills as JSON to this file (bench/compare -memory-plot draws them)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	results, err := run(ctx, f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	if len(results) > 0 {
		if werr := report(os.Stdout, f, results); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
			os.Exit(1)
		}
	}
	if err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) ([]*load.Result, error) {
	want := strings.Split(f.scenarios, ",")
	if f.scenarios == "all" {
		want = allScenarios
	}
	for _, s := range want {
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (want %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if f.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	opts := scenario.Options{
		Nodes: f.nodes, Callers: f.callers, Duration: f.duration, Warmup: f.warmup,
		ValueSize: f.size, Keys: f.keys, FillDelay: f.fillDelay, Progress: os.Stderr, Logger: log,
	}
	var results []*load.Result
	for _, s := range want {
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		fmt.Fprintf(os.Stderr, "== %s\n", s)
		rs, err := runOne(ctx, s, f, opts)
		results = append(results, rs...)
		if err != nil {
			return results, fmt.Errorf("%s: %w", s, err)
		}
		// Let the closed nodes' goroutines and sockets go before the next
		// scenario measures.
		runtime.GC()
		time.Sleep(200 * time.Millisecond)
	}
	return results, nil
}

// profiled runs fn under a CPU profile when -cpuprofile is set.
func profiled(f flags, name string, fn func()) error {
	if f.cpuProfile == "" {
		fn()
		return nil
	}
	out, err := os.Create(f.cpuProfile + "-" + name + ".pprof")
	if err != nil {
		return err
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		return err
	}
	fn()
	pprof.StopCPUProfile()
	return nil
}

func runOne(ctx context.Context, s string, f flags, opts scenario.Options) ([]*load.Result, error) {
	switch s {
	case "owner", "near", "remote":
		kind := map[string]scenario.HitKind{"owner": scenario.OwnerHit, "near": scenario.NearHit, "remote": scenario.RemoteHit}[s]
		h, err := scenario.NewHits(ctx, kind, opts)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		var r *load.Result
		err = profiled(f, kind.Name(), func() { r = h.Run(ctx) })
		return []*load.Result{r}, err

	case "stampede":
		st, err := scenario.NewStampede(ctx, opts)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		var one, many []*load.Result
		for range f.stRounds {
			one = append(one, st.Round(ctx, 1, f.stCallers))
			many = append(many, st.Round(ctx, f.stKeys, f.stKeyCall))
		}
		return []*load.Result{stampedeSummary(one), stampedeSummary(many)}, nil

	case "invalidation":
		o := opts
		o.Nodes = f.invNodes
		v, err := scenario.NewInvalidation(ctx, o)
		if err != nil {
			return nil, err
		}
		defer v.Close()
		ret, vis, err := v.Visibility(ctx, f.invRounds)
		if err != nil {
			return nil, err
		}
		bulk, err := v.Bulk(ctx, f.bulkEvents, f.bulkChanges, 100)
		if err != nil {
			return []*load.Result{ret, vis}, err
		}
		return []*load.Result{ret, vis, bulk}, nil

	case "reroute":
		o := opts
		o.Nodes = f.rrNodes
		rr, err := scenario.NewReroute(ctx, o)
		if err != nil {
			return nil, err
		}
		defer rr.Close()
		r, err := rr.Run(ctx, f.rrRounds, f.rrKeys)
		if err != nil {
			return nil, err
		}
		return []*load.Result{r}, nil

	case "http":
		var h *scenario.HTTPHits
		var err error
		if f.httpAddrs != "" {
			h, err = scenario.NewHTTPHits(ctx, opts, strings.Split(f.httpAddrs, ","), f.httpLabel)
		} else {
			h, err = scenario.NewHTTPHitsEmbedded(ctx, opts)
		}
		if err != nil {
			return nil, err
		}
		defer h.Close()
		var r *load.Result
		err = profiled(f, "http-hit", func() { r = h.Run(ctx) })
		return []*load.Result{r}, err

	case "processes":
		bin := f.cachenode
		if bin == "" {
			dir, err := os.MkdirTemp("", "cachenode-bin-*")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			if bin, err = scenario.BuildCachenode(ctx, dir); err != nil {
				return nil, err
			}
		}
		var out []*load.Result
		ps, err := scenario.StartProcesses(ctx, opts, bin, true)
		if err != nil {
			return nil, err
		}
		h, err := scenario.NewHTTPHits(ctx, opts, ps.HTTPAddrs(), scenario.Label)
		if err != nil {
			ps.Close()
			return nil, err
		}
		r := h.Run(ctx)
		r.System = "cachenode-processes"
		out = append(out, r)
		h.Close()
		ps.Close()
		// Without near cache, so that the reads after the kill go to the
		// owner, as in the embedded reroute scenario.
		o := opts
		o.Nodes = f.rrNodes
		ps, err = scenario.StartProcesses(ctx, o, bin, false)
		if err != nil {
			return out, err
		}
		defer ps.Close()
		r, err = ps.Reroute(ctx, f.rrRounds, f.rrKeys)
		if err != nil {
			return out, err
		}
		return append(out, r), nil

	case "origin":
		var out []*load.Result
		for _, l := range strings.Split(f.originLimits, ",") {
			cfg := f.origin
			if _, err := fmt.Sscan(l, &cfg.Limit); err != nil {
				return out, fmt.Errorf("-origin-limits: %q is not a number", l)
			}
			rs, err := scenario.Origin(ctx, opts, cfg)
			out = append(out, rs...)
			if err != nil {
				return out, err
			}
		}
		return out, nil

	case "memory":
		cfg := f.memory
		cfg.Size, cfg.Dir = f.size, f.dataDir
		return scenario.Memory(ctx, cfg)

	case "records":
		var out []*load.Result
		for _, async := range []bool{true, false} {
			r, err := scenario.RecordsStore(ctx, opts, f.dataDir, async)
			if err != nil {
				return out, err
			}
			out = append(out, r)
		}
		for _, delay := range []bool{true, false} {
			r, err := scenario.RecordsFills(ctx, opts, f.dataDir, delay)
			if err != nil {
				return out, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown scenario %q", s)
}

// stampedeSummary merges the rounds of one stampede and keeps the largest
// fill count per key and the round times.
func stampedeSummary(rounds []*load.Result) *load.Result {
	m := load.Merge(rounds...)
	most, times := 0.0, []float64{}
	for _, r := range rounds {
		most = max(most, r.Figures["max_fills_per_key"])
		times = append(times, r.Figures["round_ms"])
	}
	m.Figure("rounds", float64(len(rounds))).Figure("max_fills_per_key", most)
	if len(times) > 0 {
		slices.Sort(times)
		m.Figure("round_ms_median", times[len(times)/2]).Figure("round_ms_max", times[len(times)-1])
	}
	if m.Keys > 0 {
		m.Figure("fills_per_key", float64(m.Fills)/float64(m.Keys))
	}
	return m
}

func report(w io.Writer, f flags, rs []*load.Result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d cores, %s, %s/%s\n\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if err := load.WriteTable(&b, rs); err != nil {
		return err
	}
	b.WriteString("\n")
	for _, r := range rs {
		if len(r.Figures) == 0 && len(r.Notes) == 0 {
			continue
		}
		keys := make([]string, 0, len(r.Figures))
		for k := range r.Figures {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%.4g", k, r.Figures[k]))
		}
		if len(parts) > 0 {
			parts = []string{strings.Join(parts, " ")}
		}
		parts = append(parts, r.Notes...)
		fmt.Fprintf(&b, "- %s %s: %s\n", r.Scenario, r.System, strings.Join(parts, "; "))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if f.mdPath != "" {
		if err := os.WriteFile(f.mdPath, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	if f.jsonPath != "" {
		return load.WriteJSON(f.jsonPath, map[string]any{
			"cores": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
			"when": time.Now().UTC().Format(time.RFC3339), "args": os.Args[1:], "results": rs,
		})
	}
	return nil
}
