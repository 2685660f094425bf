package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/worker"
)

func TestPartitionedMemberServesNoInvalidatedValueAfterHeal(t *testing.T) {
	db := newFooDB()
	c := startCluster(&cluster{t: t, setup: db.register, membership: LocalMembership(), hooks: map[string]*cutter{}}, 3)
	n1, n3 := c.nodes[0], c.nodes[2]
	// One variant owned by the node that will be cut off, one by another.
	var mine, theirs worker.Args
	for a1 := range 50 {
		v := worker.Args{"attr1": a1, "attr2": "a"}
		key, _ := worker.KeyOf("filtered_foos", v)
		switch o := n1.Owner(key); {
		case o == "n3" && mine == nil:
			mine = v
		case o != "n3" && theirs == nil:
			theirs = v
		}
	}
	db.set(1000, foo{Attr1: mine["attr1"].(int), Attr2: "a"})
	db.set(1001, foo{Attr1: theirs["attr1"].(int), Attr2: "a"})
	for _, n := range c.nodes {
		get(t, n, "filtered_foos", mine)
		get(t, n, "filtered_foos", theirs)
	}

	c.hooks["n3"].set(true)
	waitFor(t, 10*time.Second, "both sides to see the partition", func() bool {
		return n1.Ring().Len() == 2 && c.nodes[1].Ring().Len() == 2 && n3.Ring().Len() == 1
	})
	// While cut off, n3 answers from what it can compute alone.
	get(t, n3, "filtered_foos", mine)
	get(t, n3, "filtered_foos", theirs)

	// The data changes on the majority side: both foos leave the buckets.
	db.set(1000, foo{Attr1: 99, Attr2: "z"})
	db.set(1001, foo{Attr1: 99, Attr2: "z"})
	res, err := n1.Invalidate(context.Background(), invalidation.Request{Model: "Foo", Changes: []invalidation.Change{
		{Op: "update", Old: map[string]any{"attr1": mine["attr1"], "attr2": "a"}, New: map[string]any{"attr1": 99, "attr2": "z"}},
		{Op: "update", Old: map[string]any{"attr1": theirs["attr1"], "attr2": "a"}, New: map[string]any{"attr1": 99, "attr2": "z"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("invalidation during the partition: %+v", res)

	c.hooks["n3"].set(false)
	took := c.waitConverged(15 * time.Second)
	t.Logf("healed and converged in %v", took)
	for _, n := range c.nodes {
		for _, v := range []worker.Args{mine, theirs} {
			if got := get(t, n, "filtered_foos", v); strings.Contains(","+got+",", ",100") {
				t.Errorf("%s serves %v with an invalidated foo after the heal: %q", n.Name(), v, got)
			}
		}
	}
}

func TestDelayedInvalidationSurvivesRestart(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 2, db.register)
	dir := t.TempDir()
	cfg := Config{Name: "n3", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: steadyMembership(),
		Data: filepath.Join(dir, "n3"), Join: []string{c.nodes[0].GossipAddr()}}
	start := func() *Node {
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		db.register(n)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	n3 := start()
	v := worker.Args{"attr1": 2, "attr2": "b"}
	for _, n := range append(c.nodes, n3) {
		get(t, n, "filtered_foos", v)
	}
	res, err := n3.Invalidate(context.Background(), invalidation.Request{
		Label: "filtered_foos", Args: v, Delay: worker.Bool(true), Countdown: invalidation.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Queued == 0 {
		t.Fatalf("not queued: %+v", res)
	}
	if err := n3.Close(); err != nil {
		t.Fatal(err)
	}
	if db.count("filtered_foos", v) != 1 {
		t.Fatal("applied before the countdown")
	}
	if _, err := os.Stat(cfg.Data); err != nil {
		t.Fatal(err)
	}
	n3 = start()
	defer n3.Close()
	waitFor(t, 10*time.Second, "the delayed invalidation", func() bool { return db.count("filtered_foos", v) == 2 })
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool {
		items, err := n3.Store().Pending()
		return err == nil && len(items) == 0
	})
	// The item is acknowledged only after it was applied, so it cannot be
	// applied again.
	if got := db.count("filtered_foos", v); got != 2 {
		t.Fatalf("applied %d times", got-1)
	}
}
