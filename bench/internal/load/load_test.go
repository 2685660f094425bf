package load

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

func TestRunCountsOpsErrorsAndLatency(t *testing.T) {
	r := Run(context.Background(), Config{Callers: 3, Duration: 200 * time.Millisecond}, func(ctx context.Context, c, i int) error {
		time.Sleep(time.Millisecond)
		if i%10 == 9 {
			return errors.New("boom")
		}
		return nil
	})
	if r.Ops == 0 || r.Errors == 0 {
		t.Fatalf("ops %d, errors %d: want both counted", r.Ops, r.Errors)
	}
	if got := r.Hist.TotalCount(); got != r.Ops {
		t.Fatalf("histogram holds %d latencies, want one per successful op (%d)", got, r.Ops)
	}
	if r.Latency.P50 < 1000 || r.Latency.P50 > r.Latency.P99 || r.Latency.P99 > r.Latency.Max {
		t.Fatalf("percentiles out of order or below the 1 ms sleep: %+v", r.Latency)
	}
	if math.Abs(r.OpsPerSec-float64(r.Ops)/r.Seconds) > 1e-6 {
		t.Fatalf("ops/s %v, want ops/seconds", r.OpsPerSec)
	}
}

func TestRunMaxOps(t *testing.T) {
	r := Run(context.Background(), Config{Callers: 4, MaxOps: 100}, func(context.Context, int, int) error { return nil })
	if r.Ops != 100 {
		t.Fatalf("ops %d, want 100", r.Ops)
	}
}

func TestMergeAddsRuns(t *testing.T) {
	a := NewRecorder()
	a.Record(time.Millisecond)
	b := NewRecorder()
	b.Record(3 * time.Millisecond)
	b.Record(3 * time.Millisecond)
	ra := NewResult(a.Histogram(), 1, time.Second)
	rb := NewResult(b.Histogram(), 2, time.Second)
	ra.Fills, rb.Fills = 1, 2
	m := Merge(ra, rb)
	if m.Ops != 3 || m.Fills != 3 || m.Seconds != 2 || m.OpsPerSec != 1.5 {
		t.Fatalf("merged %+v", m)
	}
	if m.Hist.TotalCount() != 3 || m.Latency.Max < 2999 {
		t.Fatalf("merged histogram: %d values, max %v µs", m.Hist.TotalCount(), m.Latency.Max)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		us   float64
		want string
	}{{0.25, "250 ns"}, {12.34, "12.3 µs"}, {512, "512 µs"}, {1500, "1.50 ms"}, {250e3, "250 ms"}, {1.5e6, "1.50 s"}} {
		if got := FormatMicros(c.us); got != c.want {
			t.Errorf("FormatMicros(%v) = %q, want %q", c.us, got, c.want)
		}
	}
	if got := FormatRate(33712); got != "33.7k" {
		t.Errorf("FormatRate = %q", got)
	}
}
