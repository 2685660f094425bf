package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// gate is a getter whose runs block until released, one release per run.
type gate struct {
	calls   atomic.Int64
	release chan string // each receive ends one run with that value
}

func newGate() *gate { return &gate{release: make(chan string)} }

func (g *gate) Get(ctx context.Context, args Args) (Value, error) {
	g.calls.Add(1)
	select {
	case v := <-g.release:
		if v == "!error" {
			return Value{}, errors.New("boom")
		}
		if v == "!panic" {
			panic("kaboom")
		}
		return Value{Data: []byte(v)}, nil
	case <-ctx.Done():
		return Value{}, ctx.Err()
	}
}

func register(t testing.TB, c *Cache, cfg Config) *Worker {
	t.Helper()
	w, err := c.Register(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestThousandCallersOneFill(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "cold", Getter: g})
	const n = 1000
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, _, err := w.Get(context.Background(), Args{"id": 7}, Settings{})
			errs[i] = err
			if err == nil {
				results[i] = string(e.Value)
			}
		}()
	}
	// Every caller but the one that started the fill is waiting on it; the
	// manual clock never lets their budget run out.
	waitFor(t, "999 waiters", func() bool { return w.Stats().Waits == n-1 })
	g.release <- "v1"
	wg.Wait()
	if got := g.calls.Load(); got != 1 {
		t.Fatalf("getter ran %d times, want 1", got)
	}
	for i := range n {
		if errs[i] != nil || results[i] != "v1" {
			t.Fatalf("caller %d: %q, %v", i, results[i], errs[i])
		}
	}
	if s := w.Stats(); s.Fills != 1 || s.Misses != n {
		t.Fatalf("stats %+v", s)
	}
}

func TestWaitersComputeAfterExactlyTheBudget(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "slow", Getter: g, Settings: Settings{Tick: 100 * time.Millisecond, TickAmount: Int(10)}})
	budget := w.Policy().Budget()
	if budget != time.Second {
		t.Fatalf("budget %v", budget)
	}
	ctx := context.Background()
	leader := make(chan error, 1)
	go func() { _, _, err := w.Get(ctx, Args{}, Settings{}); leader <- err }()
	waitFor(t, "leader fill", func() bool { return g.calls.Load() == 1 })
	const waiters = 10
	var wg sync.WaitGroup
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := w.Get(ctx, Args{}, Settings{}); err != nil {
				t.Error(err)
			}
		}()
	}
	blockUntil(t, clock, waiters)
	clock.Advance(budget - time.Nanosecond)
	// A waiter whose timer fired early has left the clock: fewer than
	// waiters remain, and this wait runs out.
	blockUntil(t, clock, waiters)
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("getter ran %d times before the budget ran out", n)
	}
	clock.Advance(time.Nanosecond)
	waitFor(t, "waiters computing themselves", func() bool { return g.calls.Load() == 1+waiters })
	for range waiters + 1 {
		g.release <- "v"
	}
	wg.Wait()
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.WaitTimeouts != waiters {
		t.Fatalf("wait timeouts %d, want %d", s.WaitTimeouts, waiters)
	}
}

func TestNotConcurrentSkipsWaiting(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "nc", Getter: g, Settings: Settings{IsConcurrent: Bool(false)}})
	done := make(chan struct{}, 2)
	for range 2 {
		go func() { w.Get(context.Background(), Args{}, Settings{}); done <- struct{}{} }()
	}
	waitFor(t, "two getter runs", func() bool { return g.calls.Load() == 2 })
	if w.Stats().Waits != 0 {
		t.Fatal("a caller waited although is_concurrent is off")
	}
	g.release <- "a"
	g.release <- "b"
	<-done
	<-done
}

func TestStaleWhileRevalidateRebuildsOnce(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "swr", Getter: g, Settings: Settings{
		RelevanceInvalidation: Bool(true), RelevanceExpires: time.Minute, DelayInvalidation: Bool(true), Expires: time.Hour,
	}})
	ctx := context.Background()
	go func() { g.release <- "v1" }()
	if e, st, err := w.Get(ctx, Args{"k": 1}, Settings{}); err != nil || string(e.Value) != "v1" || st != Miss {
		t.Fatalf("first get: %v %v %v", e, st, err)
	}
	clock.Advance(time.Minute)
	const readers = 200
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, st, err := w.Get(ctx, Args{"k": 1}, Settings{})
			if err != nil || string(e.Value) != "v1" || st != Stale {
				t.Errorf("stale read: %v %v %v", e, st, err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "one rebuild", func() bool { return g.calls.Load() == 2 })
	g.release <- "v2"
	waitFor(t, "rebuilt value", func() bool {
		e, ok := c.Lookup(mustKey(t, w, Args{"k": 1}))
		return ok && string(e.Value) == "v2"
	})
	if n := g.calls.Load(); n != 2 {
		t.Fatalf("getter ran %d times, want 2 (one fill, one rebuild)", n)
	}
	e, st, err := w.Get(ctx, Args{"k": 1}, Settings{})
	if err != nil || st != Hit || string(e.Value) != "v2" {
		t.Fatalf("after rebuild: %v %v %v", e, st, err)
	}
	if s := w.Stats(); s.StaleHits != readers {
		t.Fatalf("stale hits %d", s.StaleHits)
	}
}

