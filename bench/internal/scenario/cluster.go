// Package scenario starts embedded cachenode clusters on loopback and runs
// the benchmark scenarios of bench/ against them.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/node/nodetest"
	"github.com/cachenode/cachenode/worker"
)

// Label is the worker every benchmark node registers; its argument is "id".
const Label = "bench"

// Options are the parameters shared by the scenarios.
type Options struct {
	// Nodes is the cluster size. Default 3.
	Nodes int
	// Callers is the number of concurrent callers of a closed-loop
	// scenario. Default 50.
	Callers int
	// Duration is the measured time of a closed-loop run. Default 5s.
	Duration time.Duration
	// Warmup runs before each measured run. Default 500ms.
	Warmup time.Duration
	// ValueSize is the size of the values in bytes. Default 100.
	ValueSize int
	// Keys is the key space of the hit scenarios. Default 1000.
	Keys int
	// FillDelay is how long a getter takes (the origin's latency) in the
	// stampede. Default 10ms.
	FillDelay time.Duration
	// Progress receives progress lines. Default nil.
	Progress io.Writer
	// Logger receives the nodes' logs. Default: warnings and errors to
	// io.Discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.Callers <= 0 {
		o.Callers = 50
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.ValueSize <= 0 {
		o.ValueSize = 100
	}
	if o.Keys <= 0 {
		o.Keys = 1000
	}
	if o.FillDelay < 0 {
		o.FillDelay = 0
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// SteadyMembership is nodetest.Steady: load scenarios use it, as on two
// shared cores the local preset's sub-second failure detection can declare
// a starved but healthy member dead in the middle of a run, and the figures
// would then measure a ring change instead of the path they name.
func SteadyMembership() node.Membership { return nodetest.Steady() }

// ClusterConfig describes an embedded cluster.
type ClusterConfig struct {
	// Size is the number of nodes.
	Size int
	// Membership is the gossip preset of every node.
	Membership node.Membership
	// NoNearCache reports whether node i keeps no near-cache copies.
	// Default nil: every node keeps them.
	NoNearCache func(i int) bool
	// ValueSize, FillDelay: see Options.
	ValueSize int
	FillDelay time.Duration
	// Data returns the Pebble directory of node i; nil or "" keeps the
	// records in memory.
	Data func(i int) string
	// Setup registers more workers on each node before it starts.
	Setup func(n *node.Node) error
	// Join is the gossip address of an existing member to join instead of
	// starting a new cluster. Default "".
	Join string
	// NamePrefix prefixes the node names. Default "n".
	NamePrefix string
	Logger     *slog.Logger
}

// Cluster is a set of nodes on loopback in this process, all with the
// bench worker registered.
type Cluster struct {
	Nodes []*node.Node
	Fills *FillCounter
	nodes *nodetest.Cluster
}

// StartCluster starts cfg.Size nodes that join the first one and waits
// until every node's ring holds all of them.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	c := &Cluster{Fills: NewFillCounter()}
	nc, err := nodetest.Start(ctx, nodetest.Config{Size: cfg.Size, Membership: cfg.Membership, NamePrefix: cfg.NamePrefix,
		Join: cfg.Join, Memory: 256 << 20, Logger: cfg.Logger,
		Configure: func(i int, nc *node.Config) {
			nc.NoNearCache = cfg.NoNearCache != nil && cfg.NoNearCache(i)
			if cfg.Data != nil {
				nc.Data = cfg.Data(i)
			}
		},
		Setup: func(_ int, n *node.Node) error {
			if err := RegisterBench(n, cfg.ValueSize, cfg.FillDelay, c.Fills); err != nil {
				return err
			}
			if cfg.Setup != nil {
				return cfg.Setup(n)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	c.nodes, c.Nodes = nc, nc.Nodes()
	return c, nil
}

// WaitConverged waits until every node's ring holds exactly the nodes of
// the cluster plus extra, with one version.
func (c *Cluster) WaitConverged(ctx context.Context, extra []string) error {
	return c.nodes.WaitConverged(ctx, extra)
}

// RingVersions returns the ring version of every node, to tell whether the
// membership changed during a run.
func (c *Cluster) RingVersions() []uint64 {
	out := make([]uint64, len(c.Nodes))
	for i, n := range c.Nodes {
		if r := n.Ring(); r != nil {
			out[i] = r.Version()
		}
	}
	return out
}

// Close closes every node.
func (c *Cluster) Close() error { return c.nodes.Close() }

// KeysOwnedBy returns count argument sets of the bench worker, numbered from
// first, whose keys are owned (in the ring of asker) by a member for which
// want returns true.
func KeysOwnedBy(asker *node.Node, prefix string, count int, want func(owner string) bool) ([]worker.Args, error) {
	w, ok := asker.Cache().Worker(Label)
	if !ok {
		return nil, errors.New("scenario: bench worker missing")
	}
	var out []worker.Args
	for i := 0; len(out) < count; i++ {
		if i > 1000*count+1000 {
			return nil, fmt.Errorf("scenario: found %d of %d keys with the wanted owner", len(out), count)
		}
		args := worker.Args{"id": prefix + strconv.Itoa(i)}
		key, err := w.Key(args)
		if err != nil {
			return nil, err
		}
		if want(asker.Owner(key)) {
			out = append(out, args)
		}
	}
	return out, nil
}

// RegisterBench registers the bench worker on n: its getter waits delay
// (the origin's latency), counts the fill in fills and returns a value of
// size bytes that depends on the key.
func RegisterBench(n *node.Node, size int, delay time.Duration, fills *FillCounter) error {
	_, err := n.Cache().Register(worker.Config{
		Label:    Label,
		Settings: worker.Settings{Expires: time.Hour},
		Getter: worker.GetterFunc(func(ctx context.Context, args worker.Args) (worker.Value, error) {
			id := fmt.Sprint(args["id"])
			if fills != nil {
				fills.Add(id)
			}
			if delay > 0 {
				t := time.NewTimer(delay)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return worker.Value{}, ctx.Err()
				}
			}
			return worker.Value{Data: Value(id, size), ContentType: "application/octet-stream"}, nil
		}),
	})
	return err
}

// Value is the value of key id: size bytes, starting with the id.
func Value(id string, size int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	copy(v, id)
	return v
}

// FillCounter counts getter runs per key. It is safe for concurrent use.
type FillCounter struct {
	total atomic.Int64
	mu    sync.Mutex
	byKey map[string]int // guarded by mu
}

// NewFillCounter returns a zero counter.
func NewFillCounter() *FillCounter { return &FillCounter{byKey: make(map[string]int)} }

// Add counts one fill of id.
func (f *FillCounter) Add(id string) {
	f.total.Add(1)
	f.mu.Lock()
	f.byKey[id]++
	f.mu.Unlock()
}

// Total returns the number of fills so far.
func (f *FillCounter) Total() int64 { return f.total.Load() }

// Of returns the fills of each id in ids: their sum and maximum.
func (f *FillCounter) Of(ids []string) (sum, most int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		n := f.byKey[id]
		sum += n
		most = max(most, n)
	}
	return sum, most
}
