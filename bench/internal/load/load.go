// Package load drives a closed loop of concurrent callers against one
// operation and reports throughput and HDR latency percentiles.
//
// Each caller goroutine records into its own histogram (an HDR histogram is
// not safe for concurrent use), and the histograms are merged when the run
// ends, so recording costs no lock and no shared cache line.
package load

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds, from 1 ns to 2 minutes, with three
// significant digits (0.1% resolution at every magnitude).
const (
	lowestNS  = 1
	highestNS = int64(2 * time.Minute)
	sigFigs   = 3
)

// NewHistogram returns an empty latency histogram in nanoseconds.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(lowestNS, highestNS, sigFigs)
}

// record adds d to h, clamped to the histogram's range.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d)
	if v < lowestNS {
		v = lowestNS
	} else if v > highestNS {
		v = highestNS
	}
	_ = h.RecordValue(v) // in range: cannot fail
}

// Op is one operation of a caller: caller is the caller's index in
// [0, Config.Callers), i counts that caller's operations from 0. A non-nil
// error is counted and its latency is not recorded.
type Op func(ctx context.Context, caller, i int) error

// Config describes a closed-loop run.
type Config struct {
	// Name labels the progress line.
	Name string
	// Callers is the number of concurrent callers. Default 1.
	Callers int
	// Duration is how long the measured part lasts. Required unless MaxOps
	// is set.
	Duration time.Duration
	// Warmup runs the operation for this long before measuring; its
	// operations are not counted. Default 0.
	Warmup time.Duration
	// MaxOps stops the run after this many measured operations over all
	// callers. Default 0: no limit.
	MaxOps int64
	// Progress receives a progress line every second. Default nil: silent.
	Progress io.Writer
}

// Run runs op with cfg.Callers concurrent callers and returns what it
// measured. It returns early when ctx ends.
func Run(ctx context.Context, cfg Config, op Op) *Result {
	if cfg.Callers <= 0 {
		cfg.Callers = 1
	}
	if cfg.Warmup > 0 {
		wctx, cancel := context.WithTimeout(ctx, cfg.Warmup)
		loop(wctx, cfg.Callers, 0, op, nil, nil, nil)
		cancel()
	}
	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
	}
	defer cancel()
	var ops, errs atomic.Int64
	hists := make([]*hdrhistogram.Histogram, cfg.Callers)
	for i := range hists {
		hists[i] = NewHistogram()
	}
	stop := progress(cfg.Progress, cfg.Name, cfg.Duration, &ops, &errs)
	start := time.Now()
	loop(runCtx, cfg.Callers, cfg.MaxOps, op, hists, &ops, &errs)
	elapsed := time.Since(start)
	stop()
	h := NewHistogram()
	for _, c := range hists {
		h.Merge(c)
	}
	r := &Result{Callers: cfg.Callers, Errors: errs.Load(), Hist: h}
	r.setOps(h.TotalCount(), elapsed)
	return r
}

// loop runs the callers until ctx ends or maxOps operations were done.
// With hists nil nothing is recorded (warm-up).
func loop(ctx context.Context, callers int, maxOps int64, op Op, hists []*hdrhistogram.Histogram, ops, errs *atomic.Int64) {
	var wg sync.WaitGroup
	var issued atomic.Int64
	for c := range callers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if maxOps > 0 && issued.Add(1) > maxOps {
					return
				}
				t0 := time.Now()
				err := op(ctx, c, i)
				d := time.Since(t0)
				if hists == nil {
					continue
				}
				if err != nil {
					// An operation cut short by the end of the run is not an
					// error of the system under test.
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				record(hists[c], d)
				ops.Add(1)
			}
		})
	}
	wg.Wait()
}

// progress prints a line per second to w until the returned stop is
// called. On a terminal the line is rewritten in place.
func progress(w io.Writer, name string, total time.Duration, ops, errs *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	tty := isTerminal(w)
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
				n := ops.Load()
				line := fmt.Sprintf("%-28s %5.1fs/%.1fs %10d ops %9.0f ops/s %6d errors",
					name, time.Since(start).Seconds(), total.Seconds(), n, float64(n-last), errs.Load())
				last = n
				if tty {
					fmt.Fprint(w, "\r\033[K"+line)
				} else {
					fmt.Fprintln(w, line)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Recorder is a latency histogram that is safe for concurrent use, for
// scenarios made of rounds rather than a closed loop.
type Recorder struct {
	mu   sync.Mutex
	hist *hdrhistogram.Histogram // guarded by mu
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{hist: NewHistogram()} }

// Record adds one latency.
func (r *Recorder) Record(d time.Duration) {
	r.mu.Lock()
	record(r.hist, d)
	r.mu.Unlock()
}

// Histogram returns a copy of what was recorded.
func (r *Recorder) Histogram() *hdrhistogram.Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	return hdrhistogram.Import(r.hist.Export())
}
