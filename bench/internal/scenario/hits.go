package scenario

import (
	"context"
	"fmt"
	"slices"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/worker"
)

// HitKind says which read path a Hits scenario measures.
type HitKind int

const (
	// OwnerHit: keys owned by the asking node, cached there.
	OwnerHit HitKind = iota
	// NearHit: keys owned by other nodes, answered from the asking node's
	// near-cache copies.
	NearHit
	// RemoteHit: keys owned by other nodes, the asking node keeps no
	// near-cache copies (Config.NoNearCache), so every Get is a round trip
	// to the owner over the peer transport.
	RemoteHit
)

// Name is the scenario name of k in results.
func (k HitKind) Name() string {
	return [...]string{"owner-hit", "near-cache-hit", "remote-hit"}[k]
}

// Hits measures cached reads through node 0 of an embedded cluster. Create
// it with NewHits, call Run as often as needed, then Close.
type Hits struct {
	kind HitKind
	opts Options
	c    *Cluster
	args []worker.Args
}

// NewHits starts a cluster for kind and fills opts.Keys keys of the kind
// through node 0.
func NewHits(ctx context.Context, kind HitKind, opts Options) (*Hits, error) {
	opts = opts.withDefaults()
	c, err := StartCluster(ctx, ClusterConfig{
		Size:        opts.Nodes,
		Membership:  SteadyMembership(),
		NoNearCache: func(i int) bool { return kind == RemoteHit && i == 0 },
		ValueSize:   opts.ValueSize,
		Logger:      opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	asker := c.Nodes[0]
	self := asker.Name()
	args, err := KeysOwnedBy(asker, "k", opts.Keys, func(owner string) bool {
		return (owner == self) == (kind == OwnerHit)
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	h := &Hits{kind: kind, opts: opts, c: c, args: args}
	for _, a := range args {
		e, _, err := asker.Get(ctx, Label, a, worker.Settings{})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("scenario: fill %v: %w", a, err)
		}
		if want := (kind == OwnerHit); (e.Owner == self) != want {
			c.Close()
			return nil, fmt.Errorf("scenario: %v owned by %s, want owner==%s to be %v", a, e.Owner, self, want)
		}
	}
	return h, nil
}

// Run reads the filled keys through node 0 with opts.Callers callers for
// opts.Duration. Fills counts the getter runs during the run (0 when every
// read was a hit).
func (h *Hits) Run(ctx context.Context) *load.Result {
	asker := h.c.Nodes[0]
	n := len(h.args)
	before := h.c.Fills.Total()
	versions := h.c.RingVersions()
	var notHit [4]int64
	var counts = make([][4]int64, h.opts.Callers)
	r := load.Run(ctx, load.Config{
		Name: "cachenode " + h.kind.Name(), Callers: h.opts.Callers, Duration: h.opts.Duration,
		Warmup: h.opts.Warmup, Progress: h.opts.Progress,
	}, func(ctx context.Context, caller, i int) error {
		_, st, err := asker.Get(ctx, Label, h.args[(caller*7919+i)%n], worker.Settings{})
		if err == nil && int(st) < len(counts[caller]) {
			counts[caller][st]++
		}
		return err
	})
	for _, c := range counts {
		for s := range c {
			notHit[s] += c[s]
		}
	}
	r.Scenario, r.System, r.Nodes = h.kind.Name(), "cachenode", h.opts.Nodes
	r.Keys = int64(n)
	r.Fills = h.c.Fills.Total() - before
	for s, c := range notHit {
		if s != int(worker.Hit) && c > 0 {
			r.Note("%d reads answered %s", c, worker.Status(s))
		}
	}
	if !slices.Equal(versions, h.c.RingVersions()) {
		r.Note("the ring changed during the run")
	}
	return r
}

// Close stops the cluster.
func (h *Hits) Close() error { return h.c.Close() }
