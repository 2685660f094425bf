package worker

import (
	"context"
	"testing"
)

func BenchmarkHit(b *testing.B) {
	c, err := NewCache(CacheConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	w, _ := Register(c, Config{Label: "hit"}, func(ctx context.Context, a Args) (string, error) { return "value", nil })
	ctx := context.Background()
	args := Args{"attr1": 1, "attr2": "x"}
	if _, err := w.Get(ctx, args); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.Get(ctx, args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHitParallel(b *testing.B) {
	c, err := NewCache(CacheConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	w, _ := Register(c, Config{Label: "hit"}, func(ctx context.Context, a Args) (string, error) { return "value", nil })
	ctx := context.Background()
	args := Args{"attr1": 1, "attr2": "x"}
	w.Get(ctx, args)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := w.Get(ctx, args); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkMissInstantGetter(b *testing.B) {
	c, err := NewCache(CacheConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	w, _ := Register(c, Config{Label: "miss"}, func(ctx context.Context, a Args) (string, error) { return "value", nil })
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := w.Get(ctx, Args{"i": i}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKeyOf(b *testing.B) {
	args := Args{"attr1": 1, "attr2": "x", "tags": []string{"b", "a"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := KeyOf("filtered_foos", args); err != nil {
			b.Fatal(err)
		}
	}
}
