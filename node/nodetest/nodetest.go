// Package nodetest starts clusters of nodes in one process, on loopback,
// for the tests and benchmarks of the packages around node: each node
// joins the first, and Start returns once they agree on one ring. A
// Cluster is a value with no package-level state, so that a test may run
// several side by side.
package nodetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cachenode/cachenode/node"
)

// Steady returns the membership preset of in-process clusters: it joins as
// fast as node.LocalMembership but takes seconds to declare a member dead.
// On two shared cores running the race detector, the local preset's
// sub-second failure detection can declare a starved but healthy member
// dead in the middle of a test (or a benchmark run), and the test would
// then see a ring change instead of the path it checks.
func Steady() node.Membership {
	m := node.LocalMembership()
	m.ProbeInterval = time.Second
	m.ProbeTimeout = 500 * time.Millisecond
	m.SuspicionMult = 6
	return m
}

// Config describes a Cluster.
type Config struct {
	// Size is the number of nodes Start starts.
	Size int
	// Membership is every node's membership. Default Steady().
	Membership node.Membership
	// NamePrefix prefixes the node names: n1, n2, ... Default "n".
	NamePrefix string
	// Join is the gossip address of a member of another cluster for the
	// first node to join. Default "": the first node starts a cluster.
	Join string
	// Memory is every node's Memory. Default 32 MiB.
	Memory int64
	// Logger is every node's logger. Default: discarded.
	Logger *slog.Logger
	// Configure, when set, changes the config of node i (from 0) before
	// node.New; Name, Gossip and Peer (loopback, free ports), Join,
	// Membership, Memory and Logger are set by then.
	Configure func(i int, cfg *node.Config)
	// Setup, when set, runs on node i after node.New and before Start:
	// register workers, serve an HTTP API. An error stops the cluster.
	Setup func(i int, n *node.Node) error
	// Timeout bounds each node's wait for readiness and the wait for the
	// ring's agreement. Default 15 s.
	Timeout time.Duration
}

// Cluster is a set of nodes in this process. Its methods are safe for
// concurrent use.
type Cluster struct {
	cfg Config
	mu  sync.Mutex
	// nodes are the started nodes, in the order of their names; guarded
	// by mu.
	nodes []*node.Node
}

// Start starts cfg.Size nodes, each joining the first, and waits until
// every one is ready and all agree on a ring of exactly them (and, with
// Join, of the other cluster's members). On an error it closes the nodes
// it started.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Membership == (node.Membership{}) {
		cfg.Membership = Steady()
	}
	if cfg.NamePrefix == "" {
		cfg.NamePrefix = "n"
	}
	if cfg.Memory == 0 {
		cfg.Memory = 32 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	c := &Cluster{cfg: cfg}
	for range cfg.Size {
		if _, err := c.Add(ctx); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	if cfg.Join == "" {
		if err := c.WaitConverged(ctx, nil); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	return c, nil
}

// Add starts one more node, named after the last, that joins the first
// node (or Config.Join for the first one), and waits until it is ready. It
// does not wait for the ring to converge: see WaitConverged.
func (c *Cluster) Add(ctx context.Context) (*node.Node, error) {
	c.mu.Lock()
	i := len(c.nodes)
	var join []string
	switch {
	case i > 0:
		join = []string{c.nodes[0].GossipAddr()}
	case c.cfg.Join != "":
		join = []string{c.cfg.Join}
	}
	c.mu.Unlock()
	cfg := node.Config{Name: c.cfg.NamePrefix + strconv.Itoa(i+1), Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Join: join,
		Membership: c.cfg.Membership, Memory: c.cfg.Memory, Logger: c.cfg.Logger}
	if c.cfg.Configure != nil {
		c.cfg.Configure(i, &cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		return nil, err
	}
	if c.cfg.Setup != nil {
		if err := c.cfg.Setup(i, n); err != nil {
			return nil, errors.Join(err, n.Close())
		}
	}
	if err := n.Start(); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := n.WaitReady(rctx); err != nil {
		return nil, errors.Join(fmt.Errorf("nodetest: %s not ready: %w", cfg.Name, err), n.Close())
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n, nil
}

// Nodes returns the started nodes, in the order of their names.
func (c *Cluster) Nodes() []*node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*node.Node(nil), c.nodes...)
}

// WaitConverged waits until every node is ready and its ring holds
// exactly the cluster's nodes plus the members named in extra, with one
// version everywhere.
func (c *Cluster) WaitConverged(ctx context.Context, extra []string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !Converged(c.Nodes(), extra) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodetest: ring not converged: %w", ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Converged reports whether every node of nodes is ready and its ring
// holds exactly nodes plus the members named in extra, with one version.
func Converged(nodes []*node.Node, extra []string) bool {
	want := len(nodes) + len(extra)
	for i, n := range nodes {
		r := n.Ring()
		if !n.Ready() || r == nil || r.Len() != want || r.Version() != nodes[0].Ring().Version() && i > 0 {
			return false
		}
		for _, m := range nodes {
			if !r.Has(m.Name()) {
				return false
			}
		}
		for _, m := range extra {
			if !r.Has(m) {
				return false
			}
		}
	}
	return true
}

// Close closes every node; their errors are joined. It is safe to call
// twice (a node's Close is).
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes() {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}
