package persist

import (
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) the process used so far: the
// figure that other processes on a shared machine do not distort.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRecord is a record shaped like a fill of a worker with two
// filterable arguments.
func benchRecord(i int) Record {
	a, n := strconv.Itoa(i%100), strconv.Itoa(i)
	return Record{
		Label:        "foos",
		Key:          "foos@a=" + a + "&n=" + n,
		Args:         map[string]any{"a": i % 100, "n": i, "kind": "x"},
		Match:        map[string][]string{"a": {a}, "n": {n}},
		Owner:        "n1",
		CreatedAt:    t0,
		RelevanceTo:  t0.Add(time.Minute),
		AvailableTo:  t0.Add(time.Hour),
		FillDuration: time.Millisecond,
		Size:         512,
	}
}

func benchStore(b *testing.B, disk bool, cfg Config) *Store {
	if disk {
		cfg.Dir = b.TempDir()
	}
	return openMem(b, cfg)
}

// BenchmarkAsyncThroughput measures records per second through the batched
// writer: one producer calls PutAsync as fast as it can (sleeping 50µs when
// the queue is full, so nothing is dropped and no CPU is burnt spinning),
// and the clock stops when Flush returns, that is when every record is
// committed and synced.
func BenchmarkAsyncThroughput(b *testing.B) {
	for _, disk := range []bool{true, false} {
		b.Run(map[bool]string{true: "disk", false: "mem"}[disk], func(b *testing.B) {
			s := benchStore(b, disk, Config{})
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := range b.N {
				r := benchRecord(i)
				for {
					err := s.PutAsync(r)
					if !errors.Is(err, ErrQueueFull) {
						if err != nil {
							b.Fatal(err)
						}
						break
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			if err := s.Flush(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/record")
			b.ReportMetric(float64(st.WrittenAsync)/float64(max(st.Batches, 1)), "records/batch")
		})
	}
}

// BenchmarkPutAsyncCost measures what a fill pays with delay_logging on:
// one PutAsync call, while the writer drains the queue on the other core.
// The queue is flushed, off the clock, every 32768 calls, so that it never
// fills: a full queue would make calls cheaper (they drop).
func BenchmarkPutAsyncCost(b *testing.B) {
	const round = 32768
	recs := make([]Record, round)
	for i := range recs {
		recs[i] = benchRecord(i)
	}
	for _, disk := range []bool{true, false} {
		b.Run(map[bool]string{true: "disk", false: "mem"}[disk], func(b *testing.B) {
			s := benchStore(b, disk, Config{})
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%round == 0 && i > 0 {
					b.StopTimer()
					if err := s.Flush(); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				if err := s.PutAsync(recs[i%round]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if d := s.Stats().Dropped; d > 0 {
				b.Fatalf("%d writes dropped", d)
			}
		})
	}
}

// BenchmarkPut measures synchronous writes on disk: one writer (each Put
// pays a WAL fsync) and parallel writers (group commit shares it).
func BenchmarkPut(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		s := benchStore(b, true, Config{})
		b.ResetTimer()
		for i := range b.N {
			if err := s.Put(benchRecord(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel-64", func(b *testing.B) {
		s := benchStore(b, true, Config{})
		var n atomic.Int64
		b.SetParallelism(32) // 64 goroutines on 2 cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Put(benchRecord(int(n.Add(1)))); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		st := s.Stats()
		b.ReportMetric(float64(st.WrittenSync)/float64(max(st.Batches, 1)), "records/batch")
	})
}

// BenchmarkMatch measures an invalidation lookup in a label of 20000
// records: an event on one attribute that 1 in 100 records constrains to
// the event's value.
func BenchmarkMatch(b *testing.B) {
	s := benchStore(b, false, Config{})
	for i := range 20000 {
		if err := s.PutAsync(benchRecord(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	attrs := map[string][]string{"a": {"42"}}
	b.ResetTimer()
	for range b.N {
		recs, err := s.Match("foos", attrs)
		if err != nil || len(recs) != 200 {
			b.Fatalf("Match = %d records, %v", len(recs), err)
		}
	}
}
