package persist

// The live-key counts: which keys the database has no record of, known
// without reading Pebble.

import (
	"hash/maphash"
	"sync/atomic"
)

// liveKeys counts the records in the database per 64-bit hash of their key,
// so that the writer knows without reading Pebble that a key has no record:
// most async records are of new keys, and proving a miss through Pebble (a
// bloom-filtered seek per level) was the writer's largest cost per record
// once the database had grown. Open counts the record table; the writer,
// the only goroutine that changes records, keeps the counts, applying a
// batch's changes after its commit.
//
// A zero count proves that the key has no record. Counts may be too high,
// never too low: a record the writer could not decode counts as created
// when it is replaced and is not uncounted when deleted, and a batch whose
// commit failed keeps its creations but not its removals. Too high costs a
// read (the one every write used to pay); too low would skip reading a
// record that exists and leave its index entries stale.
//
// Memory: one map entry (a uint64 and a uint32) per record, about 20-30
// bytes with the map's overhead.
//
// Beyond max counts (the store's memory budget) it gives up: off, it knows
// nothing, until the next Open counts again.
type liveKeys struct {
	seed maphash.Seed
	n    map[uint64]uint32
	max  int // 0: no bound
	off  bool
	// bytes is where the counts' size is published (may be nil).
	bytes *atomic.Int64
}

// check turns l off when it holds more than its max counts.
func (l *liveKeys) check() {
	if l.max > 0 && len(l.n) > l.max {
		l.off, l.n = true, nil
	}
	if l.bytes != nil {
		l.bytes.Store(int64(len(l.n)) * 32)
	}
}

func (l *liveKeys) hash(key string) uint64 { return maphash.String(l.seed, key) }

// absent reports whether key certainly has no committed record. A nil
// liveKeys knows nothing.
func (l *liveKeys) absent(key string) bool {
	return l != nil && !l.off && l.n[l.hash(key)] == 0
}

// apply adds a committed batch's changes to the counts; with all false,
// only the increments (see the type's comment).
func (l *liveKeys) apply(delta map[uint64]int32, all bool) {
	if l == nil || l.off {
		return
	}
	defer l.check()
	for h, d := range delta {
		if d > 0 {
			l.n[h] += uint32(d)
		} else if d < 0 && all {
			if c := l.n[h]; c > uint32(-d) {
				l.n[h] = c - uint32(-d)
			} else {
				delete(l.n, h)
			}
		}
	}
}

// counted records that this batch creates (+1) or removes (-1) the record
// of key.
func (t *txn) counted(key string, d int32) {
	t.count += int64(d)
	if t.live != nil {
		t.delta[t.live.hash(key)] += d
	}
}