func TestStaleInlineWaitsForRebuild(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	var n atomic.Int64
	w := register(t, c, Config{Label: "inline", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		return Value{Data: fmt.Appendf(nil, "v%d", n.Add(1))}, nil
	}), Settings: Settings{RelevanceInvalidation: Bool(true), RelevanceExpires: time.Second}})
	ctx := context.Background()
	w.Get(ctx, Args{}, Settings{})
	clock.Advance(time.Second)
	e, st, err := w.Get(ctx, Args{}, Settings{})
	if err != nil || string(e.Value) != "v2" || st != Miss {
		t.Fatalf("inline rebuild: %v %v %v", e, st, err)
	}
}

func TestInvalidationDuringFillKeepsNoStaleValue(t *testing.T) {
	for _, action := range []Action{Refresh, Drop} {
		t.Run(action.String(), func(t *testing.T) {
			c, _ := newTestCache(t, CacheConfig{})
			g := newGate()
			w := register(t, c, Config{Label: "race", Getter: g, Action: action})
			ctx := context.Background()
			key := mustKey(t, w, Args{"id": 1})
			first := make(chan *Entry, 1)
			go func() {
				e, _, err := w.Get(ctx, Args{"id": 1}, Settings{})
				if err != nil {
					t.Error(err)
				}
				first <- e
			}()
			waitFor(t, "fill started", func() bool { return g.calls.Load() == 1 })
			// The data changes while the fill that read the old data runs.
			invalidated := make(chan error, 1)
			go func() { invalidated <- w.Invalidate(ctx, key) }()
			if action == Refresh {
				waitFor(t, "rebuild started", func() bool { return g.calls.Load() == 2 })
			} else if err := <-invalidated; err != nil {
				t.Fatal(err)
			}
			g.release <- "old" // the fill that started before the change ends
			if e := <-first; string(e.Value) != "old" {
				t.Fatalf("the caller that asked before the change got %q", e.Value)
			}
			if e, ok := c.Lookup(key); ok {
				t.Fatalf("a fill that started before the invalidation was cached: %q", e.Value)
			}
			if action == Refresh {
				g.release <- "new"
				if err := <-invalidated; err != nil {
					t.Fatal(err)
				}
				e, ok := c.Lookup(key)
				if !ok || string(e.Value) != "new" {
					t.Fatalf("after refresh: %v %v", e, ok)
				}
			}
			if s := w.Stats(); s.Discarded != 1 {
				t.Fatalf("discarded %d, want 1", s.Discarded)
			}
		})
	}
}

func TestRefreshServesOldValueUntilNewIsIn(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "refresh", Getter: g})
	ctx := context.Background()
	go func() { g.release <- "old" }()
	e, _, err := w.Get(ctx, Args{"a": "x"}, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Invalidate(ctx, e.Key) }()
	waitFor(t, "rebuild running", func() bool { return g.calls.Load() == 2 })
	for range 50 {
		r, st, err := w.Get(ctx, Args{"a": "x"}, Settings{})
		if err != nil || st != Hit || string(r.Value) != "old" {
			t.Fatalf("during refresh: %v %v %v", r, st, err)
		}
	}
	g.release <- "new"
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r, st, _ := w.Get(ctx, Args{"a": "x"}, Settings{})
	if st != Hit || string(r.Value) != "new" {
		t.Fatalf("after refresh: %q %v", r.Value, st)
	}
	if g.calls.Load() != 2 {
		t.Fatalf("getter ran %d times", g.calls.Load())
	}
}

func TestFailedRefreshRemovesOldValue(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "failing", Getter: g})
	ctx := context.Background()
	go func() { g.release <- "old" }()
	e, _, _ := w.Get(ctx, Args{}, Settings{})
	go func() { g.release <- "!error" }()
	if err := w.Invalidate(ctx, e.Key); !errors.Is(err, ErrFill) {
		t.Fatalf("invalidate: %v", err)
	}
	if _, ok := c.Lookup(e.Key); ok {
		t.Fatal("the invalidated value is still served after its rebuild failed")
	}
}

