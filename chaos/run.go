package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// options are the knobs of a run.
type options struct {
	Nodes    int           // nodes at the start of every scenario
	Duration time.Duration // workload time per scenario
	Seed     uint64
	Clients  int           // concurrent readers
	Pause    time.Duration // mean pause between two reads of one reader
	Dump     string        // directory for the raw observations; "" for none
	LogLevel string        // the nodes' log level
	Logf     func(format string, args ...any)
}

// env is what every scenario of a run shares.
type env struct {
	nw   network
	bin  string
	work string
	opts options
}

// runScenario starts a fresh cluster, runs the workload and the
// scenario's faults for the duration, recovers, checks the final state,
// terminates every node, and evaluates the invariants.
func runScenario(ctx context.Context, e *env, sc scenario) *scenarioResult {
	res := &scenarioResult{Name: sc.Name, Desc: sc.Desc, Seed: e.opts.Seed}
	logf := e.opts.Logf
	s := &scenarioRun{sc: sc, opts: e.opts, logf: logf, acks: &acks{}, maxNodes: e.opts.Nodes + 2,
		rng: rand.New(rand.NewPCG(scenarioSeed(e.opts.Seed, sc.Name), 1))}
	for _, k := range sc.Faults {
		if !needsPartition(k) || e.nw.CanPartition() {
			s.kinds = append(s.kinds, k)
		}
	}
	if err := e.nw.Heal(); err != nil {
		res.Harness = append(res.Harness, err.Error())
		return res.finish()
	}
	dir := filepath.Join(e.work, sc.Name)
	o, err := newOrigin(e.nw.OriginAddr())
	if err != nil {
		res.Harness = append(res.Harness, err.Error())
		return res.finish()
	}
	defer o.Close()
	c, err := newCluster(e.nw, e.bin, dir, o, e.opts.LogLevel, logf)
	if err != nil {
		res.Harness = append(res.Harness, err.Error())
		return res.finish()
	}
	s.c = c
	if slices.Contains(sc.Faults, faultDiskFull) {
		c.disk = diskSize
		defer c.unmountDisks() // after killAll
	}
	defer c.killAll()

	logf("%s: starting %d nodes (%s)", sc.Name, e.opts.Nodes, e.nw.Mode())
	for range e.opts.Nodes {
		n, err := c.newNode()
		if err == nil {
			err = c.start(ctx, n)
		}
		if err != nil {
			res.Harness = append(res.Harness, "start: "+err.Error())
			return res.finish()
		}
	}
	if _, ok := c.waitConverged(ctx, time.Now(), c.expected(false), 20*time.Second); !ok {
		res.Harness = append(res.Harness, "the initial cluster did not converge in 20 s")
		return res.finish()
	}

	// The workload.
	rd := newReader()
	wctx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	s.start = time.Now()
	cl := startClients(wctx, c, rd, scenarioSeed(e.opts.Seed, sc.Name), e.opts.Clients, e.opts.Pause, s.acks)
	w := newWriter(c, o, scenarioSeed(e.opts.Seed, sc.Name))
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); w.run(wctx) }()

	s.runFaults(ctx, s.start.Add(e.opts.Duration))
	end := time.Now()
	stopWork()
	<-writerDone
	reads := cl.wait()
	logf("  %6.1fs  workload stopped: %d reads, %d changes", time.Since(s.start).Seconds(), len(reads), len(w.ops))

	// Let every delayed invalidation come due, then every live node must
	// serve the current version of every key.
	var lastDue time.Time
	for _, op := range w.ops {
		if op.Delayed && op.Due.After(lastDue) {
			lastDue = op.Due
		}
	}
	s.sleepUntil(ctx, lastDue.Add(1500*time.Millisecond))
	sweep, final := finalSweep(ctx, c, rd, o)
	res.FinalStale = final
	reads = append(reads, sweep...)

	res.BadExits = append(s.exits, c.shutdown(20*time.Second)...)
	if ctx.Err() != nil {
		res.Harness = append(res.Harness, "interrupted")
	}
	res.Harness = append(res.Harness, s.harness...)
	evaluate(res, s, c, o, w, reads, end)
	if e.opts.Dump != "" {
		if err := dump(filepath.Join(e.opts.Dump, sc.Name+".jsonl"), s.start, reads, w.ops, s.events, o); err != nil {
			res.Harness = append(res.Harness, "dump: "+err.Error())
		}
	}
	return res.finish()
}

