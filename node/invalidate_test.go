package node

import (
	"github.com/jonboulle/clockwork"

	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/worker"
)

// fooDB is the application's data of the tests: the Foo model of the
// original README, with getters that count their runs per variant.
type fooDB struct {
	mu    sync.Mutex
	foos  map[int]foo
	calls map[string]int // per cache key
	gate  chan struct{}  // when set, filtered_foos fills wait on it
}

type foo struct {
	Attr1 int
	Attr2 string
}

func newFooDB() *fooDB {
	db := &fooDB{foos: map[int]foo{}, calls: map[string]int{}}
	for i := range 12 {
		db.foos[i] = foo{Attr1: i % 3, Attr2: string(rune('a' + i%2))}
	}
	return db
}

func (db *fooDB) set(id int, f foo) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.foos[id] = f
}

func (db *fooDB) count(label string, a worker.Args) int {
	k, _ := worker.KeyOf(label, a)
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.calls[k]
}

// list returns the ids of the foos that keep, as "1,4,7".
func (db *fooDB) list(label string, a worker.Args, keep func(foo) bool) worker.Value {
	k, _ := worker.KeyOf(label, a)
	db.mu.Lock()
	db.calls[k]++
	var ids []int
	for id, f := range db.foos {
		if keep(f) {
			ids = append(ids, id)
		}
	}
	db.mu.Unlock()
	slices.Sort(ids)
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return worker.Value{Data: []byte(strings.Join(s, ",")), ContentType: "text/plain"}
}

// register adds all_foos and filtered_foos and the Foo rules to a node.
func (db *fooDB) register(n *Node) {
	c := n.Cache()
	must(c.Register(worker.Config{Label: "all_foos", Settings: patient, Getter: worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
		return db.list("all_foos", a, func(foo) bool { return true }), nil
	})}))
	must(c.Register(worker.Config{Label: "filtered_foos", Settings: patient, Getter: worker.GetterFunc(func(ctx context.Context, a worker.Args) (worker.Value, error) {
		db.mu.Lock()
		gate := db.gate
		db.mu.Unlock()
		v := db.list("filtered_foos", a, func(f foo) bool { return fmt.Sprint(f.Attr1) == fmt.Sprint(a["attr1"]) && f.Attr2 == a["attr2"] })
		if gate != nil {
			<-gate
		}
		return v, nil
	})}))
	if err := n.RegisterRules("Foo", map[string]invalidation.Rule{
		"all_foos":      {IsEmpty: true},
		"filtered_foos": {Args: []string{"attr1", "attr2"}},
	}); err != nil {
		panic(err)
	}
}

func must(_ *worker.Worker, err error) {
	if err != nil {
		panic(err)
	}
}

// variantOwnedBy returns filtered_foos arguments whose key owner owns in
// the ring of n.
func variantOwnedBy(t *testing.T, n *Node, owner string) worker.Args {
	t.Helper()
	for a1 := range 100 {
		a := worker.Args{"attr1": a1, "attr2": "a"}
		if key, _ := worker.KeyOf("filtered_foos", a); n.Owner(key) == owner {
			return a
		}
	}
	t.Fatalf("no filtered_foos variant owned by %s", owner)
	return nil
}

func get(t *testing.T, n *Node, label string, a worker.Args) string {
	t.Helper()
	e, _, err := n.Get(context.Background(), label, a, worker.Settings{})
	if err != nil {
		t.Fatalf("%s %s %v: %v", n.Name(), label, a, err)
	}
	return string(e.Value)
}

