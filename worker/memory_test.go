package worker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The store's weight of its entries covers the heap they hold, for plain
// bytes and for typed workers, whose entries keep the decoded value beside
// its encoding: what dropping them frees is within 1.25× their weight.
func TestEntriesHeapWithinTheirWeight(t *testing.T) {
	type product struct {
		ID    string
		Name  string
		Price float64
		Tags  []string
	}
	for _, typed := range []bool{false, true} {
		t.Run(map[bool]string{false: "bytes", true: "typed"}[typed], func(t *testing.T) {
			c, _ := newTestCache(t, CacheConfig{MaxBytes: 1 << 30})
			const n = 20000
			var get func(i int) error
			if typed {
				w, err := Register(c, Config{Label: "p"}, func(ctx context.Context, a Args) (product, error) {
					id := a["id"].(string)
					return product{ID: id, Name: "product " + id + strings.Repeat("x", 40), Price: 9.5, Tags: []string{"a", "bb"}}, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				get = func(i int) error {
					_, err := w.Get(context.Background(), Args{"id": fmt.Sprintf("k%08d", i)})
					return err
				}
			} else {
				w, err := c.Register(Config{Label: "b", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
					return Value{Data: make([]byte, 100), ContentType: "application/octet-stream"}, nil
				})})
				if err != nil {
					t.Fatal(err)
				}
				get = func(i int) error {
					_, _, err := w.Get(context.Background(), Args{"id": fmt.Sprintf("k%08d", i)}, Settings{})
					return err
				}
			}
			for i := range n {
				if err := get(i); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "the store to weigh its entries", func() bool { return c.Len() == n })
			weight := c.Bytes()
			held := heapAfterGC()
			c.DropIf(func(*Entry) bool { return true })
			waitFor(t, "the store to drop its entries", func() bool { return c.Len() == 0 })
			freed := float64(held) - float64(heapAfterGC())
			t.Logf("%d entries: weight %d B (%d B each), freed %.0f B (%.0f B each)", n, weight, weight/n, freed, freed/n)
			if freed > 1.25*float64(weight) {
				t.Errorf("the entries held %.0f B and weighed %d B", freed, weight)
			}
		})
	}
}
