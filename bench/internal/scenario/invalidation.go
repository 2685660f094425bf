package scenario

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// Labels and model of the invalidation scenarios.
const (
	versionLabel = "versioned" // value: the current version of the world
	itemsLabel   = "items"     // one variant per category "cat"
	itemsModel   = "Item"
)

// Invalidation measures how long an invalidation takes to be visible on
// every node, and how many bulk change events a cluster applies per second.
type Invalidation struct {
	opts    Options
	c       *Cluster
	version atomic.Int64 // what the versioned getter returns
	round   int
}

// NewInvalidation starts a cluster of opts.Nodes nodes (5 in the
// benchmarks) with near caches on, a worker whose value is the current
// version, and a worker with a declarative rule for model Item on its
// argument "cat".
func NewInvalidation(ctx context.Context, opts Options) (*Invalidation, error) {
	opts = opts.withDefaults()
	v := &Invalidation{opts: opts}
	c, err := StartCluster(ctx, ClusterConfig{
		Size:       opts.Nodes,
		Membership: SteadyMembership(),
		ValueSize:  opts.ValueSize,
		Logger:     opts.Logger,
		Setup: func(n *node.Node) error {
			if _, err := n.Cache().Register(worker.Config{
				Label:    versionLabel,
				Settings: worker.Settings{Expires: time.Hour},
				Getter: worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
					return worker.Value{Data: []byte("v" + strconv.FormatInt(v.version.Load(), 10))}, nil
				}),
			}); err != nil {
				return err
			}
			if _, err := n.Cache().Register(worker.Config{
				Label:    itemsLabel,
				Settings: worker.Settings{Expires: time.Hour},
				Getter: worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
					return worker.Value{Data: Value(fmt.Sprint(args["cat"]), opts.ValueSize)}, nil
				}),
			}); err != nil {
				return err
			}
			return n.RegisterRules(itemsModel, map[string]invalidation.Rule{itemsLabel: {Args: []string{"cat"}}})
		},
	})
	if err != nil {
		return nil, err
	}
	v.c = c
	return v, nil
}

// Visibility runs rounds invalidations of one key, each from the next node
// in turn, after every node cached the key (the owner its entry, the others
// near-cache copies). It returns two results: "invalidate-return", the time
// Node.Invalidate took, and "invalidate-visible", the time from the call
// until a read on every node returned the new value. Reads that returned the
// old value after Invalidate had returned are counted as errors of the
// second result (the contract says there must be none).
func (v *Invalidation) Visibility(ctx context.Context, rounds int) (ret, visible *load.Result, err error) {
	retRec, visRec := load.NewRecorder(), load.NewRecorder()
	var stale, errs int64
	keys := 10
	start := time.Now()
	for r := range rounds {
		args := worker.Args{"id": strconv.Itoa(r % keys)}
		// Every node holds the key's value before the round (the owner its
		// entry, the others near-cache copies), and they agree.
		var old []byte
		for _, n := range v.c.Nodes {
			e, _, err := n.Get(ctx, versionLabel, args, worker.Settings{})
			if err != nil {
				return nil, nil, err
			}
			if old == nil {
				old = e.Value
			} else if !bytes.Equal(e.Value, old) {
				return nil, nil, fmt.Errorf("scenario: %s serves %q before round %d, %s serves %q",
					n.Name(), e.Value, r, v.c.Nodes[0].Name(), old)
			}
		}
		want := []byte("v" + strconv.FormatInt(v.version.Add(1), 10))
		from := v.c.Nodes[r%len(v.c.Nodes)]
		t0 := time.Now()
		res, err := from.Invalidate(ctx, invalidation.Request{Label: versionLabel, Args: args})
		took := time.Since(t0)
		if err != nil {
			errs++
			continue
		}
		if len(res.Missing) > 0 {
			errs++
		}
		retRec.Record(took)
		// Poll every node until each serves the new value.
		pending := append([]*node.Node(nil), v.c.Nodes...)
		for len(pending) > 0 && ctx.Err() == nil {
			rest := pending[:0]
			for _, n := range pending {
				e, _, err := n.Get(ctx, versionLabel, args, worker.Settings{})
				switch {
				case err != nil:
					errs++
					rest = append(rest, n)
				case bytes.Equal(e.Value, want):
				default:
					stale++
					rest = append(rest, n)
				}
			}
			pending = rest
		}
		visRec.Record(time.Since(t0))
	}
	elapsed := time.Since(start)
	ret = load.NewResult(retRec.Histogram(), int64(rounds)-errs, elapsed)
	ret.Scenario, ret.System, ret.Nodes, ret.Callers = "invalidate-return", "cachenode", len(v.c.Nodes), 1
	visible = load.NewResult(visRec.Histogram(), int64(rounds), elapsed)
	visible.Scenario, visible.System, visible.Nodes, visible.Callers = "invalidate-visible", "cachenode", len(v.c.Nodes), 1
	visible.Errors = stale + errs
	visible.Figure("stale_reads_after_return", float64(stale))
	if stale > 0 {
		visible.Note("%d reads served the old value after Invalidate returned", stale)
	}
	return ret, visible, nil
}

// Bulk caches cats variants of the items worker, then sends events events
// of the model Item, each with changes updates that move records between
// categories so that every cached variant is affected, one event after the
// other from the next node in turn. The result counts events as operations
// (their latency is Invalidate's), with the figures "changes_per_sec" and
// "keys_per_event".
func (v *Invalidation) Bulk(ctx context.Context, events, changes, cats int) (*load.Result, error) {
	for c := range cats {
		n := v.c.Nodes[c%len(v.c.Nodes)]
		if _, _, err := n.Get(ctx, itemsLabel, worker.Args{"cat": c}, worker.Settings{}); err != nil {
			return nil, err
		}
	}
	rec := load.NewRecorder()
	var errs, keys int64
	start := time.Now()
	for e := range events {
		v.round++
		ch := make([]invalidation.Change, changes)
		for i := range ch {
			ch[i] = invalidation.Change{
				Op:  invalidation.OpUpdate,
				Old: map[string]any{"id": i, "cat": (i + v.round) % cats, "name": "x"},
				New: map[string]any{"id": i, "cat": (i + v.round + 1) % cats, "name": "y"},
			}
		}
		from := v.c.Nodes[e%len(v.c.Nodes)]
		t0 := time.Now()
		res, err := from.Invalidate(ctx, invalidation.Request{Model: itemsModel, Changes: ch})
		if err != nil || len(res.Missing) > 0 {
			errs++
			continue
		}
		rec.Record(time.Since(t0))
		keys += int64(res.Keys)
	}
	elapsed := time.Since(start)
	ok := int64(events) - errs
	r := load.NewResult(rec.Histogram(), ok, elapsed)
	r.Scenario, r.System, r.Nodes, r.Callers = "bulk-invalidation", "cachenode", len(v.c.Nodes), 1
	r.Errors, r.Keys = errs, int64(cats)
	r.Figure("changes_per_event", float64(changes))
	r.Figure("changes_per_sec", float64(ok*int64(changes))/elapsed.Seconds())
	if ok > 0 {
		r.Figure("keys_per_event", float64(keys)/float64(ok))
	}
	return r, nil
}

// Close stops the cluster.
func (v *Invalidation) Close() error { return v.c.Close() }
