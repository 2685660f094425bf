package node

import (
	"context"
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/worker"
)

// TestFetchForANonOwnerIsForwardedOnce is chaos K9: a member asked for a
// key that its own ring gives to another member (the asker's ring is ahead
// or behind) used to fill the key and keep it as its own: a second fill
// for the cluster, by a node that does not own it. It now forwards the
// request once, as final, to the owner in its ring, which fills.
func TestFetchForANonOwnerIsForwardedOnce(t *testing.T) {
	g := newCounting(0)
	c := newCluster(t, 3, withWorker(g, worker.Settings{}))
	n2, n3 := c.nodes[1], c.nodes[2]
	w2, _ := n2.Cache().Worker("w")
	var args worker.Args
	var key string
	for i := range 1000 {
		a := worker.Args{"id": i}
		if k, _ := w2.Key(a); n2.Owner(k) == "n3" {
			args, key = a, k
			break
		}
	}
	if args == nil {
		t.Fatal("no key owned by n3")
	}
	payload, err := msgpack.Marshal(&fetchReq{Label: "w", Key: key, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	// n2 is asked as if the asker's ring gave it the key.
	for range 2 {
		resp, err := n2.handleFetch(context.Background(), payload, false)
		if err != nil {
			t.Fatal(err)
		}
		var we wireEntry
		if err := unmarshal(resp, &we); err != nil {
			t.Fatal(err)
		}
		if we.Owner != "n3" || string(we.Value) != fmt.Sprintf("value-%v", args["id"]) {
			t.Fatalf("answer owned by %q: %q; want n3's entry", we.Owner, we.Value)
		}
	}
	if got := g.count(fmt.Sprint(args["id"])); got != 1 {
		t.Errorf("the getter ran %d times; want once, on the owner", got)
	}
	if _, ok := n2.Cache().Lookup(key); ok {
		t.Error("n2 keeps an entry of a key its ring gives to n3")
	}
	if _, ok := n3.Cache().Lookup(key); !ok {
		t.Error("the owner n3 did not keep the entry")
	}

	// Asked as final (a forwarded request), n2 answers itself: no loops.
	other := worker.Args{"id": fmt.Sprint(args["id"], "-final")}
	okey, _ := w2.Key(other)
	p2, _ := msgpack.Marshal(&fetchReq{Label: "w", Key: okey, Args: other})
	if _, err := n2.handleFetch(context.Background(), p2, true); err != nil {
		t.Fatal(err)
	}
	if got := g.count(fmt.Sprint(other["id"])); got != 1 {
		t.Errorf("a final fetch ran the getter %d times here; want once", got)
	}
}
