package node

import (
	"github.com/jonboulle/clockwork"

	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

func withWorker(g *countingGetter, s worker.Settings) func(*Node) {
	return func(n *Node) {
		if _, err := n.Cache().Register(worker.Config{Label: "w", Getter: g.getter(), Settings: s}); err != nil {
			panic(err)
		}
	}
}

// patient is the wait budget of the tests that count fills: 30 s, so that
// only a real failure, never a slow race-detector run on a loaded two-core
// machine, makes a caller give up on the owner and compute the value itself.
var patient = worker.Settings{Tick: time.Second, TickAmount: worker.Int(30)}

func TestColdKeyFilledOnceAcrossCluster(t *testing.T) {
	g := newCounting(50 * time.Millisecond)
	c := newCluster(t, 5, withWorker(g, patient))
	const callers = 500
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		n := c.nodes[i%len(c.nodes)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, _, err := n.Get(context.Background(), "w", worker.Args{"id": 1}, worker.Settings{})
			if err == nil && string(e.Value) != "value-1" {
				err = fmt.Errorf("got %q", e.Value)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := g.count("1"); n != 1 {
		t.Fatalf("getter ran %d times for one key across the cluster, want 1", n)
	}
}

func TestThousandColdKeysFilledOnceEach(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 5, withWorker(g, patient))
	const keys = 1000
	// Every node asks for every key, all nodes at once and in the same
	// order, so that each key is asked on five nodes at about the same
	// moment. In-flight requests are bounded per node (64) so that the race
	// detector on two cores does not starve the failure detector.
	var wg sync.WaitGroup
	var failures sync.Map
	for _, n := range c.nodes {
		next := make(chan int)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					if _, _, err := n.Get(context.Background(), "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
						failures.Store(k, err)
					}
				}
			}()
		}
		go func() {
			for k := range keys {
				next <- k
			}
			close(next)
		}()
	}
	wg.Wait()
	failures.Range(func(k, v any) bool { t.Fatalf("key %v: %v", k, v); return false })
	calls := g.snapshot()
	if len(calls) != keys {
		t.Fatalf("%d keys filled, want %d", len(calls), keys)
	}
	for k, n := range calls {
		if n != 1 {
			for _, n := range c.nodes {
				w, _ := n.Cache().Worker("w")
				t.Logf("%s: %+v", n.Name(), w.Stats())
			}
			t.Fatalf("key %s filled %d times", k, n)
		}
	}
	// Each fill wrote a created-cache record on its owner, and only there.
	records := 0
	for _, n := range c.nodes {
		recs, _, err := n.Store().List("w", "", 2*keys)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Owner != n.Name() || n.Owner(r.Key) != n.Name() {
				t.Fatalf("record %s on %s owned by %s", r.Key, n.Name(), r.Owner)
			}
		}
		records += len(recs)
	}
	if records != keys {
		t.Fatalf("%d records, want %d", records, keys)
	}
}

