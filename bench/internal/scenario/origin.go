package scenario

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// The workers of the origin scenario, both on one origin (and one
// limiter): the keys of db are refreshed, those of cold are the misses.
const (
	originLabel = "db"
	coldLabel   = "cold"
)

// OriginConfig is what the origin scenario measures.
type OriginConfig struct {
	// Keys is the number of cached keys of the label invalidated. Default
	// 10,000.
	Keys int
	// Misses is the number of concurrent reads of distinct cold keys.
	// Default 3,000.
	Misses int
	// Delay is the origin's latency during the refresh. Default 20ms.
	Delay time.Duration
	// MissDelay is the origin's latency during the misses: slow enough
	// that the limit makes callers wait past their budget. Default 200ms.
	MissDelay time.Duration
	// Limit is the origin's max_concurrent_fills; negative: no limit (what
	// cachenode did before issue 21). Default 64.
	Limit int
}

func (c OriginConfig) withDefaults() OriginConfig {
	if c.Keys <= 0 {
		c.Keys = 10000
	}
	if c.Misses <= 0 {
		c.Misses = 3000
	}
	if c.Delay <= 0 {
		c.Delay = 20 * time.Millisecond
	}
	if c.MissDelay <= 0 {
		c.MissDelay = 200 * time.Millisecond
	}
	if c.Limit == 0 {
		c.Limit = 64
	}
	return c
}

// peakGetter is an origin that records the most requests it had in flight
// at once and answers the current version.
type peakGetter struct {
	delay    time.Duration // set between phases, while no request runs
	version  atomic.Int64
	inFlight atomic.Int64
	calls    atomic.Int64
	mu       sync.Mutex
	peak     int64 // guarded by mu
}

func (g *peakGetter) Get(ctx context.Context, a worker.Args) (worker.Value, error) {
	g.calls.Add(1)
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	g.mu.Lock()
	g.peak = max(g.peak, n)
	g.mu.Unlock()
	t := time.NewTimer(g.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return worker.Value{}, ctx.Err()
	}
	return worker.Value{Data: fmt.Appendf(nil, "v%d:%v", g.version.Load(), a["id"])}, nil
}

// resetPeak returns the peak so far and starts a new one.
func (g *peakGetter) resetPeak() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.peak
	g.peak = g.inFlight.Load()
	return p
}

