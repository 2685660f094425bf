package node

import (
	"github.com/jonboulle/clockwork"

	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
	// An invalidation sent to the cut-off side says it did not reach the
	// members that side holds for dead (chaos K5).
	res3, err := n3.Invalidate(context.Background(), invalidation.Request{Label: "filtered_foos", Args: worker.Args{"attr1": 77, "attr2": "q"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res3.Missing) != 2 {
		t.Fatalf("the minority side reported %+v; want n1 and n2 missing", res3)
	}

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
	clock := clockwork.NewFakeClock()
	c := startCluster(&cluster{t: t, setup: db.register, membership: steadyMembership(),
		configure: func(cfg *Config) { cfg.Clock = clock }}, 2)
	dir := t.TempDir()
	cfg := Config{Name: "n3", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: steadyMembership(),
		Data: filepath.Join(dir, "n3"), Join: []string{c.nodes[0].GossipAddr()}, Clock: clock}
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
	advanceUntil(t, clock, outboxPoll, 10*time.Second, "the delayed invalidation", func() bool { return db.count("filtered_foos", v) == 2 })
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

// TestDelayedInvalidationOfALeavingNodeIsApplied is the regression test of
// chaos K6: a delayed invalidation accepted by a node that then left
// gracefully before its countdown was never applied.
func TestDelayedInvalidationOfALeavingNodeIsApplied(t *testing.T) {
	db := newFooDB()
	clock := clockwork.NewFakeClock()
	c := startCluster(&cluster{t: t, setup: db.register, membership: steadyMembership(),
		configure: func(cfg *Config) { cfg.Clock = clock }}, 3)
	v := worker.Args{"attr1": 1, "attr2": "a"}
	for _, n := range c.nodes {
		get(t, n, "filtered_foos", v)
	}
	leaving := c.nodes[2]
	res, err := leaving.Invalidate(context.Background(), invalidation.Request{
		Label: "filtered_foos", Args: v, Delay: worker.Bool(true), Countdown: invalidation.Duration(time.Second)})
	if err != nil || res.Queued == 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if err := leaving.Close(); err != nil {
		t.Fatal(err)
	}
	advanceUntil(t, clock, outboxPoll, 10*time.Second, "the handed-over invalidation", func() bool { return db.count("filtered_foos", v) == 2 })
}

// TestHandoffSkipsKeysBeingRebuilt is the regression test of chaos K7: a
// node leaving while an invalidation rebuilt one of its keys handed the
// invalidated value to the key's next owner.
func TestHandoffSkipsKeysBeingRebuilt(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 3, db.register)
	var v worker.Args
	var key string
	for a1 := range 100 {
		cand := worker.Args{"attr1": a1, "attr2": "a"}
		k, _ := worker.KeyOf("filtered_foos", cand)
		if c.nodes[0].Owner(k) == "n3" {
			v, key = cand, k
			break
		}
	}
	n3 := c.nodes[2]
	get(t, n3, "filtered_foos", v)
	gate := make(chan struct{})
	db.mu.Lock()
	db.gate = gate
	db.mu.Unlock()
	go c.nodes[0].Invalidate(context.Background(), invalidation.Request{Label: "filtered_foos", Args: v})
	waitFor(t, 10*time.Second, "the rebuild on n3", func() bool { return db.count("filtered_foos", v) == 2 })
	closed := make(chan error, 1)
	go func() { closed <- n3.Close() }()
	waitFor(t, 10*time.Second, "n3 gone from the others' rings", func() bool {
		return !c.nodes[0].Ring().Has("n3") && !c.nodes[1].Ring().Has("n3")
	})
	next := c.byName(c.nodes[0].Owner(key))
	e, ok := next.Cache().Lookup(key)
	close(gate)
	<-closed
	if ok {
		t.Fatalf("the next owner %s got %q handed over while its invalidation was being applied", next.Name(), e.Value)
	}
}

// TestMissedEventsRebuildAKeyOnce is chaos K4: a member cut off while a
// key it owns is invalidated several times gets every missed event at once
// when the partition heals, and must rebuild the key once, not once per
// event.
func TestMissedEventsRebuildAKeyOnce(t *testing.T) {
	db := newFooDB()
	c := startCluster(&cluster{t: t, setup: db.register, membership: LocalMembership(), hooks: map[string]*cutter{}}, 3)
	n1, n2 := c.nodes[0], c.nodes[1]
	v := variantOwnedBy(t, n1, "n1")
	get(t, n1, "filtered_foos", v)

	c.hooks["n1"].set(true)
	waitFor(t, 10*time.Second, "both sides to see the partition", func() bool {
		return n1.Ring().Len() == 1 && n2.Ring().Len() == 2 && c.nodes[2].Ring().Len() == 2
	})
	const events = 4
	for i := range events {
		db.set(600+i, foo{Attr1: v["attr1"].(int), Attr2: "a"})
		if _, err := n2.Invalidate(context.Background(), invalidation.Request{Label: "filtered_foos", Args: v}); err != nil {
			t.Fatal(err)
		}
	}
	get(t, n1, "filtered_foos", v) // n1, alone, serves what it has
	n1.events.mu.Lock()
	before := n1.events.t.Logged()
	n1.events.mu.Unlock()
	fills := db.count("filtered_foos", v)

	c.hooks["n1"].set(false)
	c.waitConverged(15 * time.Second)
	waitLogged(t, n1, before+events)
	// Counted before reading: the node also drops its whole cache when it
	// sees itself reconnected (it may have missed events older than the
	// log), and the read after that fills the key again.
	if n := db.count("filtered_foos", v) - fills; n > 1 {
		t.Errorf("n1 rebuilt %v %d times for the %d events it missed; want once", v, n, events)
	}
	if got := get(t, n1, "filtered_foos", v); !slices.Contains(strings.Split(got, ","), strconv.Itoa(600+events-1)) {
		t.Errorf("n1 serves %v as %q after catching up, without foo %d", v, got, 600+events-1)
	}
}

// TestNoWaitForADialFromBeforeTheHeal: a call made with a routing snapshot
// from before a member was declared dead can leave a dial to it hanging
// (its SYN dropped by the partition, retransmitted a second later). Once
// the member is back, reads must not wait for that dial and fall back
// (found by chaos: fallbacks half a second after a heal).
func TestNoWaitForADialFromBeforeTheHeal(t *testing.T) {
	g := newCounting(0)
	c := startCluster(&cluster{t: t, setup: withWorker(g, worker.Settings{}), membership: LocalMembership(), hooks: map[string]*cutter{}}, 3)
	n1, n3 := c.nodes[0], c.nodes[2]
	w1, _ := n1.Cache().Worker("w")
	var args worker.Args
	for i := range 1000 {
		a := worker.Args{"id": i}
		if k, _ := w1.Key(a); n1.Owner(k) == "n3" {
			args = a
			break
		}
	}
	if args == nil {
		t.Fatal("no key owned by n3")
	}
	c.hooks["n3"].set(true)
	waitFor(t, 10*time.Second, "n1 to declare n3 dead", func() bool { return n1.Ring().Len() == 2 })
	// A late call from n1 to n3: its dial hangs.
	addr := n3.PeerAddr()
	c.hooks["n1"].hang.Store(&addr)
	go n1.client.Call(context.Background(), addr, opLeaving, []byte("n1"))
	waitFor(t, 5*time.Second, "the dial to hang", func() bool { return c.hooks["n1"].hung.Load() > 0 })
	c.hooks["n1"].hang.Store(nil)
	c.hooks["n3"].set(false)
	waitFor(t, 15*time.Second, "n1 to see n3 again", func() bool { return n1.Ring().Len() == 3 })
	_, st, err := n1.Get(context.Background(), "w", args, worker.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if st == worker.Fallback {
		t.Errorf("the first read of n3's key after the heal fell back: it waited for a dial from before the heal")
	}
}