func TestKilledOwnerIsReplaced(t *testing.T) {
	g := newCounting(0)
	c := newClusterWith(t, 5, withWorker(g, worker.Settings{}), LocalMembership())
	ctx := context.Background()
	const keys = 200
	for k := range keys {
		if _, _, err := c.nodes[k%5].Get(ctx, "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.nodes[2]
	victim.crash()
	// Until the failure is detected, keys of the victim are answered as
	// fallbacks, never errors.
	served := func() bool {
		for k := range keys {
			n := c.live()[k%4]
			e, st, err := n.Get(ctx, "w", worker.Args{"id": k}, worker.Settings{})
			if err != nil {
				t.Fatalf("key %d on %s: %v", k, n.Name(), err)
			}
			if st == worker.Fallback || e.Owner == victim.Name() && st != worker.Hit {
				return false
			}
			if n.Owner(e.Key) == victim.Name() {
				return false
			}
		}
		return true
	}
	took := waitFor(t, 2*time.Second, "every key served by a new owner", served)
	t.Logf("every key served by a new owner %v after the kill", took)
	for k := range keys {
		for _, n := range c.live() {
			if _, _, err := n.Get(ctx, "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
				t.Fatalf("after re-route, key %d on %s: %v", k, n.Name(), err)
			}
		}
	}
}

func TestJoinConvergesFast(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 4, withWorker(g, patient))
	start := time.Now()
	c.add("n5")
	took := c.waitConverged(time.Second)
	t.Logf("5th node joined and every ring converged in %v", time.Since(start))
	_ = took
	// Keys the new node owns are filled there, once.
	ctx := context.Background()
	n5 := c.nodes[4]
	for k := range 100 {
		key := fmt.Sprint(k)
		wkey, _ := worker.KeyOf("w", worker.Args{"id": k})
		if n5.Owner(wkey) != "n5" {
			continue
		}
		for _, n := range c.nodes {
			if _, _, err := n.Get(ctx, "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
				t.Fatal(err)
			}
		}
		if g.count(key) != 1 {
			t.Fatalf("key %s filled %d times", key, g.count(key))
		}
		if e, ok := n5.Cache().Lookup(wkey); !ok || e.Owner != "n5" {
			t.Fatalf("key %s not owned by n5 after the fill", key)
		}
	}
}

func TestGracefulLeaveHandsOffHotEntries(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 5, withWorker(g, patient))
	ctx := context.Background()
	for k := range 300 {
		if _, _, err := c.nodes[0].Get(ctx, "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	leaving := c.nodes[1]
	var owned []worker.Args
	for k := range 300 {
		key, _ := worker.KeyOf("w", worker.Args{"id": k})
		if e, ok := leaving.Cache().Lookup(key); ok && e.Owner == leaving.Name() {
			owned = append(owned, worker.Args{"id": k})
		}
	}
	if len(owned) == 0 {
		t.Fatal("the leaving node owns nothing")
	}
	fills := len(g.snapshot())
	if err := leaving.Close(); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(10 * time.Second)
	for _, a := range owned {
		key, _ := worker.KeyOf("w", a)
		owner := c.live()[0].Owner(key)
		var n *Node
		for _, m := range c.live() {
			if m.Name() == owner {
				n = m
			}
		}
		_, st, err := n.Get(ctx, "w", a, worker.Settings{})
		if err != nil || st != worker.Hit {
			t.Fatalf("handed-off key %v on its new owner %s: %v %v", a, owner, st, err)
		}
	}
	total := 0
	for _, v := range g.snapshot() {
		total += v
	}
	if total != fills {
		t.Fatalf("%d refills after a graceful leave", total-fills)
	}
	t.Logf("%d hot entries handed off, all hits on their new owners", len(owned))
}

func TestGarbageFromAPeerIsRejected(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 3, withWorker(g, worker.Settings{}))
	target := c.nodes[0]
	payloads := [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0, 0, 0, 9, 1, 2},                   // truncated
		{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, // oversized length
	}
	for _, p := range payloads {
		conn, err := net.Dial("tcp", target.PeerAddr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(p)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		for {
			if _, err := conn.Read(buf); err != nil {
				break // closed by the node, as it should
			}
		}
		conn.Close()
	}
	for k := range 50 {
		n := c.nodes[rand.IntN(3)]
		if _, _, err := n.Get(context.Background(), "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnknownWorkerOnOwnerFallsBack(t *testing.T) {
	g := newCounting(0)
	first := true
	c := newCluster(t, 2, func(n *Node) {
		if first { // only n1 has the worker
			withWorker(g, worker.Settings{})(n)
			first = false
		}
	})
	ctx := context.Background()
	for k := range 50 {
		_, _, err := c.nodes[0].Get(ctx, "w", worker.Args{"id": k}, worker.Settings{})
		if err != nil {
			t.Fatalf("key %d: %v", k, err)
		}
	}
	if _, _, err := c.nodes[1].Get(ctx, "w", worker.Args{}, worker.Settings{}); !errors.Is(err, worker.ErrUnknownLabel) {
		t.Fatalf("unknown label: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "name"},
		{Config{Name: "a", Gossip: "nope"}, "gossip"},
		{Config{Name: "a", GossipKey: []byte("short")}, "gossip_key"},
		{Config{Name: "a", Memory: -1}, "memory"},
	} {
		_, err := New(tc.cfg)
		if !errors.Is(err, ErrConfig) || !contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestNearCopiesOfMovedKeysAreDropped(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 3, withWorker(g, worker.Settings{}))
	ctx := context.Background()
	n1 := c.nodes[0]
	// Near copies on n1 of keys other nodes own.
	var near []string
	for k := range 200 {
		key, _ := worker.KeyOf("w", worker.Args{"id": k})
		if n1.Owner(key) != "n1" {
			if _, _, err := n1.Get(ctx, "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
				t.Fatal(err)
			}
			near = append(near, key)
		}
	}
	c.add("n4")
	c.waitConverged(10 * time.Second)
	waitFor(t, 2*time.Second, "near copies of moved keys dropped", func() bool {
		for _, key := range near {
			e, ok := n1.Cache().Lookup(key)
			if ok && e.Owner != n1.Owner(key) {
				return false
			}
		}
		return true
	})
	moved := 0
	for _, key := range near {
		if n1.Owner(key) == "n4" {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no key moved to the new node")
	}
}

func TestGracefulLeaveIsRecordedAsLeft(t *testing.T) {
	c := newCluster(t, 4, nil)
	leaving := c.nodes[3]
	if err := leaving.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every member to record the leave", func() bool {
		for _, n := range c.nodes[:3] {
			for _, m := range n.Members() {
				if m.Name == leaving.Name() && m.State != StateLeft {
					return false
				}
			}
		}
		return true
	})
}

func TestSilentMemberShowsAsSuspect(t *testing.T) {
	c := startCluster(&cluster{t: t, membership: steadyMembership(), hooks: map[string]*cutter{}}, 3)
	state := func(of string) State {
		for _, m := range c.nodes[0].Members() {
			if m.Name == of {
				return m.State
			}
		}
		return ""
	}
	waitFor(t, 10*time.Second, "n3 answering probes", func() bool { return state("n3") == StateAlive })
	c.hooks["n3"].set(true)
	waitFor(t, 20*time.Second, "n3 suspect, then dead", func() bool { return state("n3") == StateSuspect })
	waitFor(t, 30*time.Second, "n3 dead", func() bool { return state("n3") == StateDead })
	c.hooks["n3"].set(false)
}

// TestSplitAtBootMerges starts two nodes that each join only themselves
// first (as pods behind a DNS name do when they start together) and checks
// that they end up in one cluster.
func TestSplitAtBootMerges(t *testing.T) {
	var nodes []*Node
	lns := make([]string, 2)
	for i := range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln.Addr().String()
		ln.Close()
	}
	for i, name := range []string{"a", "b"} {
		// a lists both addresses, but b is not up when a joins, and a
		// itself answers, so its first join "succeeds" alone; b lists only
		// itself. Only a's later joins of its seeds can merge the two.
		join := []string{lns[0], lns[1]}
		if i == 1 {
			join = []string{lns[1]}
		}
		n, err := New(Config{Name: name, Gossip: lns[i], Peer: "127.0.0.1:0", Membership: LocalMembership(), Join: join})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	// Start a alone (b is not listening yet), wait for it to be ready on its
	// own, then start b the same way.
	for _, n := range nodes {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := n.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "one cluster of two", func() bool {
		return nodes[0].Ring().Len() == 2 && nodes[1].Ring().Len() == 2
	})
}

// TestPausedProcessDropsItsCache is the regression test of chaos K3: a node
// resumed after SIGSTOP served values invalidated while it was stopped. The
// pause is simulated by moving the watchdog's last tick back; the read that
// comes first after the pause must not be answered from the cache (after a
// SIGCONT the reads blocked in the kernel may run before the watchdog).
// The pause is the node's clock moved on past the limit: the read may come
// before or after the watchdog's tick sees it.
func TestPausedProcessDropsItsCache(t *testing.T) {
	g := newCounting(0)
	clock := clockwork.NewFakeClock()
	c := startCluster(&cluster{t: t, setup: withWorker(g, worker.Settings{}), membership: steadyMembership(),
		configure: func(cfg *Config) { cfg.Clock = clock }}, 1)
	n := c.nodes[0]
	for k := range 10 {
		if _, _, err := n.Get(context.Background(), "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	if n.noticePause() {
		t.Fatal("an ordinary tick taken for a pause")
	}
	if n.Cache().Len() != 10 {
		t.Fatalf("%d entries cached, want 10", n.Cache().Len())
	}
	// A stop just longer than the floor of the others' suspicion timeout.
	clock.Advance(n.pauseLimit() + 50*time.Millisecond)
	_, st, err := n.Get(context.Background(), "w", worker.Args{"id": 3}, worker.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if st != worker.Miss {
		t.Errorf("the first read after the pause answered %v from the cache; want a miss (a new fill)", st)
	}
	if l := n.Cache().Len(); l > 1 {
		t.Errorf("%d entries still cached after the pause; want only the one read since", l)
	}
}
