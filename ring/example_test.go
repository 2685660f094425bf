package ring_test

import (
	"fmt"

	"github.com/cachenode/cachenode/ring"
)

func ExampleNew() {
	// The order of the names does not matter: every node that knows the
	// same members computes the same ring.
	r, err := ring.New(ring.DefaultConfig(), []string{"node-c", "node-a", "node-b"})
	if err != nil {
		panic(err)
	}
	owner, _ := r.Owner("user:42")
	fmt.Println("owner:", owner)
	fmt.Println("owner and next:", r.Owners("user:42", 2))

	// When the owner leaves, a new ring takes over.
	smaller, err := r.Without(owner)
	if err != nil {
		panic(err)
	}
	next, _ := smaller.Owner("user:42")
	fmt.Println("after", owner, "leaves:", next)

	empty, _ := ring.New(ring.Config{}, nil)
	_, ok := empty.Owner("user:42")
	fmt.Println("owner on an empty ring:", ok)
	// Output:
	// owner: node-c
	// owner and next: [node-c node-b]
	// after node-c leaves: node-b
	// owner on an empty ring: false
}
