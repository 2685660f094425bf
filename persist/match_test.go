package persist

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// refMatches is the reference: the matching rule of the original, applied
// to one record by brute force.
func refMatches(r Record, attrs map[string][]string) bool {
	for a, want := range attrs {
		have, constrained := r.Match[a]
		if !constrained {
			continue
		}
		if !slices.ContainsFunc(want, func(v string) bool { return slices.Contains(have, v) }) {
			return false
		}
	}
	return true
}

// Alphabets with the bytes that escaping must handle, and names that are
// prefixes of one another.
var (
	propLabels = []string{"L", "L\x00", "LL", "M", ""}
	propAttrs  = []string{"a", "a\x00", "ab", "b", "c", ""}
	propValues = []string{"1", "2", "12", "", "\x00", "\x00\x01", "x\xff"}
)

func randValues(rng *rand.Rand, max int) []string {
	n := rng.IntN(max + 1)
	vs := make([]string, n)
	for i := range vs {
		vs[i] = propValues[rng.IntN(len(propValues))]
	}
	return vs
}

func randMatch(rng *rand.Rand) map[string][]string {
	if rng.IntN(8) == 0 {
		return nil
	}
	m := map[string][]string{}
	for _, a := range propAttrs {
		if rng.IntN(3) == 0 {
			m[a] = randValues(rng, 3)
		}
	}
	return m
}

func randRecord(rng *rand.Rand, nkeys int) Record {
	label := propLabels[rng.IntN(len(propLabels)-1)] // every label but the empty one
	r := rec(label, "k"+itoa(rng.IntN(nkeys)), randMatch(rng))
	if rng.IntN(2) == 0 {
		r.RelevanceTo = t0.Add(time.Duration(rng.IntN(100)) * time.Second)
	}
	r.AvailableTo = t0.Add(time.Duration(rng.IntN(100)) * time.Second)
	return r
}

// TestMatchProperty checks Match, List, StaleBefore and RemoveExpired
// against a brute-force scan of a reference map, over random records
// (written, replaced and deleted, sync and async) and random events.
func TestMatchProperty(t *testing.T) {
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 42))
		s := openMem(t, Config{BatchSize: 1 + rng.IntN(50)})
		ref := map[string]Record{}
		const nkeys = 150
		for range 400 {
			r := randRecord(rng, nkeys)
			var err error
			switch rng.IntN(6) {
			case 0:
				err = s.Delete(r.Key)
				delete(ref, r.Key)
			case 1, 2:
				err = s.Put(r)
				ref[r.Key] = r
			default:
				err = s.PutAsync(r)
				ref[r.Key] = r
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		checkIndexes(t, s)
		checkQueries(t, s, rng, ref)

		now := t0.Add(time.Duration(rng.IntN(100)) * time.Second)
		if _, err := s.RemoveExpired(now); err != nil {
			t.Fatal(err)
		}
		for k, r := range ref {
			if !r.AvailableTo.After(now) {
				delete(ref, k)
			}
		}
		checkIndexes(t, s)
		checkQueries(t, s, rng, ref)
	}
}

func checkQueries(t *testing.T, s *Store, rng *rand.Rand, ref map[string]Record) {
	t.Helper()
	for range 150 {
		label := propLabels[rng.IntN(len(propLabels))]
		attrs := map[string][]string{}
		for _, a := range propAttrs {
			if rng.IntN(3) == 0 {
				attrs[a] = randValues(rng, 3)
			}
		}
		// Sometimes an attribute no record has.
		if rng.IntN(5) == 0 {
			attrs["zz"] = []string{"1"}
		}
		var want []string
		for _, k := range sortedKeys(ref) {
			if r := ref[k]; r.Label == label && refMatches(r, attrs) {
				want = append(want, k)
			}
		}
		got, err := s.Match(label, attrs)
		if err != nil {
			t.Fatal(err)
		}
		if fmtKeys(keysOf(got)) != fmtKeys(want) {
			t.Fatalf("Match(%q, %q)\n got %v\nwant %v", label, attrs, keysOf(got), want)
		}
	}
	for _, label := range propLabels {
		var want []string
		for _, k := range sortedKeys(ref) {
			if ref[k].Label == label {
				want = append(want, k)
			}
		}
		got, _, err := s.List(label, "", 0)
		if err != nil || fmtKeys(keysOf(got)) != fmtKeys(want) {
			t.Fatalf("List(%q) = %v, %v\nwant %v", label, keysOf(got), err, want)
		}
		all, err := s.Match(label, nil)
		if err != nil || fmtKeys(keysOf(all)) != fmtKeys(want) {
			t.Fatalf("Match(%q, nil) = %v, %v\nwant %v", label, keysOf(all), err, want)
		}
	}
	before := t0.Add(time.Duration(rng.IntN(100)) * time.Second)
	var want []Record
	for _, r := range ref {
		if !r.RelevanceTo.IsZero() && !r.RelevanceTo.After(before) {
			want = append(want, r)
		}
	}
	slices.SortFunc(want, func(a, b Record) int {
		if c := a.RelevanceTo.Compare(b.RelevanceTo); c != 0 {
			return c
		}
		return compareStrings(a.Key, b.Key)
	})
	got, err := s.StaleBefore(before, 0)
	if err != nil || fmtKeys(keysOf(got)) != fmtKeys(keysOf(want)) {
		t.Fatalf("StaleBefore(%v) = %v, %v\nwant %v", before, keysOf(got), err, keysOf(want))
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
