package worker

import (
	"context"
	"hash/maphash"
	"iter"
	"time"

	"github.com/maypok86/otter/v2"
)

// store is the cache's byte-bounded map of items. It keys otter by a 64-bit
// hash of the key and keeps the key in the item's own allocation, and it
// leaves otter's expiry off (expired items are dropped by reap): otter's
// node for a uint64 key without expiry is 48 bytes, for a string key with
// expiry 80, besides the key's own allocation.
//
// Two keys of one hash share a slot: the item holds its key, so a lookup
// of the other key is a miss, and storing it replaces the first (an
// eviction, at odds of 2⁻⁶⁴ per pair of keys).
type store struct {
	seed  maphash.Seed
	m     *otter.Cache[uint64, *item]
	clock Clock
}

func newStore(maxBytes int64, clock Clock) (*store, error) {
	m, err := otter.New(&otter.Options[uint64, *item]{
		MaximumWeight: uint64(maxBytes),
		Weigher:       func(_ uint64, it *item) uint32 { return it.weight() },
	})
	if err != nil {
		return nil, err
	}
	return &store{seed: maphash.MakeSeed(), m: m, clock: clock}, nil
}

func (s *store) hash(key string) uint64 { return maphash.String(s.seed, key) }

// get returns the item of key, expired or not.
func (s *store) get(key string) (*item, bool) {
	it, ok := s.m.GetIfPresent(s.hash(key))
	if !ok || it.key() != key {
		return nil, false
	}
	return it, true
}

// set stores it under its key.
func (s *store) set(it *item) { s.m.Set(s.hash(it.key()), it) }

// remove removes the item of key and reports whether there was one.
func (s *store) remove(key string) bool {
	h := s.hash(key)
	if it, ok := s.m.GetIfPresent(h); !ok || it.key() != key {
		return false
	}
	_, ok := s.m.Invalidate(h)
	return ok
}

// all iterates over the items not past their hard deadline at now, with
// their keys, in no particular order.
func (s *store) all(now int64) iter.Seq2[string, *item] {
	return func(yield func(string, *item) bool) {
		for _, it := range s.m.All() {
			if now < it.avail && !yield(it.key(), it) {
				return
			}
		}
	}
}

// hottest iterates over the items not past their hard deadline at now, from
// the most to the least valuable to keep.
func (s *store) hottest(now int64) iter.Seq[*item] {
	return func(yield func(*item) bool) {
		for oe := range s.m.Hottest() {
			if now < oe.Value.avail && !yield(oe.Value) {
				return
			}
		}
	}
}

// reapEvery is how often the store looks for expired items: every second,
// and less often for large stores, whose pass costs more (about 30 ms per
// million items): an expired item is never served and weighs against the
// bound until then, so the bound holds either way.
func reapEvery(items int) time.Duration {
	return max(time.Second, time.Duration(items/100_000)*time.Second)
}

// reap removes the expired items until ctx ends. What has expired is read
// on the cache's clock; the passes are timed by the system's, like other
// upkeep: on a fake clock, they add no timer that a test would count.
func (s *store) reap(ctx context.Context) {
	for {
		t := time.NewTimer(reapEvery(s.m.EstimatedSize()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		now := s.clock.Now().UnixNano()
		for h, it := range s.m.All() {
			if now >= it.avail {
				// Only if the slot still holds this item: a refill may have
				// replaced it since the iteration read it.
				s.m.Compute(h, func(cur *item, found bool) (*item, otter.ComputeOp) {
					if found && cur == it {
						return nil, otter.InvalidateOp
					}
					return cur, otter.CancelOp
				})
			}
		}
	}
}

func (s *store) len() int      { return s.m.EstimatedSize() }
func (s *store) bytes() uint64 { return s.m.WeightedSize() }
func (s *store) close()        { s.m.StopAllGoroutines() }
