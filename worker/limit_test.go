package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingOrigin is a getter that records how many of its runs overlap at
// most, in which order the keys came, and answers "<version>:<id>".
type countingOrigin struct {
	delay   time.Duration
	hold    chan struct{} // when not nil, every run waits for it to close
	version atomic.Value  // string
	fail    func(n int) error

	mu       sync.Mutex
	inFlight int
	peak     int
	calls    int
	order    []string
}

func newCountingOrigin(delay time.Duration) *countingOrigin {
	o := &countingOrigin{delay: delay}
	o.version.Store("v1")
	return o
}

func (o *countingOrigin) Get(ctx context.Context, a Args) (Value, error) {
	o.mu.Lock()
	o.inFlight++
	o.calls++
	n := o.calls
	o.peak = max(o.peak, o.inFlight)
	o.order = append(o.order, fmt.Sprint(a["id"]))
	hold := o.hold
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.inFlight--
		o.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return Value{}, ctx.Err()
		}
	}
	if o.delay > 0 {
		time.Sleep(o.delay)
	}
	if o.fail != nil {
		if err := o.fail(n); err != nil {
			return Value{}, err
		}
	}
	return Value{Data: fmt.Appendf(nil, "%s:%v", o.version.Load(), a["id"])}, nil
}

func (o *countingOrigin) stats() (peak, calls int, order []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.peak, o.calls, append([]string(nil), o.order...)
}