func TestGetterErrorAndPanicReachEveryWaiter(t *testing.T) {
	for _, outcome := range []string{"!error", "!panic"} {
		t.Run(outcome, func(t *testing.T) {
			c, _ := newTestCache(t, CacheConfig{})
			g := newGate()
			w := register(t, c, Config{Label: "err", Getter: g})
			const n = 20
			errs := make(chan error, n)
			for range n {
				go func() { _, _, err := w.Get(context.Background(), Args{}, Settings{}); errs <- err }()
			}
			waitFor(t, "waiters", func() bool { return w.Stats().Waits == n-1 })
			g.release <- outcome
			for range n {
				if err := <-errs; !errors.Is(err, ErrFill) {
					t.Fatalf("got %v, want ErrFill", err)
				}
			}
			if c.Len() != 0 {
				t.Fatal("an error was cached")
			}
			go func() { g.release <- "ok" }()
			if e, _, err := w.Get(context.Background(), Args{}, Settings{}); err != nil || string(e.Value) != "ok" {
				t.Fatalf("after the error: %v %v", e, err)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	var n atomic.Int64
	w := register(t, c, Config{Label: "ttl", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		n.Add(1)
		return Value{Data: []byte("v")}, nil
	}), Settings: Settings{Expires: time.Minute}})
	ctx := context.Background()
	w.Get(ctx, Args{}, Settings{})
	clock.Advance(time.Minute - time.Nanosecond)
	if _, st, _ := w.Get(ctx, Args{}, Settings{}); st != Hit {
		t.Fatalf("before expiry: %v", st)
	}
	clock.Advance(time.Nanosecond)
	if _, st, _ := w.Get(ctx, Args{}, Settings{}); st != Miss {
		t.Fatalf("at expiry: %v", st)
	}
	if n.Load() != 2 {
		t.Fatalf("fills %d", n.Load())
	}
}

func TestOverridePrecedence(t *testing.T) {
	defaults := DefaultPolicy()
	defaults.Expires = 10 * time.Second
	defaults.TickAmount = 3
	c, _ := newTestCache(t, CacheConfig{Defaults: defaults})
	get := GetterFunc(func(ctx context.Context, a Args) (Value, error) { return Value{Data: []byte("v")}, nil })
	plain := register(t, c, Config{Label: "plain", Getter: get})
	own := register(t, c, Config{Label: "own", Getter: get, Settings: Settings{Expires: 20 * time.Second, TickAmount: Int(0)}})
	ctx := context.Background()
	cases := []struct {
		w       *Worker
		ov      Settings
		expires time.Duration
		ticks   int
	}{
		{plain, Settings{}, 10 * time.Second, 3},                        // default
		{own, Settings{}, 20 * time.Second, 0},                          // worker over default, even a zero
		{own, Settings{Expires: 30 * time.Second}, 30 * time.Second, 0}, // call over worker
		{plain, Settings{TickAmount: Int(7)}, 10 * time.Second, 7},
	}
	for i, tc := range cases {
		pol, err := tc.w.PolicyFor(tc.ov)
		if err != nil {
			t.Fatal(err)
		}
		if pol.Expires != tc.expires || pol.TickAmount != tc.ticks {
			t.Errorf("case %d: policy %+v", i, pol)
		}
		e, _, err := tc.w.Get(ctx, Args{"case": i}, tc.ov)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AvailableTo.Sub(e.CreatedAt); got != tc.expires {
			t.Errorf("case %d: entry lives %v, want %v", i, got, tc.expires)
		}
	}
	if _, _, err := plain.Get(ctx, Args{}, Settings{DelayLogging: Bool(true)}); !errors.Is(err, ErrConfig) {
		t.Errorf("delay_logging per call: %v", err)
	}
	if _, _, err := plain.Get(ctx, Args{}, Settings{Tick: -time.Second}); err == nil || !strings.Contains(err.Error(), "tick") {
		t.Errorf("negative tick per call: %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	get := GetterFunc(func(ctx context.Context, a Args) (Value, error) { return Value{}, nil })
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Getter: get}, "label"},
		{Config{Label: "a b", Getter: get}, "label"},
		{Config{Label: "x@y", Getter: get}, "label"},
		{Config{Label: "nog"}, "getter"},
		{Config{Label: "e", Getter: get, Settings: Settings{Expires: -1}}, "expires"},
		{Config{Label: "t", Getter: get, Settings: Settings{Tick: -1}}, "tick"},
		{Config{Label: "ta", Getter: get, Settings: Settings{TickAmount: Int(-1)}}, "tick_amount"},
		{Config{Label: "r", Getter: get, Settings: Settings{RelevanceExpires: -1}}, "relevance_expires"},
		{Config{Label: "d", Getter: get, Settings: Settings{DelayCountdown: Duration(-1)}}, "delay_countdown"},
		{Config{Label: "x", Getter: get, EarlyRefresh: -1}, "early_refresh"},
	}
	for _, tc := range cases {
		_, err := c.Register(tc.cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v does not name %s", tc.cfg.Label, err, tc.want)
		}
	}
	register(t, c, Config{Label: "dup", Getter: get})
	if _, err := c.Register(Config{Label: "dup", Getter: get}); !errors.Is(err, ErrDuplicateLabel) {
		t.Errorf("duplicate: %v", err)
	}
	bad := DefaultPolicy()
	bad.Expires = 0
	if _, err := NewCache(CacheConfig{Defaults: bad}); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "expires") {
		t.Errorf("bad defaults: %v", err)
	}
}