// finalStale is a (node, key) pair that did not serve the current version
// after recovery.
type finalStale struct {
	Node    string `json:"node"`
	Key     string `json:"key"`
	Got     int    `json:"got"` // 0: an error
	Cache   string `json:"x_cache"`
	Owner   string `json:"x_cache_owner"`
	Err     string `json:"error,omitempty"`
	Current int    `json:"current"`
	Known   string `json:"known,omitempty"`
}

func (f finalStale) String() string {
	got := fmt.Sprintf("v%d (X-Cache %s)", f.Got, f.Cache)
	if f.Err != "" {
		got = "error " + f.Err
	}
	return fmt.Sprintf("%s serves %s %s, current v%d", f.Node, f.Key, got, f.Current)
}

// finalSweep reads every key from every running node and returns the
// reads and the (node, key) pairs still serving an old version after 5 s
// of retries.
func finalSweep(ctx context.Context, c *cluster, rd *reader, o *origin) ([]obs, []finalStale) {
	var mu sync.Mutex
	var all []obs
	var stale []finalStale
	var wg sync.WaitGroup
	for _, n := range c.inState(stateRunning) {
		wg.Go(func() {
			var mine []obs
			var bad []finalStale
			for label, ks := range keySpace {
				for v := range ks.size {
					k := keyRef{label, v}
					deadline := time.Now().Add(5 * time.Second)
					for {
						r := rd.read(ctx, n, k)
						mine = append(mine, r)
						cur := o.current(k)
						if r.ok() && r.Version == cur {
							break
						}
						if time.Now().After(deadline) || ctx.Err() != nil {
							f := finalStale{Node: n.Name, Key: k.String(), Got: r.Version, Cache: r.Cache, Owner: r.Owner, Current: cur}
							if !r.ok() {
								f.Got, f.Err = 0, r.Err
							}
							bad = append(bad, f)
							break
						}
						sleepCtx(ctx, 250*time.Millisecond)
					}
				}
			}
			mu.Lock()
			all = append(all, mine...)
			stale = append(stale, bad...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(stale, func(a, b finalStale) int { return strings.Compare(a.String(), b.String()) })
	return all, stale
}

// violations collects a scenario's violations, grouped by invariant and
// by the known issue that explains them.
type violations struct {
	list []violation
}

// add records count failures of an invariant, explained by known (or ""),
// with an example.
func (vs *violations) add(invariant, known string, count int, format string, args ...any) {
	if count == 0 {
		return
	}
	text := fmt.Sprintf(format, args...)
	if known != "" && !issueOpen(known) {
		// The evidence of an issue that was fixed: a regression.
		text = fmt.Sprintf("%s [evidence of %s, fixed in %s: a regression]", text, known, fixedIssues[known])
		known = ""
	}
	vs.list = append(vs.list, violation{Invariant: invariant, Known: known, Count: count, Text: text})
}

// evaluate checks the invariants on what the clients, the writer, the
// origin and the node logs saw.
func evaluate(res *scenarioResult, s *scenarioRun, c *cluster, o *origin, w *writer, reads []obs, end time.Time) {
	e := &evaluation{res: res, s: s, c: c, w: w, reads: reads, start: s.start, end: end}
	defer func() { res.Violations = e.vs.list }()
	res.Start = e.start.UTC()
	res.Duration = end.Sub(e.start).Seconds()
	for _, n := range c.nodes() {
		res.Nodes = append(res.Nodes, n.Name)
	}
	e.ws = failureWindows(s.events, end)
	e.fills, e.spans, e.bad = o.snapshot()
	e.evd = newEvidence(w.ops, s.events, reads, e.fills)

	e.convergence()
	e.availability() // invariant 3
	e.invalidations()
	ls := e.fillsPerKey() // invariant 1
	if ls == nil {
		return // the logs could not be read: the ring changes are unknown
	}
	e.staleReads() // invariant 2
	e.finalState()
	e.records()        // invariant 4
	e.logsAndExits(ls) // invariant 5
}

// evaluation is what the checks of one run's invariants share: the run,
// what the harness observed, and the violations found so far.
type evaluation struct {
	res        *scenarioResult
	s          *scenarioRun
	c          *cluster
	w          *writer
	reads      []obs
	start, end time.Time
	ws         []window // failure-detection windows
	fills      []fill
	spans      map[string][]verSpan
	bad        []string // malformed origin requests
	evd        *evidence
	vs         violations
}

// convergence lists the fault steps and checks that every step that must
// converge did.
func (e *evaluation) convergence() {
	res, start := e.res, e.start
	for _, ev := range e.s.events {
		res.Faults = append(res.Faults, faultRow{At: ev.At.Sub(start).Seconds(), Step: ev.Kind, Targets: strings.Join(ev.Targets, ","),
			Converge: ev.Converge.Seconds(), Converged: ev.Converged, Note: ev.Note})
		switch ev.Kind {
		case "kill -9", "SIGSTOP", "partition", "join", "leave", "disk full":
			res.FaultCount++
		}
		if ev.MustConverge && !ev.Converged {
			e.vs.add("convergence", "", 1, "%s %s at %.1fs: %s", ev.Kind, strings.Join(ev.Targets, ","), ev.At.Sub(start).Seconds(), ev.Note)
		}
	}
}

// availability (invariant 3): every read outside the failure-detection
// windows succeeds, and no read returns another key's value.
func (e *evaluation) availability() {
	res := e.res
	res.ErrorKinds = map[string]int{}
	for _, r := range e.reads {
		if r.Start.After(e.end) {
			continue // the final sweep
		}
		if n := e.c.byName(r.Node); n != nil && n.wasDown(r.Start, r.End) {
			res.ReadsToFailedNode++
			continue
		}
		res.Reads++
		outside := !inWindow(e.ws, r.Start, r.End)
		if outside {
			res.ReadsOutside++
		}
		if r.WrongKey {
			res.WrongValues++
		}
		if !r.ok() {
			res.Errors++
			kind := r.Err
			if r.WrongKey {
				kind = "wrong key"
			}
			res.ErrorKinds[kind]++
			if outside {
				res.ErrorsOutside++
				if len(res.ErrorSamples) < 10 {
					res.ErrorSamples = append(res.ErrorSamples, fmt.Sprintf("%.2fs %s %s: %s", r.Start.Sub(e.start).Seconds(), r.Node, r.Key, kind))
				}
			}
		}
	}
	res.Availability = pct(res.Reads-res.Errors, res.Reads)
	res.AvailabilityOutside = pct(res.ReadsOutside-res.ErrorsOutside, res.ReadsOutside)
	if res.ErrorsOutside > 0 {
		e.vs.add("availability", "", res.ErrorsOutside, "%d of %d reads failed outside the failure-detection windows, e.g. %s",
			res.ErrorsOutside, res.ReadsOutside, strings.Join(res.ErrorSamples[:min(3, len(res.ErrorSamples))], "; "))
	}
	e.vs.add("values", "", res.WrongValues, "%d reads returned another key's value", res.WrongValues)
}

// invalidations lists the writer's changes and checks that a node
// accepted each; it measures the synchronous ones' latency.
func (e *evaluation) invalidations() {
	res, start := e.res, e.start
	var lat []time.Duration
	for _, op := range e.w.ops {
		row := changeRow{At: op.Bumped.Sub(start).Seconds(), Kind: op.Kind, Versions: op.Versions, Posts: op.Attempts,
			Via: strings.Join(op.Via, " "), LastErr: op.LastErr}
		if op.Acked {
			row.Acked = op.AckAt.Sub(op.Bumped).Seconds()
		}
		res.Changes = append(res.Changes, row)
		if op.Delayed {
			res.Invalidations.Delayed++
		} else {
			res.Invalidations.Sync++
		}
		res.Invalidations.Attempts += op.Attempts
		if !op.Acked {
			res.Invalidations.NotAccepted++
			e.vs.add("invalidation", "", 1, "%s of %v at %.1fs not accepted by any node in 20 s (last: %s)",
				op.Kind, op.Keys, op.Bumped.Sub(start).Seconds(), op.LastErr)
			continue
		}
		if !op.Delayed {
			lat = append(lat, op.AckAt.Sub(op.Bumped))
		}
	}
	res.Invalidations.P50, res.Invalidations.P99, res.Invalidations.Max = quantiles(lat)
}

// fillsPerKey (invariant 1): every key version is filled no more often
// than its owners' changes allow. It returns the scan of the node logs
// that the later checks use, or nil when the logs could not be read.
func (e *evaluation) fillsPerKey() *logScan {
	res := e.res
	for _, b := range e.bad {
		e.vs.add("origin", "", 1, "malformed request %s", b)
	}
	ls, err := scanLogs(e.c.nodes())
	if err != nil {
		res.Harness = append(res.Harness, "reading logs: "+err.Error())
		return nil
	}
	if ls.lines == 0 {
		res.Harness = append(res.Harness, `no "member alive" lines in the node logs: the log format changed, ring changes cannot be followed`)
	}
	own := newOwners()
	checks, total, fallbacks, allowed, fbOutside := checkFills(e.fills, e.spans, e.w.ops, e.reads, ls, own, e.ws, e.s.cuts, e.start, e.end, time.Now())
	res.Fills, res.FallbackFills, res.AllowedFills, res.FallbackOutside = total, fallbacks, allowed, len(fbOutside)
	overLimit := map[string][]fillCheck{}
	for _, fc := range checks {
		switch excess := fc.Fills - fc.Fallback - fc.Allowed; {
		case excess <= 0:
			continue
		case excess <= fc.Burst:
			overLimit["K4"] = append(overLimit["K4"], fc)
		case fc.NotOwner > 0 && excess <= fc.NotOwner+fc.Burst:
			overLimit["K9"] = append(overLimit["K9"], fc)
		default:
			overLimit[""] = append(overLimit[""], fc)
		}
	}
	for _, known := range []string{"", "K4", "K9"} {
		fcs := overLimit[known]
		res.FillsOverLimit = append(res.FillsOverLimit, fcs...)
		if len(fcs) == 0 {
			continue
		}
		fc := fcs[0]
		e.vs.add("fills", known, len(fcs), "%d key versions filled more often than allowed, e.g. %s v%d: %d fills (%d fallback, %d within 100 ms of the same node's previous one, %d by a node not the owner in its own ring) by %s, allowed %d (%d invalidations sent, %d ring changes moved it)",
			len(fcs), fc.Key, fc.Version, fc.Fills, fc.Fallback, fc.Burst, fc.NotOwner, fc.By, fc.Allowed, fc.Sends, fc.Moves)
	}
	if len(fbOutside) > 0 {
		e.vs.add("fills", "", len(fbOutside), "%d fallback fills outside the failure-detection windows (owner unreachable while the cluster was whole), e.g. %s",
			len(fbOutside), fbOutside[0])
	}
	// A check of the key encoding the harness computes owners with.
	for _, r := range e.reads {
		if r.CKey != "" && r.CKey != own.cacheKey(r.Key) {
			res.Harness = append(res.Harness, fmt.Sprintf("X-Cache-Key %q differs from the harness's key %q", r.CKey, own.cacheKey(r.Key)))
			break
		}
	}
	return ls
}

// staleReads (invariant 2): no read returns a version older than an
// acknowledged synchronous invalidation, unless a cut-off excuses it.
func (e *evaluation) staleReads() {
	res := e.res
	stale := map[string][]staleRead{}
	var classes []string
	for _, sr := range checkStale(e.reads, e.w.ops, e.s.cuts, e.start, e.evd) {
		if sr.Exempt {
			res.CutOffStale++
			continue
		}
		res.StaleCount++
		if _, seen := stale[sr.Known]; !seen {
			classes = append(classes, sr.Known)
		}
		stale[sr.Known] = append(stale[sr.Known], sr)
		if len(stale[sr.Known]) <= 20 {
			res.StaleReads = append(res.StaleReads, sr)
		}
	}
	slices.Sort(classes)
	for _, k := range classes {
		sr := stale[k][0]
		e.vs.add("stale", k, len(stale[k]), "%d reads returned a version older than an acknowledged synchronous invalidation, e.g. %s at %.2fs: %s v%d (X-Cache %s), v%d acknowledged %.2fs before",
			len(stale[k]), sr.Node, sr.At, sr.Key, sr.Got, sr.Cache, sr.Want, sr.AckedAgo)
	}
}

// finalState (invariant 2, after recovery): every node serves the
// current version of every key.
func (e *evaluation) finalState() {
	res := e.res
	finals := map[string][]finalStale{}
	var classes []string
	for i, f := range res.FinalStale {
		if f.Err == "" {
			f.Known = e.evd.staleKnown(f.Node, f.Key, f.Got, e.end)
			res.FinalStale[i] = f
		}
		if _, seen := finals[f.Known]; !seen {
			classes = append(classes, f.Known)
		}
		finals[f.Known] = append(finals[f.Known], f)
	}
	slices.Sort(classes)
	for _, k := range classes {
		e.vs.add("final", k, len(finals[k]), "%d (node, key) pairs not serving the current version after recovery, e.g. %s", len(finals[k]), finals[k][0])
	}
}

// records (invariant 4): a node restarted after kill -9 or a full disk
// keeps every record it acknowledged.
func (e *evaluation) records() {
	e.res.Records = e.s.records
	for _, rc := range e.s.records {
		if rc.QueryErr != "" {
			e.vs.add("records", "", 1, "%s after restart: %s", rc.Node, rc.QueryErr)
		}
		what := "in kill -9"
		if rc.Fault != "" {
			what = "on a full disk, once freed"
		}
		e.vs.add("records", "", len(rc.Missing), "%s lost %d of %d acknowledged records %s, e.g. %s", rc.Node, len(rc.Missing), rc.Acked, what, strings.Join(rc.Missing, " "))
	}
}

// logsAndExits (invariant 5): no node logs a panic or exits badly. It
// also lists the nodes' log directories for the report.
func (e *evaluation) logsAndExits(ls *logScan) {
	res := e.res
	res.Panics, res.LogErrors = ls.panics, ls.errors
	if len(res.Panics) > 0 {
		e.vs.add("logs", "", len(res.Panics), "%d lines report a panic, e.g. %s", len(res.Panics), res.Panics[0])
	}
	for _, b := range res.BadExits {
		e.vs.add("exit", "", 1, "%s", b)
	}
	logDirs := map[string]bool{}
	for _, n := range e.c.nodes() {
		logDirs[n.dir] = true
	}
	for d := range logDirs {
		res.LogDirs = append(res.LogDirs, d)
	}
	slices.Sort(res.LogDirs)
}

func pct(a, b int) float64 {
	if b == 0 {
		return 100
	}
	return 100 * float64(a) / float64(b)
}

func quantiles(ds []time.Duration) (p50, p99, mx float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	q := func(f float64) float64 { return ds[min(len(ds)-1, int(f*float64(len(ds))))].Seconds() }
	return q(0.5), q(0.99), ds[len(ds)-1].Seconds()
}

// dump writes the raw observations of a scenario, one JSON object a line,
// times in seconds since the workload started.
func dump(path string, start time.Time, reads []obs, ops []*writeOp, events []*event, o *origin) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	sec := func(t time.Time) float64 { return t.Sub(start).Seconds() }
	for _, r := range reads {
		enc.Encode(map[string]any{"t": "read", "start": sec(r.Start), "end": sec(r.End), "node": r.Node, "key": r.Key.String(),
			"code": r.Code, "cache": r.Cache, "owner": r.Owner, "v": r.Version, "err": r.Err})
	}
	for _, ev := range events {
		enc.Encode(map[string]any{"t": "fault", "at": sec(ev.At), "step": ev.Kind, "targets": ev.Targets, "converge": ev.Converge.Seconds()})
	}
	for _, op := range ops {
		enc.Encode(map[string]any{"t": "change", "at": sec(op.Bumped), "kind": op.Kind, "versions": op.Versions,
			"acked": op.Acked, "ack": sec(op.AckAt), "posts": op.Attempts, "via": op.Via})
	}
	fills, _, _ := o.snapshot()
	for _, fl := range fills {
		enc.Encode(map[string]any{"t": "fill", "at": sec(fl.At), "node": fl.Node, "key": fl.Key, "v": fl.Version})
	}
	return bw.Flush()
}
