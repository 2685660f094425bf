package node

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/cachenode/cachenode/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's package-level metrics sink lives for the process.
		goleak.IgnoreTopFunction("github.com/hashicorp/go-metrics.(*InmemSink).run"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/go-metrics.NewInmemSink"),
		// memberlist's Shutdown does not wait for a probe in flight: the
		// probe's goroutine ends on its own after the probe timeout.
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	)
}

// cluster is a set of nodes on loopback in one process.
type cluster struct {
	t          *testing.T
	nodes      []*Node
	setup      func(*Node) // registers the workers of each node
	membership Membership
	hooks      map[string]*cutter // by node name, when the test cuts nodes off
	configure  func(*Config)      // changes each node's config, when set
}

// steadyMembership joins as fast as LocalMembership but is slow to declare
// members dead. The tests that count fills use it: one fill per key holds
// while the members agree on the ring, and on a two-core CI machine running
// the race detector, the fast preset's sub-second failure detection can
// declare a starved but healthy member dead in the middle of such a test.
func steadyMembership() Membership {
	m := LocalMembership()
	m.ProbeInterval = time.Second
	m.ProbeTimeout = 500 * time.Millisecond
	m.SuspicionMult = 6
	return m
}

// newCluster starts size nodes with the steady membership preset.
func newCluster(t *testing.T, size int, setup func(*Node)) *cluster {
	return newClusterWith(t, size, setup, steadyMembership())
}

func newClusterWith(t *testing.T, size int, setup func(*Node), m Membership) *cluster {
	t.Helper()
	return startCluster(&cluster{t: t, setup: setup, membership: m}, size)
}

func startCluster(c *cluster, size int) *cluster {
	t := c.t
	t.Helper()
	for i := range size {
		c.add(fmt.Sprintf("n%d", i+1))
	}
	c.waitConverged(20 * time.Second)
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Close()
		}
	})
	return c
}

// add starts a node that joins the first node of the cluster.
func (c *cluster) add(name string) *Node {
	c.t.Helper()
	cfg := Config{
		Name:       name,
		Gossip:     "127.0.0.1:0",
		Peer:       "127.0.0.1:0",
		Membership: c.membership,
		Memory:     64 << 20,
		Logger:     slog.New(slog.NewTextHandler(testWriter{c.t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if c.configure != nil {
		c.configure(&cfg)
	}
	if c.hooks != nil {
		c.hooks[name] = newCutter()
		cfg.hook = c.hooks[name]
	}
	for _, n := range c.nodes {
		if n.Ready() {
			cfg.Join = []string{n.GossipAddr()}
			break
		}
	}
	n, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.setup != nil {
		c.setup(n)
	}
	if err := n.Start(); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		c.t.Fatalf("%s not ready: %v", name, err)
	}
	c.nodes = append(c.nodes, n)
	return n
}

// live returns the nodes that were not closed.
func (c *cluster) live() []*Node {
	var out []*Node
	for _, n := range c.nodes {
		n.mu.Lock()
		closed := n.mu.closed
		n.mu.Unlock()
		if !closed {
			out = append(out, n)
		}
	}
	return out
}

// converged reports whether every live node has a ring of exactly the live
// nodes, with the same version.
func (c *cluster) converged() bool {
	live := c.live()
	var version uint64
	for i, n := range live {
		r := n.Ring()
		if r == nil || r.Len() != len(live) {
			return false
		}
		for _, m := range live {
			if !r.Has(m.Name()) {
				return false
			}
		}
		if i == 0 {
			version = r.Version()
		} else if r.Version() != version {
			return false
		}
	}
	return true
}

// waitConverged waits for converged and returns how long it took.
func (c *cluster) waitConverged(limit time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for !c.converged() {
		if time.Since(start) > limit {
			for _, n := range c.live() {
				c.t.Logf("%s sees %v", n.Name(), n.Ring().Members())
			}
			c.t.Fatalf("ring not converged after %v", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// advanceUntil moves clock on by step until cond holds, for at most limit of
// real time. The loops on the clock (outbox, redelivery) each wait on a
// timer that they set after their previous round, so one jump of the
// clock can come before a loop set its next timer: moving on in steps
// reaches every loop whenever it sets it.
func advanceUntil(t *testing.T, clock *clockwork.FakeClock, step, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, limit, what, func() bool {
		if cond() {
			return true
		}
		clock.Advance(step)
		return false
	})
}

// countingGetter returns a getter that counts its runs per key.
type countingGetter struct {
	mu    chan struct{}
	calls map[string]int
	delay time.Duration
}

func newCounting(delay time.Duration) *countingGetter {
	g := &countingGetter{mu: make(chan struct{}, 1), calls: map[string]int{}, delay: delay}
	return g
}

func (g *countingGetter) getter() worker.Getter {
	return worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
		k := fmt.Sprint(a["id"])
		g.mu <- struct{}{}
		g.calls[k]++
		<-g.mu
		if g.delay > 0 {
			select {
			case <-time.After(g.delay):
			case <-ctx.Done():
				return worker.Value{}, ctx.Err()
			}
		}
		return worker.Value{Data: []byte("value-" + k), ContentType: "text/plain"}, nil
	})
}

func (g *countingGetter) count(k string) int {
	g.mu <- struct{}{}
	defer func() { <-g.mu }()
	return g.calls[k]
}

func (g *countingGetter) snapshot() map[string]int {
	g.mu <- struct{}{}
	defer func() { <-g.mu }()
	out := make(map[string]int, len(g.calls))
	for k, v := range g.calls {
		out[k] = v
	}
	return out
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
