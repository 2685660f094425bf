package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/client"
)

// A program reads through the owner of each key and invalidates after
// changing its data. (Not run: it needs a cluster, e.g. cachenode demo.)
func Example() {
	cl, err := client.New(client.Config{Nodes: []string{"127.0.0.1:8081", "127.0.0.1:8082"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()

	r, err := cl.Get(ctx, "filtered_foos", client.Args{"attr1": []string{"red", "blue"}, "attr2": "small"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s from %s (%s): %s\n", r.Key, r.Owner, r.Status, r.Value)

	// After an update of a Foo in the application's database:
	res, err := cl.Invalidate(ctx, invalidation.Request{Model: "Foo", Changes: []invalidation.Change{{
		Op: invalidation.OpUpdate, Old: map[string]any{"attr1": "red"}, New: map[string]any{"attr1": "blue"},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("refreshed %d keys on %d nodes\n", res.Keys, res.Nodes)
}
