package node

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/worker"
)

// refusedCount is how many peer requests of op n refused with code.
func refusedCount(n *Node, op, code string) uint64 {
	for _, r := range n.PeerRefusals() {
		if r.Op == op && r.Code == code {
			return r.Count
		}
	}
	return 0
}

// wantRefused checks that err is a refusal with code, and that n counted
// it.
func wantRefused(t *testing.T, n *Node, err error, op, code string, before uint64) {
	t.Helper()
	var re *peer.RemoteError
	if !errors.As(err, &re) || re.Code != code {
		t.Fatalf("answer %v, want an error frame with code %q", err, code)
	}
	if got := refusedCount(n, op, code); got != before+1 {
		t.Fatalf("%s refusals counted %d, want %d", code, got, before+1)
	}
}

// TestHandoffIsAuthorised: a handoff over an authenticated connection is
// still refused, whole and counted, unless it comes from a member held
// alive, for a registered worker, with the sender as owner, for a key the
// receiver owns, and available no longer than the worker's expires.
func TestHandoffIsAuthorised(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 3, withWorker(g, patient))
	n1, n2 := c.nodes[0], c.nodes[1]
	// A key that n2 owns: n1 may hand it to n2 as its leaving owner would.
	var key string
	var args worker.Args
	for k := range 1000 {
		a := worker.Args{"id": k}
		if kk, _ := worker.KeyOf("w", a); n1.Owner(kk) == "n2" {
			key, args = kk, a
			break
		}
	}
	// A key that n3 owns in every ring n2 may use (with n1 or without it).
	var elsewhere string
	without, _ := n2.Ring().Without("n1")
	for k := range 1000 {
		kk, _ := worker.KeyOf("w", worker.Args{"id": k})
		if o, _ := n2.Ring().Owner(kk); o == "n3" {
			if o2, _ := without.Owner(kk); o2 == "n3" {
				elsewhere = kk
				break
			}
		}
	}
	now := time.Now()
	entry := func(k, owner string, available time.Time) wireEntry {
		return wireEntry{Label: "w", Key: k, Args: args, Value: []byte("<script>planted</script>"), ContentType: "text/html",
			Owner: owner, Created: now.UnixNano(), Available: available.UnixNano()}
	}
	w, _ := n2.Cache().Worker("w")
	ok := entry(key, "n1", now.Add(w.Policy().Expires))
	send := func(req handoffReq) ([]byte, error) {
		// The entries' durations, as a sender measures them.
		for _, e := range req.Entries {
			req.Times = append(req.Times, handoffTimes{Age: now.UnixNano() - e.Created, Available: e.Available - now.UnixNano()})
		}
		body, err := msgpack.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return n1.client.Call(ctx, n2.PeerAddr(), opHandoff, body)
	}
	unknown := ok
	unknown.Label = "nope"
	for _, tc := range []struct {
		name string
		req  handoffReq
		code string
	}{
		{"from a non-member", handoffReq{From: "ghost", Entries: []wireEntry{entry(key, "ghost", now.Add(time.Minute))}}, codeNotMember},
		{"with another owner", handoffReq{From: "n1", Entries: []wireEntry{ok, entry(key, "n3", now.Add(time.Minute))}}, codeWrongOwner},
		{"of a key the receiver does not own", handoffReq{From: "n1", Entries: []wireEntry{ok, entry(elsewhere, "n1", now.Add(time.Minute))}}, codeNotOwned},
		{"for a hundred years", handoffReq{From: "n1", Entries: []wireEntry{entry(key, "n1", now.Add(100*365*24*time.Hour))}}, codeExpiresTooFar},
		{"of an unknown worker", handoffReq{From: "n1", Entries: []wireEntry{ok, unknown}}, codeUnknownWorker},
	} {
		before := refusedCount(n2, "handoff", tc.code)
		_, err := send(tc.req)
		wantRefused(t, n2, err, "handoff", tc.code, before)
		if e, found := n2.Cache().Lookup(key); found {
			t.Fatalf("%s: the receiver kept %q", tc.name, e.Value)
		}
	}
	// The same entry from its owner, as a leaving member sends it, is kept.
	if _, err := send(handoffReq{From: "n1", Entries: []wireEntry{ok}}); err != nil {
		t.Fatalf("a well-formed handoff: %v", err)
	}
	if e, found := n2.Cache().Lookup(key); !found || e.Owner != "n2" {
		t.Fatalf("the well-formed handoff was not kept as n2's own entry: %v %v", e, found)
	}
}

