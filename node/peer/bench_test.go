package peer

import (
	"context"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// benchCallers is the number of concurrent callers of the parallel
// benchmarks: the node's remote-hit goal is stated for 50.
const benchCallers = 50

func benchSetup(b testing.TB) (*Client, string) {
	b.Helper()
	ts := startServer(b, ServerConfig{}, echo)
	c := newClient(b, ClientConfig{})
	// Dial the whole pool before the clock starts.
	ctx := context.Background()
	for range 4 * DefaultConnsPerAddr {
		if _, err := c.Call(ctx, ts.addr, 1, nil); err != nil {
			b.Fatal(err)
		}
	}
	return c, ts.addr
}

// cpuClock is the CPU time (user and system) used so far by this process,
// client and server together: unlike ops/s, CPU per call barely depends on
// what else the machine runs.
func cpuClock() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPU resets the timer and returns a function that reports ops/s and
// CPU µs per call.
func startCPU(b *testing.B) func() {
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuClock()
	return func() {
		cpu := cpuClock() - start
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	}
}

// BenchmarkCall is one caller's round trip with a 100-byte payload.
func BenchmarkCall(b *testing.B) {
	c, addr := benchSetup(b)
	payload := make([]byte, 100)
	ctx := context.Background()
	report := startCPU(b)
	for range b.N {
		if _, err := c.Call(ctx, addr, 1, payload); err != nil {
			b.Fatal(err)
		}
	}
	report()
}

// BenchmarkCallParallel is 50 concurrent callers sharing one client, each
// call with a 100-byte payload. Each caller's context has a deadline (so
// the budget travels and the server arms it) but is made once, to measure
// the transport rather than context.WithTimeout; BenchmarkCallLatency makes
// one per call, as a program would.
func BenchmarkCallParallel(b *testing.B) {
	c, addr := benchSetup(b)
	b.SetParallelism((benchCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	report := startCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		payload := make([]byte, 100)
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		for pb.Next() {
			_, err := c.Call(ctx, addr, 1, payload)
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	report()
}

// BenchmarkCallLatency runs 50 callers in a closed loop (each sends its
// next call when the previous one returns) and reports the median and 99th
// percentile of the call latency. Run it with -benchtime 3s for a 3-second
// window.
func BenchmarkCallLatency(b *testing.B) {
	c, addr := benchSetup(b)
	var next atomic.Int64
	lat := make([][]time.Duration, benchCallers)
	var wg sync.WaitGroup
	report := startCPU(b)
	for g := range benchCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 100)
			mine := make([]time.Duration, 0, b.N/benchCallers+1)
			for next.Add(1) <= int64(b.N) {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := c.Call(ctx, addr, 1, payload)
				cancel()
				if err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			lat[g] = mine
		}()
	}
	wg.Wait()
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(pct(0.999), "p99.9-µs")
	report()
}

// BenchmarkRawTCPRoundTrip is the floor under BenchmarkCall: one goroutine
// writing 100 bytes on a loopback TCP connection and reading them back from
// an echoing goroutine, with no framing, multiplexing or handler.
func BenchmarkRawTCPRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		buf := make([]byte, 100)
		for {
			if _, err := io.ReadFull(nc, buf); err != nil {
				return
			}
			if _, err := nc.Write(buf); err != nil {
				return
			}
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 100)
	report := startCPU(b)
	for range b.N {
		if _, err := nc.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(nc, buf); err != nil {
			b.Fatal(err)
		}
	}
	report()
	_ = nc.Close()
	<-done
}
