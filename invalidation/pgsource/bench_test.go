package pgsource_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cachenode/cachenode/invalidation/pgsource/pgtest"
)

// BenchmarkCommitToVisible measures, on 3 in-process nodes, the time from
// a COMMIT returning to its new value being served by every node: one
// single-row UPDATE per iteration, each node polled until it serves the
// database's value. Reports p50 and p99 in milliseconds.
//
//	go test -run '^$' -bench CommitToVisible -benchtime 300x ./invalidation/pgsource/
func BenchmarkCommitToVisible(b *testing.B) {
	pg := pgtest.Start(b)
	pg.Exec(schema)
	c := newCluster(b, pg, 3)
	waitFor(b, 30*time.Second, "a consumer streaming", func() bool { return c.consumer() != nil })
	c.warm()
	conn := pg.Conn()
	ctx := context.Background()
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		attr := 1 + i%3
		if _, err := conn.Exec(ctx, "UPDATE foo SET val = val + 1 WHERE id = $1", attr); err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		v := fmt.Sprintf("foos/%d", attr)
		want := c.truth(v)
		for _, n := range c.nodes {
			for read(b, n, v) != want {
				time.Sleep(200 * time.Microsecond)
			}
		}
		lat = append(lat, time.Since(committed))
	}
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	}
}

// BenchmarkSustained measures the changes per second the source carries
// through a 3-node cluster: b.N row changes committed as fast as one
// connection can, in transactions of `rows` rows, and the time until the
// source applied them all.
//
//	go test -run '^$' -bench Sustained -benchtime 20000x ./invalidation/pgsource/
func BenchmarkSustained(b *testing.B) {
	for _, rows := range []int{1, 100} {
		b.Run(fmt.Sprintf("rows-per-tx=%d", rows), func(b *testing.B) {
			pg := pgtest.Start(b)
			pg.Exec(schema)
			c := newCluster(b, pg, 3)
			waitFor(b, 30*time.Second, "a consumer streaming", func() bool { return c.consumer() != nil })
			c.warm()
			conn := pg.Conn()
			ctx := context.Background()
			changes := func() uint64 {
				var n uint64
				for _, s := range c.sources {
					n += s.Status().Changes
				}
				return n
			}
			start0 := changes()
			b.ResetTimer()
			start := time.Now()
			for done := 0; done < b.N; done += rows {
				k := min(rows, b.N-done)
				if _, err := conn.Exec(ctx, "INSERT INTO foo (attr1, val) SELECT 1 + g % 3, g FROM generate_series(1, $1::int) g", k); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, 10*time.Minute, "every change applied", func() bool { return changes()-start0 >= uint64(b.N) })
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "changes/s")
			b.ReportMetric(float64((b.N+rows-1)/rows)/el.Seconds(), "tx/s")
		})
	}
}