// Origin runs the origin-protection scenario of issue 21 once with cfg's
// limit, on a single-node cluster "busy", whose worker db has cfg.Keys
// cached keys. It measures:
//
//   - origin-misses: cfg.Misses concurrent reads of distinct cold keys (worker
//     cold, same origin and limiter as db) on busy; the origin's peak, the answered reads and those
//     turned away (errors: origin_busy), and the latency of each kind;
//   - origin-refresh: the invalidation of the label db (cfg.Keys keys, read
//     once each so that they are refreshed, not dropped): the origin's peak,
//     the time Invalidate took and the time until every key was rebuilt;
//   - refresh-hits and idle-hits: hits of the bench worker on busy during
//     the refresh, and the same hits for idleHitsFor before it, with
//     opts.Callers callers each; the figure p99_ratio is refresh-hits' p99
//     over idle-hits'.
func Origin(ctx context.Context, opts Options, cfg OriginConfig) ([]*load.Result, error) {
	opts = opts.withDefaults()
	cfg = cfg.withDefaults()
	g := &peakGetter{delay: cfg.MissDelay}
	mode := "limit " + strconv.Itoa(cfg.Limit)
	if cfg.Limit < 0 {
		mode = "no limit"
	}
	busy, err := StartCluster(ctx, ClusterConfig{Size: 1, Membership: SteadyMembership(), ValueSize: opts.ValueSize,
		Logger: opts.Logger, NamePrefix: "busy",
		Setup: func(n *node.Node) error {
			var lim *worker.Limiter
			if cfg.Limit > 0 {
				var err error
				if lim, err = worker.NewLimiter(worker.LimiterConfig{Name: "origin", MaxConcurrent: cfg.Limit}); err != nil {
					return err
				}
			}
			for _, label := range []string{originLabel, coldLabel} {
				wc := worker.Config{Label: label, Getter: g, Limiter: lim,
					Settings: worker.Settings{Expires: time.Hour, DelayLogging: worker.Bool(true)}}
				if lim == nil {
					wc.MaxConcurrentFills = -1
				}
				if _, err := n.Cache().Register(wc); err != nil {
					return err
				}
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	defer busy.Close()
	bn := busy.Nodes[0]

	misses := originMisses(ctx, bn, g, cfg)
	misses.Notes = append(misses.Notes, mode, "origin "+cfg.MissDelay.String())
	g.delay = cfg.Delay

	// Fill the keys to invalidate, 64 at a time whatever the limit.
	if err := fillKeys(ctx, bn, cfg.Keys); err != nil {
		return []*load.Result{misses}, err
	}
	hitArgs := make([]worker.Args, opts.Keys)
	for i := range hitArgs {
		hitArgs[i] = worker.Args{"id": "h" + strconv.Itoa(i)}
		if _, _, err := bn.Get(ctx, Label, hitArgs[i], worker.Settings{}); err != nil {
			return []*load.Result{misses}, err
		}
	}
	hits := func(ctx context.Context) *load.Result {
		return load.Run(ctx, load.Config{Callers: opts.Callers}, func(ctx context.Context, c, j int) error {
			_, _, err := bn.Get(ctx, Label, hitArgs[(c*7919+j)%len(hitArgs)], worker.Settings{})
			return err
		})
	}
	// The same hits on the same node before the refresh: the baseline. (An
	// idle node in this process at the same time would share the refresh's
	// CPU and flatter the ratio.)
	bctx, stopBase := context.WithTimeout(ctx, idleHitsFor)
	hi := hits(bctx)
	stopBase()
	w, _ := bn.Cache().Worker(originLabel)
	before := w.Stats().InvalidationRefreshed
	g.resetPeak()
	g.version.Add(1)

	// The hits while the refresh runs.
	hctx, stopHits := context.WithCancel(ctx)
	out := make(chan *load.Result, 1)
	go func() { out <- hits(hctx) }()
	t0 := time.Now()
	res, err := bn.Invalidate(ctx, invalidation.Request{Label: originLabel})
	ret := time.Since(t0)
	if err == nil {
		for w.Stats().InvalidationRefreshed-before < int64(cfg.Keys) || w.Limiter() != nil && w.Limiter().Stats().InFlight > 0 {
			if ctx.Err() != nil || time.Since(t0) > 10*time.Minute {
				err = errors.New("scenario: the refresh did not end within 10 min")
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	done := time.Since(t0)
	stopHits()
	hb := <-out
	if err != nil {
		return []*load.Result{misses}, err
	}
	refresh := &load.Result{Scenario: "origin-refresh", System: "cachenode", Nodes: 1, Ops: int64(res.Keys), Keys: int64(cfg.Keys),
		Fills: g.calls.Load()}
	refresh.Figure("origin_peak", float64(g.resetPeak())).Figure("invalidate_return_ms", float64(ret.Microseconds())/1e3).
		Figure("refresh_s", done.Seconds()).Figure("origin_delay_ms", float64(cfg.Delay.Milliseconds()))
	refresh.Notes = append(refresh.Notes, mode)
	hb.Scenario, hb.System, hb.Nodes = "refresh-hits", "cachenode", 1
	hi.Scenario, hi.System, hi.Nodes = "idle-hits", "cachenode", 1
	if hi.Latency.P99 > 0 {
		hb.Figure("p99_ratio", hb.Latency.P99/hi.Latency.P99)
	}
	hb.Notes = append(hb.Notes, mode+"; hits of another worker on the node that refreshes")
	hi.Notes = append(hi.Notes, mode+"; the same hits on the same node for "+idleHitsFor.String()+" before the refresh")
	return []*load.Result{misses, refresh, hb, hi}, nil
}

// idleHitsFor is how long the origin scenario measures its baseline hits.
const idleHitsFor = 3 * time.Second

// originMisses reads cfg.Misses distinct cold keys at once.
func originMisses(ctx context.Context, n *node.Node, g *peakGetter, cfg OriginConfig) *load.Result {
	okRec, busyRec := load.NewRecorder(), load.NewRecorder()
	var ok, busy, other atomic.Int64
	g.resetPeak()
	calls0 := g.calls.Load()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range cfg.Misses {
		wg.Go(func() {
			t0 := time.Now()
			_, _, err := n.Get(ctx, coldLabel, worker.Args{"id": strconv.Itoa(i)}, worker.Settings{})
			switch {
			case err == nil:
				ok.Add(1)
				okRec.Record(time.Since(t0))
			case errors.Is(err, worker.ErrOriginBusy):
				busy.Add(1)
				busyRec.Record(time.Since(t0))
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	// Fills that started before their callers left end now; none may start.
	for g.inFlight.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	r := &load.Result{Scenario: "origin-misses", System: "cachenode", Nodes: 1, Callers: cfg.Misses,
		Keys: int64(cfg.Misses), Fills: g.calls.Load() - calls0, Hist: okRec.Histogram()}
	r.Ops, r.Errors = ok.Load(), busy.Load()+other.Load()
	r.Seconds = time.Since(start).Seconds()
	r.Latency = load.PercentilesOf(r.Hist)
	bp := load.PercentilesOf(busyRec.Histogram())
	r.Figure("origin_peak", float64(g.resetPeak())).Figure("origin_busy", float64(busy.Load())).
		Figure("other_errors", float64(other.Load())).Figure("busy_p50_ms", bp.P50/1e3).Figure("busy_p99_ms", bp.P99/1e3)
	return r
}

// fillKeys fills n keys of db, 64 reads at a time (a read counts as one:
// the invalidation refreshes them all).
func fillKeys(ctx context.Context, nd *node.Node, n int) error {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var first error
	var mu sync.Mutex
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for {
				_, _, err := nd.Get(ctx, originLabel, worker.Args{"id": strconv.Itoa(i)}, worker.Settings{})
				if errors.Is(err, worker.ErrOriginBusy) {
					continue // the misses phase may still hold the queue
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
				return
			}
		})
	}
	wg.Wait()
	return first
}
