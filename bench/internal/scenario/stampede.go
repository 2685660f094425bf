package scenario

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/worker"
)

// Stampede asks cold keys from many callers spread over every node at the
// same moment and counts how often the getter ran. Create it with
// NewStampede, run rounds with Round, then Close.
type Stampede struct {
	opts  Options
	c     *Cluster
	round int
}

// NewStampede starts a cluster of opts.Nodes nodes with the default
// configuration (near cache on) and a getter that takes opts.FillDelay.
func NewStampede(ctx context.Context, opts Options) (*Stampede, error) {
	opts = opts.withDefaults()
	c, err := StartCluster(ctx, ClusterConfig{
		Size:       opts.Nodes,
		Membership: SteadyMembership(),
		ValueSize:  opts.ValueSize,
		FillDelay:  opts.FillDelay,
		Logger:     opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Stampede{opts: opts, c: c}, nil
}

// Round asks keys fresh keys from callers callers, caller c on node
// c mod Nodes, each caller every key in its own random order, all
// starting together. The result counts every Get as an operation, Fills the
// getter runs for the round's keys, and has the figures
// "max_fills_per_key" and "round_ms".
func (s *Stampede) Round(ctx context.Context, keys, callers int) *load.Result {
	s.round++
	ids := make([]string, keys)
	args := make([]worker.Args, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%d-%d", s.round, i)
		args[i] = worker.Args{"id": ids[i]}
	}
	rec := load.NewRecorder()
	var ops, errs atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for c := range callers {
		n := s.c.Nodes[c%len(s.c.Nodes)]
		order := rand.New(rand.NewPCG(uint64(s.round), uint64(c))).Perm(keys)
		wg.Go(func() {
			<-start
			for _, k := range order {
				t0 := time.Now()
				_, st, err := n.Get(ctx, Label, args[k], worker.Settings{})
				if err != nil || st == worker.Fallback {
					errs.Add(1)
					continue
				}
				rec.Record(time.Since(t0))
				ops.Add(1)
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	r := load.NewResult(rec.Histogram(), ops.Load(), elapsed)
	r.Scenario = StampedeName(keys)
	r.System, r.Nodes, r.Callers = "cachenode", len(s.c.Nodes), callers
	r.Errors = errs.Load()
	sum, most := s.c.Fills.Of(ids)
	r.Keys, r.Fills = int64(keys), int64(sum)
	r.Figure("max_fills_per_key", float64(most)).Figure("round_ms", float64(elapsed.Microseconds())/1e3)
	return r
}

// StampedeName is the scenario name of a stampede over keys keys.
func StampedeName(keys int) string {
	if keys == 1 {
		return "stampede-1-key"
	}
	return fmt.Sprintf("stampede-%d-keys", keys)
}

// Close stops the cluster.
func (s *Stampede) Close() error { return s.c.Close() }
