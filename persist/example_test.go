package persist_test

import (
	"fmt"
	"time"

	"github.com/cachenode/cachenode/persist"
)

// A worker "filtered_foos" caches variants by attr1 and attr2. A change of a
// Foo with attr1=red affects the variants that ask for red and those that
// do not filter on attr1 at all.
func Example() {
	s, err := persist.Open(persist.Config{}) // in memory
	if err != nil {
		panic(err)
	}
	defer s.Close()

	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range []persist.Record{
		{Key: "filtered_foos@attr1=red", Match: map[string][]string{"attr1": {"red"}}},
		{Key: "filtered_foos@attr1=blue", Match: map[string][]string{"attr1": {"blue"}}},
		{Key: "filtered_foos@attr2=7", Match: map[string][]string{"attr2": {"7"}}},
		{Key: "filtered_foos@", Match: nil},
	} {
		r.Label, r.Owner, r.CreatedAt, r.AvailableTo = "filtered_foos", "n1", now, now.Add(time.Hour)
		if err := s.Put(r); err != nil { // durable when it returns
			panic(err)
		}
	}

	affected, err := s.Match("filtered_foos", map[string][]string{"attr1": {"red"}})
	if err != nil {
		panic(err)
	}
	for _, r := range affected {
		fmt.Println(r.Key)
	}

	removed, _ := s.RemoveExpired(now.Add(time.Hour))
	fmt.Println("expired:", removed)
	// Output:
	// filtered_foos@
	// filtered_foos@attr1=red
	// filtered_foos@attr2=7
	// expired: 4
}