func TestSweepRebuildsUnreadStaleEntries(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	var n atomic.Int64
	w := register(t, c, Config{Label: "sweep", Sweep: true, SweepInterval: time.Second,
		Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
			return Value{Data: fmt.Appendf(nil, "v%d", n.Add(1))}, nil
		}),
		Settings: Settings{RelevanceInvalidation: Bool(true), RelevanceExpires: 5 * time.Second}})
	ctx := context.Background()
	for i := range 3 {
		w.Get(ctx, Args{"i": i}, Settings{})
	}
	blockUntil(t, clock, 1) // the sweep loop's ticker
	clock.Advance(5 * time.Second)
	waitFor(t, "three rebuilds", func() bool { return n.Load() == 6 })
	waitFor(t, "fresh entries", func() bool {
		for e := range c.Entries() {
			if !clock.Now().Before(e.RelevanceTo) {
				return false
			}
		}
		return true
	})
}

func TestEarlyRefresh(t *testing.T) {
	draw := 1.0
	var mu sync.Mutex
	c, clock := newTestCache(t, CacheConfig{Rand: func() float64 { mu.Lock(); defer mu.Unlock(); return draw }})
	var n atomic.Int64
	w := register(t, c, Config{Label: "xfetch", EarlyRefresh: 1, Settings: Settings{Expires: time.Minute},
		Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
			clock.Advance(time.Second) // the fill takes a second of clock time
			n.Add(1)
			return Value{Data: []byte("v")}, nil
		})})
	ctx := context.Background()
	w.Get(ctx, Args{}, Settings{})
	clock.Advance(50 * time.Second)
	w.Get(ctx, Args{}, Settings{}) // ln(1) = 0: never early
	if n.Load() != 1 {
		t.Fatal("refreshed early with a zero gap")
	}
	mu.Lock()
	draw = 1e-9 // -ln(1e-9) ≈ 20.7 fill durations ≥ the 10 s left
	mu.Unlock()
	if _, st, _ := w.Get(ctx, Args{}, Settings{}); st != Hit {
		t.Fatalf("early refresh must not make the caller wait: %v", st)
	}
	waitFor(t, "early rebuild", func() bool { return n.Load() == 2 })
}

func TestStoreBoundedByBytes(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{MaxBytes: 64 << 10, Clock: SystemClock()})
	w := register(t, c, Config{Label: "big", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		return Value{Data: make([]byte, 1000)}, nil
	})})
	for i := range 1000 {
		if _, _, err := w.Get(context.Background(), Args{"i": i}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	// Each entry weighs over 1 KiB: at most 64 fit.
	waitFor(t, "eviction", func() bool { return c.Bytes() <= 64<<10 && c.Len() <= 64 })
	if c.Len() == 0 {
		t.Fatalf("%d entries in a 64 KiB store of 1 KiB values", c.Len())
	}
}

func TestCloseIsIdempotentAndStopsFills(t *testing.T) {
	c, err := NewCache(CacheConfig{Clock: clockwork.NewFakeClockAt(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	g := newGate()
	w := register(t, c, Config{Label: "closing", Getter: g})
	errc := make(chan error, 1)
	go func() { _, _, err := w.Get(context.Background(), Args{}, Settings{}); errc <- err }()
	waitFor(t, "fill", func() bool { return g.calls.Load() == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("fill after close: %v", err)
	}
	if _, _, err := w.Get(context.Background(), Args{"x": 1}, Settings{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

func mustKey(t testing.TB, w *Worker, a Args) string {
	t.Helper()
	k, err := w.Key(a)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestNoSecondFillAfterFlightEnds is the regression test of a race found by
// the cluster tests: a caller that missed the store just before a flight
// stored its value and left must find the value, not start a second fill.
func TestNoSecondFillAfterFlightEnds(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	var fills atomic.Int64
	w := register(t, c, Config{Label: "again", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		fills.Add(1)
		return Value{Data: []byte("v")}, nil
	})})
	const keys, callers = 2000, 4
	var wg sync.WaitGroup
	for k := range keys {
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := w.Get(context.Background(), Args{"k": k}, Settings{}); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if n := fills.Load(); n != keys {
		t.Fatalf("%d fills for %d keys", n, keys)
	}
}
