package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// The benchmarks of the node's read paths. The figures and the load
// generator that measures the same paths with percentiles and against other
// systems are in bench/ and docs/BENCHMARKS.md.
//
//	go test -run '^$' -bench . -benchmem ./node/

// benchCluster starts size nodes on loopback, as newCluster does for tests
// (newCluster takes a *testing.T, which a benchmark does not have), with the
// worker "w" registered by g on every node; noNear selects the nodes that
// keep no near-cache copies.
func benchCluster(b *testing.B, size int, g *countingGetter, noNear func(i int) bool) *cluster {
	b.Helper()
	c := &cluster{}
	b.Cleanup(func() {
		for _, n := range c.nodes {
			n.Close()
		}
	})
	for i := range size {
		cfg := Config{
			Name:        fmt.Sprintf("n%d", i+1),
			Gossip:      "127.0.0.1:0",
			Peer:        "127.0.0.1:0",
			Membership:  steadyMembership(),
			Memory:      64 << 20,
			NoNearCache: noNear != nil && noNear(i),
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		if len(c.nodes) > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		withWorker(g, worker.Settings{Expires: time.Hour})(n)
		if err := n.Start(); err != nil {
			n.Close()
			b.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = n.WaitReady(ctx)
		cancel()
		if err != nil {
			b.Fatalf("%s not ready: %v", cfg.Name, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.converged() {
		if time.Now().After(deadline) {
			b.Fatal("ring not converged after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c
}

// remoteArgs returns count argument sets whose keys asker does not own.
func remoteArgs(b *testing.B, asker *Node, count int) []worker.Args {
	b.Helper()
	w, _ := asker.Cache().Worker("w")
	var out []worker.Args
	for i := 0; len(out) < count; i++ {
		a := worker.Args{"id": i}
		key, err := w.Key(a)
		if err != nil {
			b.Fatal(err)
		}
		if asker.Owner(key) != asker.Name() {
			out = append(out, a)
		}
	}
	return out
}

// parallelReads reads args through n from 50 goroutines (25 per
// GOMAXPROCS on this two-core machine) and reports the 50th and 99th
// percentiles of the reads' latency next to ns/op.
func parallelReads(b *testing.B, n *Node, args []worker.Args, want worker.Status) {
	ctx := context.Background()
	for _, a := range args {
		if _, _, err := n.Get(ctx, "w", a, worker.Settings{}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	var mu sync.Mutex
	var all []time.Duration
	var seq atomic.Int64
	var wrong atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		var lat []time.Duration
		var e worker.Entry // as the HTTP API reads: into an Entry of its own
		for pb.Next() {
			t0 := time.Now()
			st, err := n.GetInto(ctx, "w", args[i%len(args)], worker.Settings{}, &e)
			lat = append(lat, time.Since(t0))
			if err != nil {
				b.Error(err)
				return
			}
			if st != want {
				wrong.Add(1)
			}
			i++
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	if w := wrong.Load(); w > 0 {
		b.Errorf("%d reads not answered %v", w, want)
	}
	if len(all) > 0 {
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)/2])/1e3, "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100])/1e3, "p99-µs")
	}
}

// BenchmarkRemoteGet reads cached 100-byte values of other nodes' keys
// through a node that keeps no near-cache copies: every read is a round
// trip to the owner over the peer transport.
func BenchmarkRemoteGet(b *testing.B) {
	g := newCounting(0)
	c := benchCluster(b, 3, g, func(i int) bool { return i == 0 })
	parallelReads(b, c.nodes[0], remoteArgs(b, c.nodes[0], 1000), worker.Hit)
}

// BenchmarkNearCacheHit reads other nodes' keys through a node that keeps
// near-cache copies: after the first read every read is local.
func BenchmarkNearCacheHit(b *testing.B) {
	g := newCounting(0)
	c := benchCluster(b, 3, g, nil)
	parallelReads(b, c.nodes[0], remoteArgs(b, c.nodes[0], 1000), worker.Hit)
}

// BenchmarkColdFill reads a new key of another node each time: the owner
// runs the getter once, writes the created-cache record, and answers.
func BenchmarkColdFill(b *testing.B) {
	g := newCounting(0)
	c := benchCluster(b, 3, g, nil)
	asker := c.nodes[0]
	w, _ := asker.Cache().Worker("w")
	ctx := context.Background()
	next := 0
	for b.Loop() {
		var a worker.Args
		for {
			next++
			a = worker.Args{"id": next}
			key, _ := w.Key(a)
			if asker.Owner(key) != asker.Name() {
				break
			}
		}
		_, st, err := asker.Get(ctx, "w", a, worker.Settings{})
		if err != nil {
			b.Fatal(err)
		}
		if st != worker.Miss {
			b.Fatalf("cold read answered %v", st)
		}
	}
}
