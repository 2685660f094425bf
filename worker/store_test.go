package worker

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The store keeps no expiry of its own: expired entries are never served
// (TestExpiry) and the reaper removes them, so that they stop weighing
// against the bound; the others stay.
func TestExpiredEntriesAreReaped(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	value := GetterFunc(func(ctx context.Context, a Args) (Value, error) { return Value{Data: []byte("v")}, nil })
	short := register(t, c, Config{Label: "short", Getter: value, Settings: Settings{Expires: time.Minute}})
	long := register(t, c, Config{Label: "long", Getter: value, Settings: Settings{Expires: time.Hour}})
	fill := func(w *Worker) {
		for i := range 50 {
			if _, _, err := w.Get(context.Background(), Args{"i": i}, Settings{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	fill(long)
	fill(short)
	if c.Len() != 100 {
		t.Fatalf("%d entries, want 100", c.Len())
	}
	clock.Advance(2 * time.Minute)
	waitFor(t, "the expired entries to be reaped", func() bool { return c.Len() == 50 })
	var longBytes uint64
	for e := range c.Entries() {
		if e.Label != "long" {
			t.Fatalf("%s %s still held", e.Label, e.Key)
		}
		longBytes += uint64(e.it.weight())
	}
	// The store's weight follows its removals in its maintenance, soon after.
	waitFor(t, "the store to weigh only the long-lived entries", func() bool { return c.Bytes() == longBytes })
}

// An item holds its key, arguments and value in its one allocation, and
// gives them back; a key of another hash slot is a miss.
func TestItemKeepsKeyArgsAndValue(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	for _, tc := range []struct {
		key   string
		args  Args
		value []byte
	}{
		{"a", nil, nil},
		{"b?x=1", Args{"x": int64(1)}, []byte("value")},
		{string(make([]byte, 300)), Args{"long": "key"}, make([]byte, 70000)},
	} {
		e := &Entry{Label: "l", Key: tc.key, Args: tc.args, Value: tc.value, ContentType: "text/plain", Owner: "me",
			CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}
		it, err := c.newItem(e)
		if err != nil {
			t.Fatal(err)
		}
		c.store.set(it)
		got, ok := c.store.get(tc.key)
		if !ok {
			t.Fatalf("%.10q not found", tc.key)
		}
		back := got.entry(&c.meta, got.key(), nil)
		if back.Key != tc.key || fmt.Sprint(back.Args) != fmt.Sprint(tc.args) || string(back.Value) != string(tc.value) ||
			back.Label != "l" || back.Owner != "me" || back.ContentType != "text/plain" || !back.AvailableTo.Equal(e.AvailableTo) {
			t.Errorf("%.10q came back as %+v", tc.key, back)
		}
		if _, ok := c.store.get(tc.key + "x"); ok {
			t.Errorf("%.10q found under another key", tc.key)
		}
	}
}
