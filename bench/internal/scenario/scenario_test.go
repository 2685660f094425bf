package scenario

import (
	"context"
	"testing"
	"time"
)

// The scenarios are programs, not tests of cachenode; these check that
// the bench measures what it says on a small cluster.

func TestStampedeCountsOneFillPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := context.Background()
	s, err := NewStampede(ctx, Options{Nodes: 3, FillDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := s.Round(ctx, 20, 9)
	if r.Ops != 180 || r.Errors != 0 {
		t.Fatalf("ops %d errors %d, want 180 and 0", r.Ops, r.Errors)
	}
	if r.Keys != 20 || r.Fills != 20 || r.Figures["max_fills_per_key"] != 1 {
		t.Fatalf("keys %d fills %d max %v, want 20, 20, 1", r.Keys, r.Fills, r.Figures["max_fills_per_key"])
	}
}

func TestRemoteHitsAreHits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := context.Background()
	h, err := NewHits(ctx, RemoteHit, Options{Nodes: 3, Keys: 50, Callers: 4, Duration: 200 * time.Millisecond, Warmup: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	r := h.Run(ctx)
	if r.Ops == 0 || r.Errors != 0 || r.Fills != 0 || len(r.Notes) != 0 {
		t.Fatalf("ops %d errors %d fills %d notes %v: want reads, all hits at the owner", r.Ops, r.Errors, r.Fills, r.Notes)
	}
}