func TestUpdateRefreshesOldAndNewBucketOnEveryNode(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 3, db.register)
	variants := []worker.Args{
		{"attr1": 1, "attr2": "b"}, // foo 1 is here before the update
		{"attr1": 2, "attr2": "b"}, // and here after it
		{"attr1": 1, "attr2": "a"},
		{"attr1": 0, "attr2": "a"},
	}
	// Every node holds every variant (owned, or a near-cache copy).
	before := map[string]string{}
	for _, n := range c.nodes {
		for _, v := range variants {
			before[fmt.Sprint(v)] = get(t, n, "filtered_foos", v)
		}
		get(t, n, "all_foos", worker.Args{})
	}
	fills := map[string]int{}
	for _, v := range variants {
		fills[fmt.Sprint(v)] = db.count("filtered_foos", v)
		if fills[fmt.Sprint(v)] != 1 {
			t.Fatalf("%v filled %d times", v, fills[fmt.Sprint(v)])
		}
	}
	// foo 1 moves from bucket (1,b) to (2,b).
	db.set(1, foo{Attr1: 2, Attr2: "b"})
	res, err := c.nodes[1].Invalidate(context.Background(), invalidation.Request{Model: "Foo", Changes: []invalidation.Change{{
		Op: "update", Old: map[string]any{"id": 1, "attr1": 1, "attr2": "b"}, New: map[string]any{"id": 1, "attr1": 2, "attr2": "b"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Nodes != 3 || len(res.Missing) != 0 {
		t.Fatalf("result %+v", res)
	}
	// Both buckets refreshed once, on their owner; the others untouched.
	wantFills := map[string]int{fmt.Sprint(variants[0]): 2, fmt.Sprint(variants[1]): 2, fmt.Sprint(variants[2]): 1, fmt.Sprint(variants[3]): 1}
	for _, v := range variants {
		if got := db.count("filtered_foos", v); got != wantFills[fmt.Sprint(v)] {
			t.Errorf("%v filled %d times, want %d", v, got, wantFills[fmt.Sprint(v)])
		}
	}
	if got := db.count("all_foos", worker.Args{}); got != 2 {
		t.Errorf("all_foos (is_empty) filled %d times, want 2", got)
	}
	// Right after the call returned, no node serves the old value.
	for _, n := range c.nodes {
		if got := get(t, n, "filtered_foos", variants[0]); strings.Contains(","+got+",", ",1,") {
			t.Errorf("%s still serves foo 1 in its old bucket: %q", n.Name(), got)
		}
		if got := get(t, n, "filtered_foos", variants[1]); !strings.Contains(","+got+",", ",1,") {
			t.Errorf("%s does not serve foo 1 in its new bucket: %q", n.Name(), got)
		}
		if got := get(t, n, "filtered_foos", variants[2]); got != before[fmt.Sprint(variants[2])] {
			t.Errorf("%s: an unaffected variant changed", n.Name())
		}
	}
	if res.Keys < 3 {
		t.Errorf("keys %d: want at least the 3 owned keys", res.Keys)
	}
}

func TestExplicitInvalidations(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 3, db.register)
	ctx := context.Background()
	a := worker.Args{"attr1": 0, "attr2": "a"}
	b := worker.Args{"attr1": 1, "attr2": "b"}
	for _, n := range c.nodes {
		get(t, n, "filtered_foos", a)
		get(t, n, "filtered_foos", b)
	}
	// One key.
	if _, err := c.nodes[0].Invalidate(ctx, invalidation.Request{Label: "filtered_foos", Args: a}); err != nil {
		t.Fatal(err)
	}
	if db.count("filtered_foos", a) != 2 || db.count("filtered_foos", b) != 1 {
		t.Fatalf("one key: %d %d", db.count("filtered_foos", a), db.count("filtered_foos", b))
	}
	// A match on one attribute.
	if _, err := c.nodes[0].Invalidate(ctx, invalidation.Request{Label: "filtered_foos", Match: map[string][]any{"attr2": {"b"}}}); err != nil {
		t.Fatal(err)
	}
	if db.count("filtered_foos", a) != 2 || db.count("filtered_foos", b) != 2 {
		t.Fatalf("match: %d %d", db.count("filtered_foos", a), db.count("filtered_foos", b))
	}
	// The whole label. Both keys are read first: an entry nobody read
	// since its last rebuild is dropped, not rebuilt.
	get(t, c.nodes[0], "filtered_foos", a)
	get(t, c.nodes[0], "filtered_foos", b)
	res, err := c.nodes[2].Invalidate(ctx, invalidation.Request{Label: "filtered_foos"})
	if err != nil {
		t.Fatal(err)
	}
	if db.count("filtered_foos", a) != 3 || db.count("filtered_foos", b) != 3 {
		t.Fatalf("label: %d %d", db.count("filtered_foos", a), db.count("filtered_foos", b))
	}
	if res.Nodes != 3 {
		t.Fatalf("%+v", res)
	}
}

func TestBulkEventAppliedInOnePass(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 3, db.register)
	buckets := []worker.Args{}
	for a1 := range 3 {
		for _, a2 := range []string{"a", "b"} {
			buckets = append(buckets, worker.Args{"attr1": a1, "attr2": a2})
		}
	}
	for _, n := range c.nodes {
		for _, b := range buckets {
			get(t, n, "filtered_foos", b)
		}
	}
	var changes []invalidation.Change
	for i := range 1000 {
		f := foo{Attr1: i % 3, Attr2: string(rune('a' + i%2))}
		db.set(100+i, f)
		changes = append(changes, invalidation.Change{Op: "create", New: map[string]any{"id": 100 + i, "attr1": f.Attr1, "attr2": f.Attr2}})
	}
	start := time.Now()
	res, err := c.nodes[0].Invalidate(context.Background(), invalidation.Request{Model: "Foo", Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1,000 changes applied on 3 nodes in %v: %+v", time.Since(start), res)
	for _, b := range buckets {
		if got := db.count("filtered_foos", b); got != 2 {
			t.Fatalf("%v filled %d times: a bucket touched by many changes must be rebuilt once", b, got)
		}
		for _, n := range c.nodes {
			if ids := strings.Split(get(t, n, "filtered_foos", b), ","); len(ids) < 100 {
				t.Fatalf("%s serves %d ids for %v after the bulk create", n.Name(), len(ids), b)
			}
		}
	}
}

func TestInvalidationDuringSlowFillCachesTheNewValue(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 3, db.register)
	ctx := context.Background()
	v := worker.Args{"attr1": 0, "attr2": "a"}
	key, _ := worker.KeyOf("filtered_foos", v)
	owner := c.byName(c.nodes[0].Owner(key))
	gate := make(chan struct{})
	db.mu.Lock()
	db.gate = gate
	db.mu.Unlock()
	// A reader on a non-owner starts the fill on the owner; the fill reads
	// the data, then stalls.
	var asker *Node
	for _, n := range c.nodes {
		if n != owner {
			asker = n
		}
	}
	got := make(chan string, 1)
	go func() {
		e, _, err := asker.Get(ctx, "filtered_foos", v, worker.Settings{Tick: time.Second, TickAmount: worker.Int(30)})
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(e.Value)
	}()
	waitFor(t, 5*time.Second, "the slow fill", func() bool { return db.count("filtered_foos", v) == 1 })
	// The data changes and the change is announced while the fill runs.
	db.set(0, foo{Attr1: 1, Attr2: "b"})
	inv := make(chan error, 1)
	go func() {
		_, err := c.nodes[2].Invalidate(ctx, invalidation.Request{Label: "filtered_foos", Args: v})
		inv <- err
	}()
	t.Cleanup(func() {
		for _, n := range c.nodes {
			w, _ := n.Cache().Worker("filtered_foos")
			t.Logf("%s owner=%v %+v", n.Name(), n == owner, w.Stats())
		}
	})
	waitFor(t, 5*time.Second, "the rebuild", func() bool { return db.count("filtered_foos", v) == 2 })
	close(gate) // both fills end: the old one first or not, it is not kept
	if err := <-inv; err != nil {
		t.Fatal(err)
	}
	<-got
	db.mu.Lock()
	db.gate = nil
	db.mu.Unlock()
	for _, n := range c.nodes {
		if val := get(t, n, "filtered_foos", v); strings.Contains(","+val+",", ",0,") {
			t.Fatalf("%s serves the value of the fill that started before the invalidation: %q", n.Name(), val)
		}
	}
	e, ok := owner.Cache().Lookup(key)
	if !ok || strings.Contains(","+string(e.Value)+",", ",0,") {
		t.Fatalf("owner caches %v %v", e, ok)
	}
}

func (c *cluster) byName(name string) *Node {
	for _, n := range c.nodes {
		if n.Name() == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// TestNonOwnerReachedFirstKeepsNoOldValue is chaos K8: the invalidation
// reaches a non-owner before the owner (the link from the member that
// broadcasts it to the owner delivers late). A read on the non-owner must
// not fetch the old value from the owner and keep it: once Invalidate
// returned, every member serves the new value.
func TestNonOwnerReachedFirstKeepsNoOldValue(t *testing.T) {
	db := newFooDB()
	c := startCluster(&cluster{t: t, setup: db.register, membership: steadyMembership(), hooks: map[string]*cutter{}}, 3)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	v := variantOwnedBy(t, n1, "n1")
	get(t, n2, "filtered_foos", v) // n2 keeps a near-cache copy
	db.set(500, foo{Attr1: v["attr1"].(int), Attr2: "a"})

	c.hooks["n3"].slowTo(n1.PeerAddr(), 300*time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, err := n3.Invalidate(context.Background(), invalidation.Request{Label: "filtered_foos", Args: v})
		done <- err
	}()
	// Read on n2 while the event is on its way to the owner.
	for reading := true; reading; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			reading = false
		default:
			get(t, n2, "filtered_foos", v)
			time.Sleep(5 * time.Millisecond)
		}
	}
	c.hooks["n3"].slowTo("", 0)
	for _, n := range c.nodes {
		if got := get(t, n, "filtered_foos", v); !strings.Contains(","+got+",", ",500,") {
			t.Errorf("after the invalidation returned, %s serves %v as %q, without foo 500", n.Name(), v, got)
		}
	}
}

// pushPullState encodes evs as a member's push/pull state (see localState).
func pushPullState(t *testing.T, evs ...invalidation.Event) []byte {
	t.Helper()
	state := make([]loggedEvent, len(evs))
	for i := range evs {
		payload, err := msgpack.Marshal(&evs[i])
		if err != nil {
			t.Fatal(err)
		}
		state[i] = loggedEvent{At: time.Now().UnixNano(), Payload: payload}
	}
	buf, err := msgpack.Marshal(state)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

// waitLogged waits until n logged want events and its background applier
// is idle.
func waitLogged(t *testing.T, n *Node, want int) {
	t.Helper()
	waitFor(t, 15*time.Second, "the events to be applied", func() bool {
		n.events.mu.Lock()
		defer n.events.mu.Unlock()
		return n.events.t.Logged() == want && !n.events.t.Running()
	})
}

// TestEventsOfOnePushPullRebuildAKeyOnce is chaos K4 without the network:
// the events a member missed arrive together in a push/pull exchange, and
// each key they name is rebuilt once, not once per event (concurrently,
// each detaching the previous rebuild).
func TestEventsOfOnePushPullRebuildAKeyOnce(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 1, db.register)
	n := c.nodes[0]
	v := worker.Args{"attr1": 1, "attr2": "a"}
	get(t, n, "filtered_foos", v)
	fills := db.count("filtered_foos", v)

	tok, err := worker.MatchToken(1)
	if err != nil {
		t.Fatal(err)
	}
	const events = 4
	evs := make([]invalidation.Event, events)
	for i := range evs {
		evs[i] = invalidation.Event{ID: invalidation.NewID(), Origin: "elsewhere", Targets: []invalidation.Target{
			{Label: "filtered_foos", Kind: invalidation.KindKey, Args: v},
			{Label: "filtered_foos", Kind: invalidation.KindMatch, Match: map[string][]string{"attr1": {tok}}},
		}}
	}
	buf := pushPullState(t, evs...)
	n.mergeState(buf)
	n.mergeState(buf) // the same events again, from another member
	waitLogged(t, n, events)
	if got := db.count("filtered_foos", v) - fills; got != 1 {
		t.Errorf("%v was rebuilt %d times for %d events received together; want once", v, got, events)
	}
}

// TestEventOfferedOnPushPullOnlyAfterTheOwnersRound: an event is offered to
// other members on push/pull only once its owners' round is over here
// (the second round reached this node): a member that merged it earlier
// would drop its near-cache copies while an owner may still serve the old
// value, the race the two rounds close (chaos K8).
func TestEventOfferedOnPushPullOnlyAfterTheOwnersRound(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 1, db.register)
	n := c.nodes[0]
	ev := invalidation.Event{ID: invalidation.NewID(), Origin: "elsewhere", Targets: []invalidation.Target{
		{Label: "filtered_foos", Kind: invalidation.KindKey, Args: worker.Args{"attr1": 1, "attr2": "a"}},
	}}
	payload, err := msgpack.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := n.applyEvent(ctx, &ev, payload, true); err != nil {
		t.Fatal(err)
	}
	if st := n.localState(); st != nil {
		t.Fatalf("the event is offered on push/pull during its owners' round (%d bytes of state)", len(st))
	}
	if _, err := n.applyEvent(ctx, &ev, payload, false); err != nil {
		t.Fatal(err)
	}
	var offered []loggedEvent
	if err := unmarshal(n.localState(), &offered); err != nil || len(offered) != 1 {
		t.Fatalf("after the second round: %d events offered (%v); want 1", len(offered), err)
	}
}

// TestEventsAfterAPauseDoNotRebuildWhatThePauseDrops: a node back from a
// pause gets the events it missed (push/pull) before any read notices the
// pause. The cache must go first: rebuilding its entries and then dropping
// them fills each key twice (found by chaos: three fills of one key version
// within 31 ms after a SIGCONT).
func TestEventsAfterAPauseDoNotRebuildWhatThePauseDrops(t *testing.T) {
	db := newFooDB()
	clock := clockwork.NewFakeClock()
	c := startCluster(&cluster{t: t, setup: db.register, membership: steadyMembership(),
		configure: func(cfg *Config) { cfg.Clock = clock }}, 1)
	n := c.nodes[0]
	v := worker.Args{"attr1": 1, "attr2": "a"}
	get(t, n, "filtered_foos", v)
	fills := db.count("filtered_foos", v)

	clock.Advance(n.pauseLimit() + 50*time.Millisecond)
	n.mergeState(pushPullState(t, invalidation.Event{ID: invalidation.NewID(), Origin: "elsewhere", Targets: []invalidation.Target{
		{Label: "filtered_foos", Kind: invalidation.KindKey, Args: v},
	}}))
	waitLogged(t, n, 1)
	if got := db.count("filtered_foos", v) - fills; got != 0 {
		t.Errorf("%v was rebuilt %d times by an event applied after a pause; want 0 (the pause drops it)", v, got)
	}
	get(t, n, "filtered_foos", v)
	if got := db.count("filtered_foos", v) - fills; got != 1 {
		t.Errorf("%v filled %d times after the pause; want once, by the read", v, got)
	}
}

// TestMemberHeldForDeadButAliveGetsTheInvalidation: a member declared dead
// while it is alive and serving (a stall just long enough, a suspicion it
// refuted too late) must not keep serving a near-cache copy that an
// invalidation changed meanwhile (found by chaos: a read 40 ms after a 200,
// on a node the others had held for dead for 100 ms).
func TestMemberHeldForDeadButAliveGetsTheInvalidation(t *testing.T) {
	db := newFooDB()
	c := newCluster(t, 3, db.register)
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	v := variantOwnedBy(t, n1, "n1")
	get(t, n3, "filtered_foos", v) // n3 keeps a near-cache copy
	db.set(700, foo{Attr1: v["attr1"].(int), Attr2: "a"})
	n1.memberDown("n3", StateDead)
	n2.memberDown("n3", StateDead)
	if _, err := n1.Invalidate(context.Background(), invalidation.Request{Label: "filtered_foos", Args: v}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, n3, "filtered_foos", v); !slices.Contains(strings.Split(got, ","), "700") {
		t.Errorf("n3, held for dead but alive, serves %v as %q after the invalidation returned, without foo 700", v, got)
	}
}