// TestHandoffTimesAreTheReceivers: a handed-off entry is placed on the
// receiver's clock by the age and lifetime its sender measured, whatever
// the sender's clock says: an entry from a member whose clock is an hour
// behind is kept and expires when its lifetime says, and one built before
// an invalidation the receiver applied is refused although the sender's
// clock, an hour ahead, dates it after.
func TestHandoffTimesAreTheReceivers(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 3, withWorker(g, patient))
	n1, n2 := c.nodes[0], c.nodes[1]
	var keys []string
	for k := 0; len(keys) < 2 && k < 1000; k++ {
		if kk, _ := worker.KeyOf("w", worker.Args{"id": k}); n1.Owner(kk) == "n2" {
			keys = append(keys, kk)
		}
	}
	now := time.Now()
	// handoff hands key to n2 as n1 would with its clock off by skew: the
	// entry's instants skewed, its durations true.
	handoff := func(key string, skew, age, left time.Duration) {
		t.Helper()
		req := handoffReq{From: "n1",
			Entries: []wireEntry{{Label: "w", Key: key, Value: []byte("handed"), Owner: "n1",
				Created: now.Add(skew - age).UnixNano(), Available: now.Add(skew + left).UnixNano()}},
			Times: []handoffTimes{{Age: int64(age), Available: int64(left)}}}
		body, err := msgpack.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := n1.client.Call(ctx, n2.PeerAddr(), opHandoff, body); err != nil {
			t.Fatalf("handoff of %s: %v", key, err)
		}
	}
	handoff(keys[0], -time.Hour, time.Second, time.Minute)
	e, ok := n2.Cache().Lookup(keys[0])
	if !ok {
		t.Fatalf("an entry from a member whose clock is an hour behind was not kept (or is expired here)")
	}
	if left := time.Until(e.AvailableTo); left < 50*time.Second || left > time.Minute {
		t.Fatalf("the handed-off entry is available for %v more here; its sender gave it a minute", left)
	}
	if _, err := n2.Invalidate(context.Background(), invalidation.Request{Label: "w", Args: worker.Args{"id": -1}}); err != nil {
		t.Fatal(err)
	}
	handoff(keys[1], time.Hour, time.Minute, time.Minute)
	if e, ok := n2.Cache().Lookup(keys[1]); ok {
		t.Fatalf("an entry built a minute before an invalidation here was kept (%q): its sender's clock, an hour ahead, dated it after", e.Value)
	}
}

// TestEnqueueIsBounded: a delayed invalidation handed over by a member is
// refused, counted, and not stored when it is larger than an item may be,
// due too far ahead, or would fill the outbox beyond its bound.
func TestEnqueueIsBounded(t *testing.T) {
	c := startCluster(&cluster{t: t, membership: steadyMembership(), configure: func(cfg *Config) {
		cfg.PeerLimits.MaxEnqueueBytes = 4 << 10
	}}, 2)
	n1, n2 := c.nodes[0], c.nodes[1]
	event := func(pad int) []byte {
		ev := invalidation.Event{ID: invalidation.NewID(), Origin: "n1", Targets: []invalidation.Target{{Label: strings.Repeat("x", pad)}}}
		b, err := msgpack.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	send := func(due time.Time, payload []byte) error {
		body, err := msgpack.Marshal(enqueueReq{Due: due.UnixNano(), Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = n1.client.Call(ctx, n2.PeerAddr(), opEnqueue, body)
		return err
	}
	pending := func() int {
		items, err := n2.Store().Pending()
		if err != nil {
			t.Fatal(err)
		}
		return len(items)
	}
	soon := time.Now().Add(30 * time.Minute)
	for _, tc := range []struct {
		name    string
		due     time.Time
		payload []byte
		code    string
	}{
		{"an item over 1 MiB", soon, event(1 << 20), codeItemTooLarge},
		{"due in the year 2200", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), event(10), codeCountdownTooLong},
		{"due in two hours", time.Now().Add(2 * time.Hour), event(10), codeCountdownTooLong},
		{"beyond the outbox bound", soon, event(5 << 10), codeOutboxFull},
	} {
		before := refusedCount(n2, "enqueue", tc.code)
		wantRefused(t, n2, send(tc.due, tc.payload), "enqueue", tc.code, before)
		if k := pending(); k != 0 {
			t.Fatalf("%s: %d items stored", tc.name, k)
		}
	}
	// Within the bounds items are taken until the outbox holds its bound.
	taken := 0
	for {
		err := send(soon, event(1000))
		if err != nil {
			wantRefused(t, n2, err, "enqueue", codeOutboxFull, refusedCount(n2, "enqueue", codeOutboxFull)-1)
			break
		}
		taken++
		if taken > 10 {
			t.Fatal("the outbox bound of 4 KiB took more than 10 items of 1 KB")
		}
	}
	if taken == 0 || pending() != taken {
		t.Fatalf("%d items taken, %d stored", taken, pending())
	}
}

// TestOpenNodeRefusedWithoutKey: a node on a non-loopback address starts
// only with a gossip key, peer TLS or Insecure.
func TestOpenNodeRefusedWithoutKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default addresses", Config{Name: "a"}, false},
		{"gossip open", Config{Name: "a", Gossip: "0.0.0.0:0", Peer: "127.0.0.1:0"}, false},
		{"peer open", Config{Name: "a", Gossip: "127.0.0.1:0", Peer: ":0"}, false},
		{"a host name", Config{Name: "a", Gossip: "cache.example:0", Peer: "127.0.0.1:0"}, false},
		{"loopback", Config{Name: "a", Gossip: "127.0.0.1:0", Peer: "[::1]:0"}, true},
		{"localhost", Config{Name: "a", Gossip: "localhost:0", Peer: "127.0.0.2:0"}, true},
		{"with a key", Config{Name: "a", GossipKey: make([]byte, 32)}, true},
		{"insecure", Config{Name: "a", Insecure: true}, true},
	} {
		tc.cfg.EnsureDefaults()
		err := tc.cfg.Validate()
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && (!errors.Is(err, ErrInsecure) || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "gossip_key")) {
			t.Errorf("%s: %v, want ErrInsecure naming gossip_key", tc.name, err)
		}
	}
}

