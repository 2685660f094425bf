package node_test

import (
	"context"
	"fmt"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// Example embeds a node in a program: a typed worker, a Get, an
// invalidation through a rule. Other instances of the program would list
// this node's gossip address in Config.Join.
func Example() {
	n, err := node.New(node.Config{
		Name:       "app-1",
		Gossip:     "127.0.0.1:0",
		Peer:       "127.0.0.1:0",
		Membership: node.LocalMembership(),
	})
	if err != nil {
		panic(err)
	}
	defer n.Close()

	type Foo struct{ ID, Attr1 int }
	version := 1
	filtered, err := worker.Register(n.Cache(), worker.Config{Label: "filtered_foos"},
		func(ctx context.Context, args worker.Args) ([]Foo, error) {
			return []Foo{{ID: version, Attr1: args["attr1"].(int)}}, nil
		})
	if err != nil {
		panic(err)
	}
	if err := n.RegisterRules("Foo", map[string]invalidation.Rule{"filtered_foos": {Args: []string{"attr1"}}}); err != nil {
		panic(err)
	}
	if err := n.Start(); err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := n.WaitReady(ctx); err != nil {
		panic(err)
	}

	foos, _ := filtered.Get(ctx, worker.Args{"attr1": 7})
	fmt.Println(foos)

	version = 2 // the data changes, and the app says so
	res, _ := n.Invalidate(ctx, invalidation.Request{Model: "Foo", Changes: []invalidation.Change{
		{Op: "update", Old: map[string]any{"attr1": 7}, New: map[string]any{"attr1": 7}},
	}})
	fmt.Println("refreshed keys:", res.Keys, "on nodes:", res.Nodes)

	foos, _ = filtered.Get(ctx, worker.Args{"attr1": 7})
	fmt.Println(foos)
	// Output:
	// [{1 7}]
	// refreshed keys: 1 on nodes: 1
	// [{2 7}]
}
