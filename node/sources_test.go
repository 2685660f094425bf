package node

import (
	"context"
	"errors"
	"testing"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/worker"
)

// TestInvalidateEvent: the requests of several models are one event, each
// affected key rebuilt once on its owner however many requests name it,
// and an event whose ID was applied is not applied again.
func TestInvalidateEvent(t *testing.T) {
	ga, gb := newCounting(0), newCounting(0)
	c := newCluster(t, 2, func(n *Node) {
		must(n.Cache().Register(worker.Config{Label: "a", Getter: ga.getter()}))
		must(n.Cache().Register(worker.Config{Label: "b", Getter: gb.getter()}))
		for model, label := range map[string]string{"Foo": "a", "Bar": "b"} {
			if err := n.RegisterRules(model, map[string]invalidation.Rule{label: {Args: []string{"id"}}}); err != nil {
				t.Fatal(err)
			}
		}
	})
	for _, n := range c.nodes {
		get(t, n, "a", worker.Args{"id": 1})
		get(t, n, "a", worker.Args{"id": 3})
		get(t, n, "b", worker.Args{"id": 2})
	}
	foo := func(id int) invalidation.Change {
		return invalidation.Change{Op: invalidation.OpUpdate, Old: map[string]any{"id": id}, New: map[string]any{"id": id}}
	}
	reqs := []invalidation.Request{
		{Model: "Foo", Changes: []invalidation.Change{foo(1), foo(1)}},
		{Model: "Bar", Changes: []invalidation.Change{{Op: invalidation.OpDelete, Old: map[string]any{"id": 2}}}},
		{Model: "Foo", Changes: []invalidation.Change{foo(1)}},
	}
	ctx := context.Background()
	res, err := c.nodes[0].InvalidateEvent(ctx, "tx-1", reqs)
	if err != nil || res.Nodes != 2 || len(res.Missing) > 0 {
		t.Fatalf("InvalidateEvent: %+v %v", res, err)
	}
	if a1, a3, b2 := ga.count("1"), ga.count("3"), gb.count("2"); a1 != 2 || a3 != 1 || b2 != 2 {
		t.Errorf("fills after one event: a/1 %d (want 2), a/3 %d (want 1), b/2 %d (want 2)", a1, a3, b2)
	}
	// The same ID again, from the other node (a new consumer replaying).
	if _, err := c.nodes[1].InvalidateEvent(ctx, "tx-1", reqs); err != nil {
		t.Fatal(err)
	}
	if a1, b2 := ga.count("1"), gb.count("2"); a1 != 2 || b2 != 2 {
		t.Errorf("a replayed event refreshed again: a/1 %d, b/2 %d", a1, b2)
	}
	get(t, c.nodes[0], "a", worker.Args{"id": 1}) // read since its rebuild: refreshed, not dropped
	if _, err := c.nodes[1].InvalidateEvent(ctx, "tx-2", reqs[:1]); err != nil {
		t.Fatal(err)
	}
	if a1 := ga.count("1"); a1 != 3 {
		t.Errorf("a new event: a/1 filled %d times, want 3", a1)
	}
	_, err = c.nodes[0].InvalidateEvent(ctx, "tx-3", []invalidation.Request{{Model: "Nope", Changes: []invalidation.Change{foo(1)}}})
	if !errors.Is(err, invalidation.ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
}