// TestGossipKeyRotation: members whose keyrings share a key form one
// cluster and fetch from each other whichever key each uses as primary
// (the steps of a rotation); a member that lacks the other's primary is
// refused by it; a node with another key joins nobody.
func TestGossipKeyRotation(t *testing.T) {
	oldK, newK, other := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210"), []byte("another key of 32 bytes, unknown")
	rings := map[string][2]any{
		"n1": {oldK, [][]byte{newK}}, // new key added
		"n2": {newK, [][]byte{oldK}}, // new key made primary
	}
	g := newCounting(0)
	c := startCluster(&cluster{t: t, setup: withWorker(g, patient), membership: steadyMembership(), configure: func(cfg *Config) {
		r := rings[cfg.Name]
		cfg.GossipKey, cfg.GossipKeys = r[0].([]byte), r[1].([][]byte)
		cfg.Gossip, cfg.Peer = "127.0.0.1:0", "127.0.0.1:0"
	}}, 2)
	n1, n2 := c.nodes[0], c.nodes[1]
	for k := range 50 {
		if _, _, err := n1.Get(context.Background(), "w", worker.Args{"id": k}, worker.Settings{}); err != nil {
			t.Fatal(err)
		}
		if _, st, err := n2.Get(context.Background(), "w", worker.Args{"id": k}, worker.Settings{}); err != nil || st == worker.Fallback {
			t.Fatalf("n2 read %d: %v %v", k, st, err)
		}
	}
	// A member that has not been given the new key (only the old one,
	// which n2 accepts but does not prove) cannot call n2's peer port, and
	// can call n1's, whose primary is still the old key.
	old, err := peer.NewClient(peer.ClientConfig{Key: oldK})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := old.Call(ctx, n2.PeerAddr(), opLeaving, []byte("x")); !errors.Is(err, peer.ErrAuth) {
		t.Fatalf("old key only, calling n2 (new primary): %v, want ErrAuth", err)
	}
	if _, err := old.Call(ctx, n1.PeerAddr(), opLeaving, []byte("x")); err != nil {
		t.Fatalf("old key only, calling n1 (old primary): %v", err)
	}

	// A node with a key outside every ring does not join.
	stranger, err := New(Config{Name: "x", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: steadyMembership(),
		GossipKey: other, Join: []string{n1.GossipAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if err := stranger.WaitReady(ctx2); err == nil {
		t.Fatal("a node with an unknown key joined the cluster")
	}
	if n1.Ring().Has("x") {
		t.Fatal("n1's ring holds the stranger")
	}
}

// TestPeerLimitsReachThePeerPort: the node's PeerLimits are the peer
// server's: connections beyond MaxConnsPerIP are refused and counted.
func TestPeerLimitsReachThePeerPort(t *testing.T) {
	n, err := New(Config{Name: "solo", Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Membership: steadyMembership(),
		PeerLimits: PeerLimits{MaxConnsPerIP: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3 {
		nc, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", n.PeerAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	waitFor(t, 10*time.Second, "the third connection to be refused", func() bool { return n.PeerServerStats().Refused == 1 })
	if got := n.PeerServerStats().Accepted; got != 2 {
		t.Fatalf("accepted %d, want 2", got)
	}
}
