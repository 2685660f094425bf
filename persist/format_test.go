package persist

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// recordBytes is what one Put of rec writes: the record under its key and
// every index entry (keys only: index values are empty).
func recordBytes(t *testing.T, rec Record) int {
	t.Helper()
	v, err := encodeRecord(&rec)
	if err != nil {
		t.Fatal(err)
	}
	n := len(recordKey(rec.Key)) + len(v)
	for _, k := range indexKeys(&rec) {
		n += len(k)
	}
	return n
}

// wideRecord is the record of a read with n arguments of one value each,
// as an HTTP read ?attr00=value-00&... would make it.
func wideRecord(n int) Record {
	args := map[string]any{}
	match := map[string][]string{}
	var key strings.Builder
	key.WriteString("wide@")
	for i := range n {
		name, val := fmt.Sprintf("attr%02d", i), fmt.Sprintf("value-%02d", i)
		args[name], match[name] = val, []string{val}
		fmt.Fprintf(&key, "%s=%s&", name, val)
	}
	k := key.String()
	if len(k) > 250 { // the worker hashes long keys to this length
		k = k[:250]
	}
	r := rec("wide", k, match)
	r.Args = args
	r.RelevanceTo = t0.Add(time.Minute)
	return r
}

// TestRecordBytesLinearInArgs: the bytes a record writes grow linearly with
// its number of arguments. Format 1 repeated every attribute name of the
// record in each value-index entry, so 64 arguments wrote 20 times the bytes
// of 8 arguments instead of about 8 times.
func TestRecordBytesLinearInArgs(t *testing.T) {
	b8, b64 := recordBytes(t, wideRecord(8)), recordBytes(t, wideRecord(64))
	t.Logf("record of 8 arguments: %d bytes; of 64: %d bytes (%.1f×)", b8, b64, float64(b64)/float64(b8))
	const c = 1.5
	if float64(b64) > c*8*float64(b8) {
		t.Errorf("a record of 64 arguments writes %d bytes, over %.1f × 8 × %d (those of 8 arguments)", b64, c, b8)
	}
	// The same through a real store: Match still finds the wide record by
	// any one of its values.
	s := openMem(t, Config{})
	r := wideRecord(64)
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"attr00", "attr37", "attr63"} {
		got, err := s.Match("wide", map[string][]string{a: r.Match[a], "attr01": {"value-01", "x"}})
		if err != nil || len(got) != 1 {
			t.Errorf("Match by %s = %d records, %v", a, len(got), err)
		}
		got, err = s.Match("wide", map[string][]string{a: {"other"}})
		if err != nil || len(got) != 0 {
			t.Errorf("Match by another value of %s = %d records, %v", a, len(got), err)
		}
	}
	checkIndexes(t, s)
}

// TestMatchKeepsExactPredicate: records whose shapes share a shape ID (a
// hash collision, forced here by writing one shape's value entries under
// the other's ID) are filtered by their own values.
func TestMatchKeepsExactPredicate(t *testing.T) {
	s := openMem(t, Config{})
	a := rec("L", "L@a", map[string][]string{"x": {"1"}})
	b := rec("L", "L@b", map[string][]string{"x": {"1"}, "y": {"2"}})
	for _, r := range []Record{a, b} {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	// b's value entry for x=1 also under a's shape ID, as if they collided.
	forged := appendEsc(matchPrefix("L", encodeShape([]string{"x"}), "x", "1"), b.Key)
	if err := s.read(func(db *pebbleDB) error { return db.Set(forged, nil, nil) }); err != nil {
		t.Fatal(err)
	}
	got, err := s.Match("L", map[string][]string{"x": {"1"}, "y": {"3"}})
	if err != nil {
		t.Fatal(err)
	}
	if keys := keysOf(got); len(keys) != 1 || keys[0] != a.Key {
		t.Errorf("Match = %v, want only %s (%s constrains y to 2)", keys, a.Key, b.Key)
	}
}

// TestOpenDropsFormat1: a data directory of format 1 opens with its
// records, indexes and values dropped, its outbox kept, and one log line.
func TestOpenDropsFormat1(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SweepInterval: -1, KeepValues: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rec("L", "L@k", map[string][]string{"x": {"1"}})
	r.RelevanceTo = t0.Add(time.Minute)
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if err := s.PutValue(r.Key, []byte("v"), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	id, err := s.Enqueue(t0, []byte("event"))
	if err != nil {
		t.Fatal(err)
	}
	// A value entry of format 1: the whole shape where the ID now is.
	v1 := appendEsc(appendEsc(appendEsc(appendEsc(appendEsc([]byte{prefixMatch}, "L"), encodeShape([]string{"x"})), "x"), "1"), r.Key)
	err = s.read(func(db *pebbleDB) error {
		if err := db.Set(v1, nil, nil); err != nil {
			return err
		}
		return db.Set(metaKey(metaFormat), []byte{formatVersionV1}, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	s = openMem(t, Config{Dir: dir, KeepValues: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if n := strings.Count(logs.String(), "format 1"); n != 1 {
		t.Errorf("logged %d lines about format 1, want 1:\n%s", n, logs.String())
	}
	if recs, _, err := s.List("L", "", 0); err != nil || len(recs) != 0 {
		t.Errorf("List after the upgrade = %d records, %v", len(recs), err)
	}
	if _, _, err := s.Value(r.Key); err == nil {
		t.Errorf("the value of format 1 is still served")
	}
	err = s.read(func(db *pebbleDB) error {
		for _, table := range []byte{prefixRecord, prefixShape, prefixMatch, prefixRelevance, prefixExpiry, prefixValue, prefixValueExpiry} {
			it, err := db.NewIter(nil)
			if err != nil {
				return err
			}
			for valid := it.SeekGE([]byte{table}); valid && it.Key()[0] == table; valid = it.Next() {
				t.Errorf("table 0x%02x still holds %q", table, it.Key())
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := s.Pending(); err != nil || len(p) != 1 || p[0].ID != id {
		t.Errorf("outbox after the upgrade = %+v, %v; want item %d", p, err, id)
	}
	// Written again in the current format, found again.
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Match("L", map[string][]string{"x": {"1"}}); err != nil || len(got) != 1 {
		t.Errorf("Match after refill = %d, %v", len(got), err)
	}
	checkIndexes(t, s)
}
