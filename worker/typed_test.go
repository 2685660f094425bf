package worker

import (
	"context"
	"fmt"
	"testing"
	"time"
)

type foo struct {
	ID    int
	Attr1 int
	Attr2 string
}

func TestTypedWorker(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	foos, err := Register(c, Config{Label: "filtered_foos"}, func(ctx context.Context, a Args) ([]foo, error) {
		return []foo{{ID: 1, Attr1: a["attr1"].(int), Attr2: a["attr2"].(string)}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := foos.Get(ctx, Args{"attr1": 3, "attr2": "x"})
	if err != nil || len(got) != 1 || got[0].Attr2 != "x" {
		t.Fatalf("%v %v", got, err)
	}
	// An entry that arrived as bytes (from a peer, from disk) is decoded.
	_, e, _, _ := foos.GetEntry(ctx, Args{"attr1": 3, "attr2": "x"}, Settings{})
	if e.ContentType != ContentTypeMsgpack {
		t.Fatalf("content type %q", e.ContentType)
	}
	wire := *e
	wire.decoded = nil
	wire.CreatedAt = wire.CreatedAt.Add(time.Second)
	foos.Worker().Put(&wire)
	got2, err := foos.Get(ctx, Args{"attr1": 3, "attr2": "x"})
	if err != nil || fmt.Sprint(got2) != fmt.Sprint(got) {
		t.Fatalf("decoded %v %v", got2, err)
	}
	if _, err := Register(c, Config{Label: "nil"}, (func(context.Context, Args) (int, error))(nil)); err == nil {
		t.Fatal("nil getter accepted")
	}
}

// Example shows an embedded worker: a label, a getter that builds the value
// from the call's arguments, a TTL, and typed Gets.
func Example() {
	cache, err := NewCache(CacheConfig{MaxBytes: 64 << 20})
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	type Foo struct{ Attr1 int }
	calls := 0
	filtered, err := Register(cache, Config{
		Label:    "filtered_foos",
		Settings: Settings{Expires: time.Hour, RelevanceInvalidation: Bool(true), RelevanceExpires: time.Minute},
	}, func(ctx context.Context, args Args) ([]Foo, error) {
		calls++ // a database query in real life
		return []Foo{{Attr1: args["attr1"].(int)}}, nil
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for range 3 {
		foos, _ := filtered.Get(ctx, Args{"attr1": 7})
		fmt.Println(foos[0].Attr1)
	}
	fmt.Println("getter calls:", calls)
	// Output:
	// 7
	// 7
	// 7
	// getter calls: 1
}