// newLimitedOne returns a worker on the system clock whose origin takes
// one request at a time, with the keys of ids filled (and read).
func newLimitedOne(t *testing.T, ids ...string) (*Cache, *Worker, *countingOrigin) {
	t.Helper()
	c, err := NewCache(CacheConfig{Clock: SystemClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	o := newCountingOrigin(0)
	w := register(t, c, Config{Label: "p", Getter: o, MaxConcurrentFills: 1})
	for _, id := range ids {
		if _, _, err := w.Get(context.Background(), Args{"id": id}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	return c, w, o
}

// occupy makes the origin hold its runs and takes the slot of w's limit of
// one with a read of "busy"; release lets the origin answer again and
// waits for that read.
func occupy(t *testing.T, w *Worker, o *countingOrigin) (release func()) {
	t.Helper()
	o.mu.Lock()
	o.hold = make(chan struct{})
	o.mu.Unlock()
	blocker := make(chan error, 1)
	go func() { _, _, err := w.Get(context.Background(), Args{"id": "busy"}, Settings{}); blocker <- err }()
	waitFor(t, "the slot taken", func() bool { return o.running() == 1 })
	return func() {
		o.mu.Lock()
		close(o.hold)
		o.hold = nil
		o.mu.Unlock()
		if err := <-blocker; err != nil {
			t.Error(err)
		}
	}
}

func (o *countingOrigin) running() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.inFlight
}

// TestDistinctMissesStayWithinTheLimit: 3,000 concurrent reads of distinct
// cold keys reach the origin at most max_concurrent_fills at a time; the
// callers whose wait budget ends in the queue get ErrOriginBusy, and their
// fills never run afterwards (the origin sees exactly the fills that were
// answered).
func TestDistinctMissesStayWithinTheLimit(t *testing.T) {
	c, err := NewCache(CacheConfig{Clock: SystemClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := newCountingOrigin(20 * time.Millisecond)
	const limit = 16
	w := register(t, c, Config{Label: "cold", Getter: o, MaxConcurrentFills: limit,
		Settings: Settings{Tick: 10 * time.Millisecond, TickAmount: Int(10)}})
	const n = 3000
	var wg sync.WaitGroup
	var ok, busy atomic.Int64
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := w.Get(context.Background(), Args{"id": i}, Settings{})
			var be *OriginBusyError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &be) && errors.Is(err, ErrOriginBusy) && be.RetryAfter >= time.Second:
				busy.Add(1)
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a read failed otherwise than origin busy: %v", err)
	}
	waitFor(t, "the origin to go idle", func() bool { return o.running() == 0 })
	peak, calls, _ := o.stats()
	t.Logf("%d answered, %d origin busy, origin peak %d, %d origin calls", ok.Load(), busy.Load(), peak, calls)
	if peak > limit {
		t.Errorf("origin peak concurrency %d, over the limit %d", peak, limit)
	}
	if busy.Load() == 0 {
		t.Error("no read was answered origin busy: the test did not overload the origin")
	}
	if int64(calls) != ok.Load() {
		t.Errorf("the origin ran %d fills for %d answered reads: fills ran for callers that had gone", calls, ok.Load())
	}
	if s := w.Stats(); s.OriginBusy != busy.Load() {
		t.Errorf("stats count %d origin busy, callers saw %d", s.OriginBusy, busy.Load())
	}
}

// TestWaiterOfAQueuedFillIsToldOriginBusy: a caller joining a fill that
// still waits for an origin slot does not, at the end of its budget, send
// a second request to the origin; nor does the fill run once both left.
func TestWaiterOfAQueuedFillIsToldOriginBusy(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	o := newCountingOrigin(0)
	o.hold = make(chan struct{})
	w := register(t, c, Config{Label: "q", Getter: o, MaxConcurrentFills: 1})
	ctx := context.Background()
	blocker := make(chan error, 1)
	go func() { _, _, err := w.Get(ctx, Args{"id": "a"}, Settings{}); blocker <- err }()
	waitFor(t, "the first fill at the origin", func() bool { return o.running() == 1 })
	res := make(chan error, 2)
	for range 2 {
		go func() { _, _, err := w.Get(ctx, Args{"id": "b"}, Settings{}); res <- err }()
	}
	waitFor(t, "the second key's fill queued and joined", func() bool {
		return w.lim.Stats().QueuedReads == 1 && w.Stats().Waits == 1
	})
	clock.Advance(w.Policy().Budget())
	for range 2 {
		if err := <-res; !errors.Is(err, ErrOriginBusy) {
			t.Errorf("a read of the queued key answered %v, want ErrOriginBusy", err)
		}
	}
	close(o.hold)
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	if _, calls, order := o.stats(); calls != 1 {
		t.Errorf("origin calls %v, want only the first key's", order)
	}
}

// TestReadsGoBeforeRefreshes: with the origin's slot taken, a rebuild
// queued by an invalidation and a read's miss queued after it: the read
// gets the slot first.
func TestReadsGoBeforeRefreshes(t *testing.T) {
	c, w, o := newLimitedOne(t, "r")
	ctx := context.Background()
	release := occupy(t, w, o)
	rkey, _ := w.Key(Args{"id": "r"})
	if err := w.Invalidate(ctx, rkey); err != nil {
		t.Fatal(err)
	}
	// The rebuild waits: the old value is gone at once.
	if _, ok := c.Lookup(rkey); ok {
		t.Fatal("the old value of a key whose rebuild is queued is still served")
	}
	read := make(chan error, 1)
	go func() { _, _, err := w.Get(ctx, Args{"id": "m"}, Settings{}); read <- err }()
	waitFor(t, "the read queued behind the refresh", func() bool {
		s := w.lim.Stats()
		return s.QueuedReads == 1 && s.QueuedRefreshes == 1
	})
	release()
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refresh done", func() bool { _, ok := c.Lookup(rkey); return ok })
	if _, _, order := o.stats(); fmt.Sprint(order) != "[r busy m r]" {
		t.Errorf("origin order %v, want the read (m) before the queued refresh (r)", order)
	}
}

// TestReaderPromotesAQueuedRefresh: of two rebuilds queued in order, the
// one a reader waits for runs first, and the reader gets the new value.
func TestReaderPromotesAQueuedRefresh(t *testing.T) {
	c, w, o := newLimitedOne(t, "x", "y")
	ctx := context.Background()
	release := occupy(t, w, o)
	o.version.Store("v2")
	kx, _ := w.Key(Args{"id": "x"})
	ky, _ := w.Key(Args{"id": "y"})
	if _, err := w.InvalidateKeys(ctx, []string{kx, ky}); err != nil {
		t.Fatal(err)
	}
	read := make(chan *Entry, 1)
	go func() {
		e, _, err := w.Get(ctx, Args{"id": "y"}, Settings{})
		if err != nil {
			t.Error(err)
		}
		read <- e
	}()
	waitFor(t, "the read joined the queued refresh", func() bool { return w.lim.Stats().QueuedReads == 1 })
	release()
	if e := <-read; e == nil || string(e.Value) != "v2:y" {
		t.Fatalf("the reader got %v, want v2:y", e)
	}
	waitFor(t, "both refreshed", func() bool { _, ok := c.Lookup(kx); return ok })
	if _, _, order := o.stats(); fmt.Sprint(order) != "[x y busy y x]" {
		t.Errorf("origin order %v, want y (read) before x", order)
	}
}

// TestInvalidationRefreshesWhatWasReadAndDropsTheRest: an entry read within
// the window is rebuilt, one nobody read since is dropped, and the stats
// count both.
func TestInvalidationRefreshesWhatWasReadAndDropsTheRest(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	o := newCountingOrigin(0)
	w := register(t, c, Config{Label: "rd", Getter: o, Settings: Settings{Expires: time.Hour}})
	ctx := context.Background()
	for _, id := range []string{"read", "unread"} {
		if _, _, err := w.Get(ctx, Args{"id": id}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(6 * time.Minute) // past the default window of 5 min
	if _, st, err := w.Get(ctx, Args{"id": "read"}, Settings{}); err != nil || st != Hit {
		t.Fatalf("read: %v %v", st, err)
	}
	o.version.Store("v2")
	if n, err := w.InvalidateAll(ctx); err != nil || n != 2 {
		t.Fatalf("InvalidateAll: %d, %v", n, err)
	}
	kr, _ := w.Key(Args{"id": "read"})
	ku, _ := w.Key(Args{"id": "unread"})
	if e, ok := c.Lookup(kr); !ok || string(e.Value) != "v2:read" {
		t.Errorf("the entry read recently was not rebuilt: %v %v", e, ok)
	}
	if _, ok := c.Lookup(ku); ok {
		t.Error("the entry nobody read for 6 min was kept")
	}
	if s := w.Stats(); s.InvalidationRefreshed != 1 || s.InvalidationDropped != 1 {
		t.Errorf("stats: %d refreshed, %d dropped; want 1 and 1", s.InvalidationRefreshed, s.InvalidationDropped)
	}
	// Rebuilt but not read since: the next invalidation drops it.
	if _, err := w.InvalidateAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Lookup(kr); ok {
		t.Error("an entry nobody read since its rebuild was rebuilt again")
	}
	if _, calls, _ := o.stats(); calls != 3 {
		t.Errorf("%d origin calls, want 3 (two fills, one rebuild)", calls)
	}
}

// TestInvalidationStormIsBoundedAndNeverServesTheOldValue: invalidating
// 10,000 cached keys rebuilds them at most the limit at a time, spread
// over the storm's window; once Invalidate returned, every read sees the
// new value (a rebuild still queued is joined at read priority).
func TestInvalidationStormIsBoundedAndNeverServesTheOldValue(t *testing.T) {
	c, err := NewCache(CacheConfig{Clock: SystemClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const limit, n = 32, 10000
	lim, err := NewLimiter(LimiterConfig{Name: "db", MaxConcurrent: limit, RefreshSpread: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o := newCountingOrigin(0)
	w := register(t, c, Config{Label: "storm", Getter: o, Limiter: lim,
		Settings: Settings{Expires: time.Hour, TickAmount: Int(100)}})
	ctx := context.Background()
	for i := range n {
		if _, _, err := w.Get(ctx, Args{"id": i}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	o.mu.Lock()
	o.peak, o.calls = 0, 0
	o.delay = time.Millisecond
	o.mu.Unlock()
	o.version.Store("v2")
	if got, err := w.InvalidateAll(ctx); err != nil || got != n {
		t.Fatalf("InvalidateAll: %d, %v", got, err)
	}
	var wg sync.WaitGroup
	var old atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				e, _, err := w.Get(ctx, Args{"id": i}, Settings{})
				if err != nil {
					t.Errorf("read %d: %v", i, err)
					return
				}
				if string(e.Value) != fmt.Sprintf("v2:%d", i) {
					old.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every rebuild done", func() bool { return lim.Stats().QueuedRefreshes == 0 && o.running() == 0 })
	peak, calls, _ := o.stats()
	t.Logf("origin peak %d, %d calls", peak, calls)
	if old.Load() != 0 {
		t.Errorf("%d reads after the invalidation returned the old value", old.Load())
	}
	if peak > limit {
		t.Errorf("origin peak %d over the limit %d", peak, limit)
	}
	if calls != n {
		t.Errorf("%d origin calls for %d keys: want one rebuild per key", calls, n)
	}
	if s := w.Stats(); s.InvalidationRefreshed != n {
		t.Errorf("%d refreshed, want %d", s.InvalidationRefreshed, n)
	}
}

// TestOriginBackPressureIsHonoured: an origin answering "slow down, retry
// after 2 s" makes the fill answer ErrOriginBusy with that delay, caches
// nothing, is counted, and no request reaches the origin until the pause
// ends.
func TestOriginBackPressureIsHonoured(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	o := newCountingOrigin(0)
	o.fail = func(n int) error {
		if n == 1 {
			return &BackPressureError{Status: 503, RetryAfter: 2 * time.Second}
		}
		return nil
	}
	w := register(t, c, Config{Label: "bp", Getter: o, Settings: Settings{Tick: 10 * time.Millisecond, TickAmount: Int(10)}})
	ctx := context.Background()
	_, _, err := w.Get(ctx, Args{"id": 1}, Settings{})
	var be *OriginBusyError
	if !errors.As(err, &be) || be.RetryAfter != 2*time.Second {
		t.Fatalf("first read: %v, want origin busy, retry after 2s", err)
	}
	if c.Len() != 0 {
		t.Error("the origin's 503 was cached")
	}
	res := make(chan error, 1)
	go func() { _, _, err := w.Get(ctx, Args{"id": 1}, Settings{}); res <- err }()
	waitFor(t, "the second read queued during the pause", func() bool { return w.lim.Stats().QueuedReads == 1 })
	clock.Advance(w.Policy().Budget())
	if err := <-res; !errors.Is(err, ErrOriginBusy) {
		t.Fatalf("read during the pause: %v, want origin busy", err)
	}
	if _, calls, _ := o.stats(); calls != 1 {
		t.Errorf("%d origin calls during the pause, want 1", calls)
	}
	if s := w.Stats(); s.BackPressure != 1 || w.lim.Stats().BackPressure != 1 {
		t.Errorf("back-pressure counted %d (worker), %d (limiter); want 1", s.BackPressure, w.lim.Stats().BackPressure)
	}
}

// TestCloseEndsQueuedRefreshes: rebuilds waiting in the limiter's queue
// end with the cache instead of holding Close forever.
func TestCloseEndsQueuedRefreshes(t *testing.T) {
	c, w, o := newLimitedOne(t, "a", "b")
	ctx := context.Background()
	o.mu.Lock()
	o.hold = make(chan struct{})
	o.mu.Unlock()
	ka, _ := w.Key(Args{"id": "a"})
	kb, _ := w.Key(Args{"id": "b"})
	done := make(chan error, 1)
	go func() { _, err := w.InvalidateKeys(ctx, []string{ka, kb}); done <- err }()
	waitFor(t, "one rebuild running, one queued", func() bool {
		return o.running() == 1 && w.lim.Stats().QueuedRefreshes == 1
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if s := w.lim.Stats(); s.QueuedRefreshes != 0 {
		t.Errorf("%d rebuilds still queued after Close", s.QueuedRefreshes)
	}
}
