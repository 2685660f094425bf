package persist

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestOpenValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{QueueSize: -1}, "QueueSize"},
		{Config{BatchSize: -1}, "BatchSize"},
		{Config{FlushInterval: -time.Second}, "FlushInterval"},
	} {
		_, err := Open(tc.cfg)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Open(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
	cfg := Config{SweepInterval: -1}
	s := openMem(t, cfg)
	if cfg.QueueSize != 0 || cfg.Now != nil || cfg.Logger != nil {
		t.Errorf("Open wrote into the caller's Config: %+v", cfg)
	}
	if s.cfg.QueueSize != DefaultQueueSize || s.cfg.BatchSize != DefaultBatchSize || s.cfg.FlushInterval != DefaultFlushInterval {
		t.Errorf("defaults not filled: %+v", s.cfg)
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	s := openMem(t, Config{})
	r := Record{
		Label: "foos",
		Key:   "foos@a=1&b=x",
		Args: map[string]any{
			"a": 1, "b": []any{"x", "y"}, "c": nil, "d": true, "e": 1.5, "f": "",
			"g": uint8(7), "h": []string{"p"}, "i": map[string]any{"n": int32(-3)},
		},
		Match:        map[string][]string{"a": {"1"}, "b": {"x", "y"}, "z": {}},
		Owner:        "n1",
		CreatedAt:    t0,
		RelevanceTo:  t0.Add(time.Minute),
		AvailableTo:  t0.Add(time.Hour),
		FillDuration: 1234 * time.Microsecond,
		Size:         99,
	}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, r.Key)
	want := r
	want.Args = map[string]any{
		"a": int64(1), "b": []any{"x", "y"}, "c": nil, "d": true, "e": 1.5, "f": "",
		"g": uint64(7), "h": []any{"p"}, "i": map[string]any{"n": int64(-3)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get = %+v\nwant %+v", got, want)
	}
	if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Put(Record{Label: "foos"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put(no key) = %v, want ErrInvalid", err)
	}
	if err := s.Put(Record{Label: "foos", Key: "k", Args: map[string]any{"c": make(chan int)}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put(chan arg) = %v, want ErrInvalid", err)
	}
}

func TestReplaceLeavesNoStaleEntries(t *testing.T) {
	s := openMem(t, Config{})
	r1 := rec("L", "L@1", map[string][]string{"a": {"1", "2"}, "b": {"x"}})
	r1.RelevanceTo = t0.Add(time.Minute)
	if err := s.Put(r1); err != nil {
		t.Fatal(err)
	}
	// Same key: other label, other shape, other deadlines.
	r2 := rec("M", "L@1", map[string][]string{"c": {"3"}})
	r2.AvailableTo = t0.Add(2 * time.Hour)
	if err := s.Put(r2); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s)
	if got, _ := s.Match("L", nil); len(got) != 0 {
		t.Errorf("Match(L) after replace = %v", keysOf(got))
	}
	if got, _ := s.Match("M", map[string][]string{"c": {"3"}}); fmtKeys(keysOf(got)) != `["L@1"]` {
		t.Errorf("Match(M, c=3) = %v", keysOf(got))
	}
	if got, _ := s.StaleBefore(t0.Add(time.Hour), 0); len(got) != 0 {
		t.Errorf("StaleBefore after replace without soft TTL = %v", keysOf(got))
	}
	if labels, _ := s.Labels(); fmtKeys(labels) != `["M"]` {
		t.Errorf("Labels = %q", labels)
	}
	// Async replacements and a delete in one batch.
	for i := range 5 {
		r := rec("L", "L@1", map[string][]string{"a": {string(rune('0' + i))}})
		if err := s.PutAsync(r); err != nil {
			t.Fatal(err)
		}
	}
	checkIndexes(t, s)
	if err := s.Delete("L@1"); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s)
	if _, err := s.Get("L@1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v", err)
	}
	if err := s.Delete("L@1"); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
}

func TestListPages(t *testing.T) {
	s := openMem(t, Config{})
	var want []string
	for i := range 25 {
		k := "L@" + string(rune('a'+i))
		want = append(want, k)
		if err := s.Put(rec("L", k, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Labels that share a prefix with L must not leak into its pages.
	for _, l := range []string{"L\x00", "LL", "K"} {
		if err := s.Put(rec(l, l+"@x", nil)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for page := 0; ; page++ {
		recs, next, err := s.List("L", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, keysOf(recs)...)
		if next == "" {
			break
		}
		if page > 5 {
			t.Fatal("List does not end")
		}
		after = next
	}
	if fmtKeys(got) != fmtKeys(want) {
		t.Errorf("pages = %v\nwant %v", got, want)
	}
	all, next, _ := s.List("L", "", 0)
	if len(all) != 25 || next != "" {
		t.Errorf("List(limit 0) = %d records, next %q", len(all), next)
	}
	labels, err := s.Labels()
	if err != nil || fmtKeys(labels) != fmtKeys([]string{"K", "L", "L\x00", "LL"}) {
		t.Errorf("Labels = %q, %v", labels, err)
	}
}

func TestStaleBefore(t *testing.T) {
	s := openMem(t, Config{})
	for i, d := range []time.Duration{3, 1, 2, 0} {
		r := rec("L", "L@"+string(rune('a'+i)), nil)
		if d > 0 {
			r.RelevanceTo = t0.Add(d * time.Minute)
		}
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.StaleBefore(t0.Add(2*time.Minute), 0)
	if err != nil || fmtKeys(keysOf(got)) != `["L@b" "L@c"]` {
		t.Errorf("StaleBefore = %v, %v", keysOf(got), err)
	}
	got, _ = s.StaleBefore(t0.Add(time.Hour), 1)
	if fmtKeys(keysOf(got)) != `["L@b"]` {
		t.Errorf("StaleBefore(limit 1) = %v", keysOf(got))
	}
}

func TestRemoveExpired(t *testing.T) {
	s := openMem(t, Config{KeepValues: true})
	n := expireChunk + 10 // more than one step
	for i := range n {
		r := rec("L", "L@"+itoa(i), map[string][]string{"a": {itoa(i % 3)}})
		r.AvailableTo = t0.Add(time.Duration(i%2) * time.Hour) // half at t0, half an hour later
		r.RelevanceTo = t0
		if err := s.PutAsync(r); err != nil {
			t.Fatal(err)
		}
	}
	keep := rec("L", "L@keep", nil)
	keep.AvailableTo = time.Time{} // never expires
	if err := s.Put(keep); err != nil {
		t.Fatal(err)
	}
	if err := s.PutValue("v@old", []byte("x"), t0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutValue("v@new", []byte("y"), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	removed, err := s.RemoveExpired(t0)
	if err != nil || removed != (n+1)/2 {
		t.Errorf("RemoveExpired = %d, %v, want %d", removed, err, (n+1)/2)
	}
	checkIndexes(t, s)
	all, _, _ := s.List("L", "", 0)
	if len(all) != n/2+1 {
		t.Errorf("%d records left, want %d", len(all), n/2+1)
	}
	for _, r := range all {
		if !r.AvailableTo.IsZero() && !r.AvailableTo.After(t0) {
			t.Errorf("expired record %q left", r.Key)
		}
	}
	st := s.Stats()
	if st.Expired != uint64((n+1)/2) || st.ValuesExpired != 1 {
		t.Errorf("Stats = %+v", st)
	}
	// Values: Value checks Config.Now, and the sweep removed the old one.
	if _, _, err := s.Value("v@old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Value(expired) = %v", err)
	}
	removed, _ = s.RemoveExpired(t0.Add(time.Hour))
	if removed != n/2 {
		t.Errorf("second RemoveExpired = %d, want %d", removed, n/2)
	}
	checkIndexes(t, s)
	if got, _ := s.Match("L", nil); fmtKeys(keysOf(got)) != `["L@keep"]` {
		t.Errorf("left = %v", keysOf(got))
	}
}

func TestSweepLoop(t *testing.T) {
	var now atomic.Pointer[time.Time]
	now.Store(&t0)
	s := openMem(t, Config{SweepInterval: time.Millisecond, Now: func() time.Time { return *now.Load() }})
	if err := s.Put(rec("L", "L@1", nil)); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(2 * time.Hour)
	now.Store(&later)
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Expired == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweep loop did not remove the expired record")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Get("L@1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after sweep = %v", err)
	}
}

func TestAsyncQueue(t *testing.T) {
	// A long flush interval and a big batch: nothing is written until Flush.
	s := openMem(t, Config{QueueSize: 3, BatchSize: 100, FlushInterval: time.Hour, QueueWait: -1})
	for _, k := range []string{"a", "b", "c"} {
		if err := s.PutAsync(rec("L", k, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Full: a new key is dropped, a pending key is replaced in place.
	if err := s.PutAsync(rec("L", "d", nil)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("PutAsync on a full queue = %v, want ErrQueueFull", err)
	}
	b2 := rec("L", "b", nil)
	b2.Owner = "n2"
	if err := s.PutAsync(b2); err != nil {
		t.Errorf("PutAsync replacing a pending key = %v", err)
	}
	// A synchronous Put supersedes the pending write of its key.
	c2 := rec("L", "c", nil)
	c2.Owner = "sync"
	if err := s.Put(c2); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "b").Owner; got != "n2" {
		t.Errorf("b owner = %q, want the replacement", got)
	}
	if got := mustGet(t, s, "c").Owner; got != "sync" {
		t.Errorf("c owner = %q, want the synchronous write", got)
	}
	if _, err := s.Get("d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dropped record was written: %v", err)
	}
	st := s.Stats()
	want := Stats{WrittenSync: 1, WrittenAsync: 2, Replaced: 2, Dropped: 1, Batches: st.Batches}
	if st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
}

func TestAsyncFlushInterval(t *testing.T) {
	s := openMem(t, Config{FlushInterval: time.Millisecond})
	if err := s.PutAsync(rec("L", "a", nil)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.Get("a"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("async record not written within the flush interval")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConcurrentWriters(t *testing.T) {
	s := openMem(t, Config{QueueSize: 1 << 20, BatchSize: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				// Few keys, so sync and async writes of a key interleave.
				r := rec("L", "k"+itoa(i%17), map[string][]string{"g": {itoa(g)}, "i": {itoa(i % 5)}})
				var err error
				switch i % 4 {
				case 0:
					err = s.Put(r)
				case 1:
					err = s.Delete(r.Key)
				default:
					err = s.PutAsync(r)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					if _, err := s.Match("L", map[string][]string{"g": {itoa(g)}}); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	checkIndexes(t, s)
}

func TestClosed(t *testing.T) {
	s, err := Open(Config{KeepValues: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutAsync(rec("L", "a", nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if s.Stats().WrittenAsync != 1 {
		t.Errorf("Close did not flush the pending async write: %+v", s.Stats())
	}
	checks := map[string]error{
		"Put":      s.Put(rec("L", "b", nil)),
		"PutAsync": s.PutAsync(rec("L", "b", nil)),
		"Delete":   s.Delete("a"),
		"Flush":    s.Flush(),
		"Ack":      s.Ack(1),
		"PutValue": s.PutValue("a", nil, time.Time{}),
	}
	_, checks["Get"] = s.Get("a")
	_, _, checks["List"] = s.List("L", "", 0)
	_, checks["Labels"] = s.Labels()
	_, checks["Match"] = s.Match("L", nil)
	_, checks["StaleBefore"] = s.StaleBefore(t0, 0)
	_, checks["RemoveExpired"] = s.RemoveExpired(t0)
	_, checks["Enqueue"] = s.Enqueue(t0, nil)
	_, checks["DueItems"] = s.DueItems(t0, 0)
	_, checks["Pending"] = s.Pending()
	_, _, checks["Value"] = s.Value("a")
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestCloseWhileBusy(t *testing.T) {
	s, err := Open(Config{SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				r := rec("L", "k"+itoa(g)+"-"+itoa(i), nil)
				var err error
				switch i % 3 {
				case 0:
					err = s.Put(r)
				case 1:
					err = s.PutAsync(r)
				default:
					_, err = s.Match("L", nil)
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	wg.Wait()
}

func TestValues(t *testing.T) {
	off := openMem(t, Config{})
	if err := off.PutValue("k", []byte("v"), time.Time{}); !errors.Is(err, ErrValuesDisabled) {
		t.Errorf("PutValue without KeepValues = %v", err)
	}
	now := t0
	s := openMem(t, Config{KeepValues: true, Now: func() time.Time { return now }})
	if err := s.PutValue("k", []byte("v1"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutValue("k", []byte("v2"), t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	v, until, err := s.Value("k")
	if err != nil || string(v) != "v2" || !until.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("Value = %q, %v, %v", v, until, err)
	}
	// The replaced value's expiry entry is gone: expiring at its time
	// removes nothing.
	if _, err := s.RemoveExpired(t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if s.Stats().ValuesExpired != 0 {
		t.Errorf("a replaced value's deadline removed the new value")
	}
	now = t0.Add(2 * time.Minute)
	if _, _, err := s.Value("k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Value after its deadline = %v", err)
	}
	if err := s.PutValue("d", []byte("x"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(rec("L", "d", nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("d"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Value("d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Value after Delete = %v", err)
	}
}

func TestReopenKeepsRecordsAndValues(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, KeepValues: true, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(rec("L", "a", map[string][]string{"x": {"1"}})); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAsync(rec("L", "b", nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutValue("a", []byte("val"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMemAt(t, Config{Dir: dir, KeepValues: true})
	if got, _ := s.Match("L", map[string][]string{"x": {"1"}}); fmtKeys(keysOf(got)) != `["a" "b"]` {
		t.Errorf("Match after reopen = %v", keysOf(got))
	}
	if v, _, err := s.Value("a"); err != nil || string(v) != "val" {
		t.Errorf("Value after reopen = %q, %v", v, err)
	}
	checkIndexes(t, s)
}

// openMemAt opens cfg (with a directory) like openMem.
func openMemAt(t *testing.T, cfg Config) *Store { return openMem(t, cfg) }

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

// TestReplaceAfterReopen replaces records that an earlier Open wrote, so
// that the writer learns they exist only from the record count Open builds
// (liveKeys): async batches large enough to be prefetched and small ones,
// synchronous Puts, deletes and re-creations, mixed with new keys.
func TestReplaceAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.PutAsync(rec("L", "k"+itoa(i), map[string][]string{"a": {itoa(i)}})); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMemAt(t, Config{Dir: dir})
	// A large async batch: old and new keys, other shapes and labels.
	for i := range 40 {
		r := rec("M", "k"+itoa(i*2), map[string][]string{"b": {itoa(i), "z"}})
		r.RelevanceTo = t0.Add(time.Duration(i) * time.Minute)
		if err := s.PutAsync(r); err != nil {
			t.Fatal(err)
		}
	}
	checkIndexes(t, s)
	// Small async batches and synchronous writes of old keys.
	for i := 1; i < 50; i += 10 {
		if err := s.PutAsync(rec("N", "k"+itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(rec("N", "k"+itoa(i+2), map[string][]string{"c": {"1"}})); err != nil {
			t.Fatal(err)
		}
	}
	checkIndexes(t, s)
	// Delete, re-create, replace again, in one batch and across batches.
	for i := range 10 {
		if err := s.Delete("k" + itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if err := s.PutAsync(rec("P", "k"+itoa(i), map[string][]string{"d": {itoa(i)}})); err != nil {
			t.Fatal(err)
		}
	}
	checkIndexes(t, s)
	for i := range 10 {
		if err := s.PutAsync(rec("Q", "k"+itoa(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	checkIndexes(t, s)
	// Left in L: k0…k49 but the 25 even ones (M), the 10 odd ones that N
	// took and k5, k7, k9 (Q).
	if got, _ := s.Match("L", nil); len(got) != 50-25-10-3 {
		t.Errorf("Match(L) = %d records: %v", len(got), keysOf(got))
	}
}

// TestFullQueueWaitsForTheWriter: a PutAsync into a full queue waits for
// the writer to take a batch instead of dropping the record (QueueWait),
// and every record of a burst far beyond the queue is written.
func TestFullQueueWaitsForTheWriter(t *testing.T) {
	s := openMem(t, Config{QueueSize: 4, BatchSize: 2, FlushInterval: time.Hour})
	const n = 500
	for i := range n {
		if err := s.PutAsync(rec("L", fmt.Sprint(i), nil)); err != nil {
			t.Fatalf("PutAsync %d into a full queue: %v", i, err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Dropped != 0 {
		t.Errorf("%d records dropped, want 0", st.Dropped)
	}
	for i := range n {
		if _, err := s.Get(fmt.Sprint(i)); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
}
