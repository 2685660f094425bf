package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/bench/internal/scenario"
)

// system is one of the compared systems, started once and measured many
// times.
type system interface {
	// name is the system's name in the results.
	name() string
	// remoteHit reads cached 100-byte values owned by other members
	// through member 0 with the configured callers and duration.
	remoteHit(ctx context.Context) *load.Result
	// stampede asks keys cold keys from callers callers spread over every
	// member, each caller every key in its own order, all at once.
	stampede(ctx context.Context, keys, callers int) *load.Result
	close() error
}

// ours is cachenode: one embedded cluster for the remote hits (asking node
// without near cache) and one for the stampedes (default configuration).
type ours struct {
	hits *scenario.Hits
	st   *scenario.Stampede
	opts scenario.Options
}

func newOurs(ctx context.Context, opts scenario.Options) (*ours, error) {
	h, err := scenario.NewHits(ctx, scenario.RemoteHit, opts)
	if err != nil {
		return nil, err
	}
	st, err := scenario.NewStampede(ctx, opts)
	if err != nil {
		h.Close()
		return nil, err
	}
	return &ours{hits: h, st: st, opts: opts}, nil
}

func (o *ours) name() string { return "cachenode" }

func (o *ours) remoteHit(ctx context.Context) *load.Result {
	return o.hits.Run(ctx)
}

func (o *ours) stampede(ctx context.Context, keys, callers int) *load.Result {
	return o.st.Round(ctx, keys, callers)
}

func (o *ours) close() error {
	o.st.Close()
	return o.hits.Close()
}

// stampedeRun is what a set of stampede callers measured.
type stampedeRun struct {
	Ops    int64                   `json:"ops"`
	Errors int64                   `json:"errors"`
	Hist   *hdrhistogram.Snapshot  `json:"hist"`
	End    int64                   `json:"end_unix_nano"`
	hist   *hdrhistogram.Histogram // in this process only
}

// runStampede runs the callers numbered first, first+stride, ... below
// total: each waits until start, then calls get for every id in the order
// of the permutation seeded with (round, caller), as the cachenode
// stampede does.
func runStampede(ctx context.Context, get func(ctx context.Context, caller int, id string) error,
	ids []string, round, first, stride, total int, start time.Time) stampedeRun {
	rec := load.NewRecorder()
	var ops, errs atomic.Int64
	var wg sync.WaitGroup
	for c := first; c < total; c += stride {
		order := rand.New(rand.NewPCG(uint64(round), uint64(c))).Perm(len(ids))
		wg.Go(func() {
			time.Sleep(time.Until(start))
			for _, k := range order {
				t0 := time.Now()
				if err := get(ctx, c, ids[k]); err != nil {
					errs.Add(1)
					continue
				}
				rec.Record(time.Since(t0))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	h := rec.Histogram()
	return stampedeRun{Ops: ops.Load(), Errors: errs.Load(), Hist: h.Export(), End: time.Now().UnixNano(), hist: h}
}

// fillCounter counts loads per key. It is safe for concurrent use.
type fillCounter struct {
	mu    sync.Mutex
	byKey map[string]int // guarded by mu
}

func newFillCounter() *fillCounter { return &fillCounter{byKey: make(map[string]int)} }

func (f *fillCounter) add(id string) {
	f.mu.Lock()
	f.byKey[id]++
	f.mu.Unlock()
}

// of returns the loads of each of ids.
func (f *fillCounter) of(ids []string) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(ids))
	for _, id := range ids {
		if n := f.byKey[id]; n > 0 {
			out[id] = n
		}
	}
	return out
}

// fillFigures sets the fills of a stampede result from loads per key.
func fillFigures(r *load.Result, ids []string, byKey map[string]int) {
	sum, most := 0, 0
	for _, id := range ids {
		sum += byKey[id]
		most = max(most, byKey[id])
	}
	r.Keys, r.Fills = int64(len(ids)), int64(sum)
	r.Figure("max_fills_per_key", float64(most))
}

// getLoop returns the op of a closed loop that reads ids with get, caller
// c starting at a different place.
func getLoop(ids []string, get func(ctx context.Context, id string) error) load.Op {
	return func(ctx context.Context, c, i int) error {
		return get(ctx, ids[(c*7919+i)%len(ids)])
	}
}
