package persist

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// openMem opens an in-memory store with the sweep loop off, closed at the
// end of the test.
func openMem(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = -1
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)

func rec(label, key string, match map[string][]string) Record {
	return Record{
		Label:        label,
		Key:          key,
		Args:         map[string]any{"k": key},
		Match:        match,
		Owner:        "n1",
		CreatedAt:    t0,
		AvailableTo:  t0.Add(time.Hour),
		FillDuration: time.Millisecond,
		Size:         int64(len(key)),
	}
}

// checkIndexes verifies that the index tables hold exactly the entries the
// stored records produce: nothing stale, nothing missing.
func checkIndexes(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	want := map[string]bool{}
	got := map[string]bool{}
	err := s.read(func(db *pebble.DB) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixExpiry + 1}})
		if err != nil {
			return err
		}
		defer it.Close()
		for valid := it.First(); valid; valid = it.Next() {
			k := bytes.Clone(it.Key())
			if _, err := parseKey(k); err != nil {
				t.Errorf("unparsable key %q: %v", k, err)
			}
			if k[0] != prefixRecord {
				got[string(k)] = true
				continue
			}
			r, err := decodeRecord(it.Value())
			if err != nil {
				t.Errorf("record %q: %v", k, err)
				continue
			}
			if !bytes.Equal(recordKey(r.Key), k) {
				t.Errorf("record under %q has key %q", k, r.Key)
			}
			for _, ik := range indexKeys(&r) {
				want[string(ik)] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range got {
		if !want[k] {
			p, _ := parseKey([]byte(k))
			t.Errorf("stale index entry %+v", p)
		}
	}
	for k := range want {
		if !got[k] {
			p, _ := parseKey([]byte(k))
			t.Errorf("missing index entry %+v", p)
		}
	}
}

func keysOf(recs []Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Key
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func mustGet(t testing.TB, s *Store, key string) Record {
	t.Helper()
	r, err := s.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return r
}

func fmtKeys(ks []string) string { return fmt.Sprintf("%q", ks) }

type pebbleDB = pebble.DB
