package worker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// pickByKey sends the keys in remote to a peer and owns the others.
type pickByKey struct {
	p      *fakePeer
	remote map[string]bool
}

func (pk pickByKey) PickPeer(key string) (Peer, bool) {
	if pk.remote[key] {
		return pk.p, true
	}
	return nil, false
}

func TestInvalidateKeysScope(t *testing.T) {
	ctx := context.Background()
	p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
		return &Entry{Label: req.Label, Key: req.Key, Args: req.Args, Value: []byte("remote"), Owner: "n2",
			CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}, Miss, nil
	}}
	near, _ := KeyOf("s", Args{"id": "near"})
	owned, _ := KeyOf("s", Args{"id": "owned"})
	c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickByKey{p: p, remote: map[string]bool{near: true}}})
	var fills atomic.Int64
	w := register(t, c, Config{Label: "s", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		fills.Add(1)
		return Value{Data: []byte("local")}, nil
	})})
	for _, id := range []string{"near", "owned"} {
		if _, _, err := w.Get(ctx, Args{"id": id}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	if fills.Load() != 1 || p.fetches.Load() != 1 {
		t.Fatalf("setup: %d fills, %d fetches", fills.Load(), p.fetches.Load())
	}
	keys := []string{near, owned}

	// The owners' round: the owned key is rebuilt, the near copy stays.
	if n, err := w.InvalidateKeysScope(ctx, keys, ScopeOwned); err != nil || n != 1 {
		t.Fatalf("ScopeOwned acted on %d keys, %v; want 1", n, err)
	}
	if fills.Load() != 2 {
		t.Errorf("ScopeOwned: owned key filled %d times in all; want a rebuild (2)", fills.Load())
	}
	if _, ok := c.Lookup(near); !ok {
		t.Error("ScopeOwned dropped the near-cache copy")
	}

	// The second round: the near copy goes, the owned key is left alone.
	if n, err := w.InvalidateKeysScope(ctx, keys, ScopeNear); err != nil || n != 1 {
		t.Fatalf("ScopeNear acted on %d keys, %v; want 1", n, err)
	}
	if _, ok := c.Lookup(near); ok {
		t.Error("ScopeNear kept the near-cache copy")
	}
	if _, ok := c.Lookup(owned); !ok || fills.Load() != 2 {
		t.Errorf("ScopeNear touched the owned key: cached %v, %d fills", ok, fills.Load())
	}

	// Both at once, as a member that missed the owners' round applies it.
	// Both keys are read first: an owned entry nobody read since its
	// rebuild would be dropped, not rebuilt.
	for _, id := range []string{"near", "owned"} {
		if _, _, err := w.Get(ctx, Args{"id": id}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := w.InvalidateKeysScope(ctx, keys, ScopeAll); err != nil || n != 2 {
		t.Fatalf("ScopeAll acted on %d keys, %v; want 2", n, err)
	}
	if _, ok := c.Lookup(near); ok || fills.Load() != 3 {
		t.Errorf("ScopeAll: near copy cached %v, %d fills (want dropped, 3)", ok, fills.Load())
	}
}
