package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// fakePeer answers fetches from a map of owner-side behaviours.
type fakePeer struct {
	name    string
	fetches atomic.Int64
	fetch   func(ctx context.Context, req FetchRequest) (*Entry, Status, error)
}

func (p *fakePeer) Name() string { return p.name }
func (p *fakePeer) Fetch(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
	p.fetches.Add(1)
	if req.Deadline.IsZero() {
		panic("a fetch without a deadline")
	}
	// The behaviours see the deadline in ctx, as a transport would use it.
	ctx, cancel := context.WithDeadline(ctx, req.Deadline)
	defer cancel()
	return p.fetch(ctx, req)
}

type pickAll struct{ p *fakePeer }

func (pa pickAll) PickPeer(string) (Peer, bool) { return pa.p, true }

func TestPeerSeam(t *testing.T) {
	ctx := context.Background()
	local := GetterFunc(func(ctx context.Context, a Args) (Value, error) { return Value{Data: []byte("local")}, nil })

	t.Run("owner answers: near copy kept", func(t *testing.T) {
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			return &Entry{Label: req.Label, Key: req.Key, Args: req.Args, Value: []byte("remote"), Owner: "n2",
				CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}, Miss, nil
		}}
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
		var fills atomic.Int64
		w := register(t, c, Config{Label: "r", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
			fills.Add(1)
			return Value{Data: []byte("local")}, nil
		})})
		e, st, err := w.Get(ctx, Args{"a": 1}, Settings{})
		if err != nil || st != Miss || string(e.Value) != "remote" {
			t.Fatalf("%v %v %v", e, st, err)
		}
		if _, st, _ := w.Get(ctx, Args{"a": 1}, Settings{}); st != Hit || p.fetches.Load() != 1 {
			t.Fatalf("near copy not kept: %v, %d fetches", st, p.fetches.Load())
		}
		if fills.Load() != 0 {
			t.Fatal("the getter ran on a non-owner")
		}
		// An invalidation drops a near copy instead of rebuilding it here.
		if err := w.Invalidate(ctx, e.Key); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Lookup(e.Key); ok || fills.Load() != 0 {
			t.Fatal("near copy not dropped on invalidation")
		}
	})

	t.Run("no near cache: every get goes to the owner", func(t *testing.T) {
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			return &Entry{Label: req.Label, Key: req.Key, Value: []byte("remote"), Owner: "n2", CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}, Hit, nil
		}}
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}, NoNearCache: true})
		w := register(t, c, Config{Label: "nn", Getter: local})
		for range 3 {
			if e, _, err := w.Get(ctx, Args{}, Settings{}); err != nil || string(e.Value) != "remote" {
				t.Fatal(e, err)
			}
		}
		if p.fetches.Load() != 3 || c.Len() != 0 {
			t.Fatalf("%d fetches, %d entries kept", p.fetches.Load(), c.Len())
		}
	})

	t.Run("owner unreachable: fallback not kept", func(t *testing.T) {
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			return nil, 0, errors.New("connection refused")
		}}
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
		w := register(t, c, Config{Label: "f", Getter: local})
		for range 2 {
			e, st, err := w.Get(ctx, Args{}, Settings{})
			if err != nil || st != Fallback || string(e.Value) != "local" {
				t.Fatalf("%v %v %v", e, st, err)
			}
		}
		if c.Len() != 0 {
			t.Fatal("a fallback value was kept as the owner's copy")
		}
		if s := w.Stats(); s.Fallbacks != 2 {
			t.Fatalf("fallbacks %d", s.Fallbacks)
		}
	})

	t.Run("owner too slow: fallback after the budget", func(t *testing.T) {
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			<-ctx.Done()
			return nil, 0, ctx.Err()
		}}
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}, Clock: SystemClock()})
		w := register(t, c, Config{Label: "s", Getter: local, Settings: Settings{Tick: time.Millisecond, TickAmount: Int(5)}})
		if _, st, err := w.Get(ctx, Args{}, Settings{}); err != nil || st != Fallback {
			t.Fatalf("%v %v", st, err)
		}
	})

	t.Run("owner's getter failed: error, no local retry", func(t *testing.T) {
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			return nil, 0, fmt.Errorf("remote: %w", ErrFill)
		}}
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
		var fills atomic.Int64
		w := register(t, c, Config{Label: "e", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
			fills.Add(1)
			return Value{}, nil
		})})
		if _, _, err := w.Get(ctx, Args{}, Settings{}); !errors.Is(err, ErrFill) || fills.Load() != 0 {
			t.Fatalf("%v, %d local fills", err, fills.Load())
		}
	})

	t.Run("GetOwned never forwards", func(t *testing.T) {
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			t.Error("forwarded")
			return nil, 0, errors.New("no")
		}}
		var filled []*Entry
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}, OnFill: func(e *Entry, _ Policy) { filled = append(filled, e) }})
		w := register(t, c, Config{Label: "o", Getter: local})
		e, st, err := w.GetOwned(ctx, Args{"x": 1}, Settings{Expires: time.Minute})
		if err != nil || st != Miss || e.Owner != "n1" || e.AvailableTo.Sub(e.CreatedAt) != time.Minute {
			t.Fatalf("%+v %v %v", e, st, err)
		}
		if len(filled) != 1 || filled[0] != e {
			t.Fatalf("OnFill saw %v", filled)
		}
	})

	t.Run("per-call overrides travel to the owner", func(t *testing.T) {
		var got atomic.Value
		p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
			got.Store(req.Overrides)
			return &Entry{Label: req.Label, Key: req.Key, Owner: "n2", CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}, Miss, nil
		}}
		c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
		w := register(t, c, Config{Label: "ov", Getter: local})
		w.Get(ctx, Args{}, Settings{Expires: 42 * time.Second, IsConcurrent: Bool(false)})
		ov := got.Load().(Settings)
		if ov.Expires != 42*time.Second || ov.IsConcurrent == nil || *ov.IsConcurrent {
			t.Fatalf("overrides %+v", ov)
		}
	})
}

func TestPutKeepsNewest(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	w := register(t, c, Config{Label: "put", Getter: GetterFunc(nil)})
	now := clock.Now()
	newer := &Entry{Label: "put", Key: "put@", Value: []byte("new"), CreatedAt: now, AvailableTo: now.Add(time.Hour)}
	older := &Entry{Label: "put", Key: "put@", Value: []byte("old"), CreatedAt: now.Add(-time.Second), AvailableTo: now.Add(time.Hour)}
	expired := &Entry{Label: "put", Key: "put@x", CreatedAt: now.Add(-time.Hour), AvailableTo: now}
	if !w.Put(newer) || w.Put(older) || w.Put(expired) {
		t.Fatal("Put kept the wrong entries")
	}
	if e, _ := c.Lookup("put@"); string(e.Value) != "new" {
		t.Fatalf("%q", e.Value)
	}
}

// TestInvalidatingAFetchInFlightDoesNotFillHere is the regression test of a
// bug found by the cluster tests: a non-owner whose fetch from the owner was
// running rebuilt the key itself when an invalidation arrived.
func TestInvalidatingAFetchInFlightDoesNotFillHere(t *testing.T) {
	release := make(chan struct{})
	p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
		<-release
		return &Entry{Label: req.Label, Key: req.Key, Args: req.Args, Value: []byte("old"), Owner: "n2",
			CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}, Miss, nil
	}}
	c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
	var fills atomic.Int64
	w := register(t, c, Config{Label: "nf", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		fills.Add(1)
		return Value{Data: []byte("local")}, nil
	})})
	done := make(chan struct{})
	go func() { w.Get(context.Background(), Args{}, Settings{}); close(done) }()
	waitFor(t, "fetch", func() bool { return p.fetches.Load() == 1 })
	key, _ := w.Key(Args{})
	if err := w.Invalidate(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	close(release)
	<-done
	if fills.Load() != 0 {
		t.Fatal("a non-owner ran the getter on invalidation")
	}
	if _, ok := c.Lookup(key); ok {
		t.Fatal("the fetch that started before the invalidation was kept")
	}
}

// TestPeerAskingDuringRefreshGetsTheNewValue is the regression test of a
// violation found by the chaos harness (K1): a peer that fetched a key
// while the owner rebuilt it after an invalidation got the invalidated
// value and kept it as a near copy after the invalidation had returned.
func TestPeerAskingDuringRefreshGetsTheNewValue(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "k1", Getter: g})
	ctx := context.Background()
	go func() { g.release <- "old" }()
	e, _, err := w.Get(ctx, Args{}, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	inv := make(chan error, 1)
	go func() { inv <- w.Invalidate(ctx, e.Key) }()
	waitFor(t, "the rebuild", func() bool { return g.calls.Load() == 2 })
	// A local reader sees the old value meanwhile, never a miss.
	if r, st, _ := w.Get(ctx, Args{}, Settings{}); string(r.Value) != "old" || st != Hit {
		t.Fatalf("local read during the rebuild: %q %v", r.Value, st)
	}
	// While the rebuild runs, a peer is not answered with the old value.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	r, _, err := w.GetOwned(short, Args{}, Settings{})
	cancel()
	if err == nil {
		t.Fatalf("a peer asking during the rebuild got %q at once", r.Value)
	}
	peer := make(chan string, 1)
	go func() {
		r, _, err := w.GetOwned(ctx, Args{}, Settings{})
		if err != nil {
			peer <- err.Error()
			return
		}
		peer <- string(r.Value)
	}()
	g.release <- "new"
	if err := <-inv; err != nil {
		t.Fatal(err)
	}
	if got := <-peer; got != "new" {
		t.Fatalf("a peer asking during the rebuild got %q", got)
	}
}

// TestPeekOwned checks that the non-blocking answer to a peer is given
// exactly when GetOwned would answer a hit at once.
func TestPeekOwned(t *testing.T) {
	c, clock := newTestCache(t, CacheConfig{})
	g := newGate()
	w := register(t, c, Config{Label: "peek", Getter: g, Settings: Settings{
		Expires: time.Hour, RelevanceInvalidation: Bool(true), RelevanceExpires: time.Minute,
	}})
	ctx := context.Background()
	key := mustKey(t, w, Args{})
	if _, ok := w.PeekOwned(key, Settings{}); ok {
		t.Fatal("PeekOwned answered a missing key")
	}
	go func() { g.release <- "v1" }()
	e, _, err := w.GetOwned(ctx, Args{}, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	hits := w.Stats().Hits
	if p, ok := w.PeekOwned(key, Settings{}); !ok || p.it != e.it || string(p.Value) != string(e.Value) || !p.CreatedAt.Equal(e.CreatedAt) {
		t.Fatalf("PeekOwned of a fresh entry: %v %v", p, ok)
	}
	if w.Stats().Hits != hits+1 {
		t.Fatal("PeekOwned did not count a hit")
	}
	clock.Advance(30 * time.Second)
	if _, ok := w.PeekOwned(key, Settings{RelevanceExpires: 10 * time.Second}); ok {
		t.Fatal("PeekOwned answered an entry past the soft TTL of the call's overrides")
	}
	if _, ok := w.PeekOwned(key, Settings{TickAmount: Int(-1)}); ok {
		t.Fatal("PeekOwned answered a call with bad overrides")
	}

	// During an invalidation's rebuild the peer must wait for it.
	inv := make(chan error, 1)
	go func() { inv <- w.Invalidate(ctx, e.Key) }()
	waitFor(t, "the rebuild", func() bool { return g.calls.Load() == 2 })
	if _, ok := w.PeekOwned(key, Settings{}); ok {
		t.Fatal("PeekOwned answered the invalidated value during the rebuild")
	}
	g.release <- "v2"
	if err := <-inv; err != nil {
		t.Fatal(err)
	}
	if p, ok := w.PeekOwned(key, Settings{}); !ok || string(p.Value) != "v2" {
		t.Fatalf("after the rebuild: %v %v", p, ok)
	}

	clock.Advance(2 * time.Minute)
	if _, ok := w.PeekOwned(key, Settings{}); ok {
		t.Fatal("PeekOwned answered a stale entry")
	}
	clock.Advance(2 * time.Hour)
	if _, ok := w.PeekOwned(key, Settings{}); ok {
		t.Fatal("PeekOwned answered an expired entry")
	}
}

// remoteEntry is the owner n2's answer "remote" to req.
func remoteEntry(req FetchRequest) *Entry {
	return &Entry{Label: req.Label, Key: req.Key, Args: req.Args, Value: []byte("remote"), Owner: "n2",
		CreatedAt: epoch, AvailableTo: epoch.Add(time.Hour)}
}

// TestLeaderGivingUpDoesNotStrandWaiters: the caller that starts the fetch
// of another node's key runs it in its own goroutine; when its context ends,
// the callers waiting on the same flight must still get the value.
func TestLeaderGivingUpDoesNotStrandWaiters(t *testing.T) {
	release := make(chan struct{})
	var p *fakePeer
	p = &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
		if p.fetches.Load() == 1 { // the leader's: lasts until it gives up
			<-ctx.Done()
			return nil, 0, ctx.Err()
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		return remoteEntry(req), Miss, nil
	}}
	// The manual clock never ends the waiters' budget: they wait for the
	// flight as long as it takes.
	c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
	w := register(t, c, Config{Label: "lead", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		t.Error("the getter ran on a non-owner")
		return Value{}, nil
	})})
	lctx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, _, err := w.Get(lctx, Args{}, Settings{})
		leader <- err
	}()
	waitFor(t, "the leader's fetch", func() bool { return p.fetches.Load() == 1 })
	type result struct {
		e   *Entry
		err error
	}
	const waiters = 3
	results := make(chan result, waiters)
	for range waiters {
		go func() {
			e, _, err := w.Get(context.Background(), Args{}, Settings{})
			results <- result{e, err}
		}()
	}
	waitFor(t, "the waiters", func() bool { return w.Stats().Waits == waiters })
	cancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v, want context.Canceled", err)
	}
	close(release)
	for range waiters {
		select {
		case r := <-results:
			if r.err != nil || string(r.e.Value) != "remote" {
				t.Fatalf("waiter: %v %v", r.e, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a waiter was stranded by the leader giving up")
		}
	}
	if key, _ := w.Key(Args{}); w.Busy(key) {
		t.Fatal("the flight is still registered")
	}
	if _, st, err := w.Get(context.Background(), Args{}, Settings{}); err != nil || st != Hit {
		t.Fatalf("after: %v %v, want the near copy", st, err)
	}
}

// TestLeaderPanicReleasesWaiters: a fetch that panics in the leading
// caller's goroutine panics there, and its waiters get an error.
func TestLeaderPanicReleasesWaiters(t *testing.T) {
	release := make(chan struct{})
	p := &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
		<-release
		panic("fetch")
	}}
	c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
	w := register(t, c, Config{Label: "panic", Getter: GetterFunc(nil)})
	leader := make(chan any, 1)
	go func() {
		defer func() { leader <- recover() }()
		w.Get(context.Background(), Args{}, Settings{})
	}()
	waitFor(t, "the leader's fetch", func() bool { return p.fetches.Load() == 1 })
	waiter := make(chan error, 1)
	go func() {
		_, _, err := w.Get(context.Background(), Args{}, Settings{})
		waiter <- err
	}()
	waitFor(t, "the waiter", func() bool { return w.Stats().Waits == 1 })
	close(release)
	if r := <-leader; r != "fetch" {
		t.Fatalf("leader recovered %v, want the fetch's panic", r)
	}
	if err := <-waiter; !errors.Is(err, errFetchPanicked) {
		t.Fatalf("waiter: %v, want errFetchPanicked", err)
	}
}

// TestLeaderDeadlineIsNotAnOwnerFailure: when the fetch of the leading
// caller fails because that caller's own deadline passed, the owner did not
// fail: no fallback runs, and the flight goes on for the others.
func TestLeaderDeadlineIsNotAnOwnerFailure(t *testing.T) {
	var p *fakePeer
	p = &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
		if p.fetches.Load() == 1 {
			// As the transport does: it reads the clock, so it may see
			// the deadline pass before the context's timer has fired.
			dl, _ := ctx.Deadline()
			time.Sleep(time.Until(dl))
			return nil, 0, fmt.Errorf("peer: %w", context.DeadlineExceeded)
		}
		return remoteEntry(req), Hit, nil
	}}
	c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
	var fills atomic.Int64
	w := register(t, c, Config{Label: "dl", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		fills.Add(1)
		return Value{Data: []byte("local")}, nil
	})})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := w.Get(ctx, Args{}, Settings{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("leader: %v, want its deadline", err)
	}
	key := mustKey(t, w, Args{})
	waitFor(t, "the handed-off flight", func() bool { return !w.Busy(key) })
	if fills.Load() != 0 || w.Stats().Fallbacks != 0 {
		t.Fatalf("%d fills, %d fallbacks after the leader's deadline", fills.Load(), w.Stats().Fallbacks)
	}
	if e, st, err := w.Get(context.Background(), Args{}, Settings{}); err != nil || st != Hit || string(e.Value) != "remote" {
		t.Fatalf("after: %v %v %v, want the near copy kept by the flight", e, st, err)
	}
}

// pastDeadline is a context whose deadline has passed but whose timer has
// not fired yet: Err is still nil, as it is for a moment after a transport
// saw the deadline pass.
type pastDeadline struct {
	context.Context
	dl time.Time
}

func (p pastDeadline) Deadline() (time.Time, bool) { return p.dl, true }

// TestDirectCallerDeadlineIsNotAnOwnerFailure: a caller that computes
// directly (it does not wait for the running flight) and whose fetch fails
// on its own deadline must not fill locally as if the owner had failed.
func TestDirectCallerDeadlineIsNotAnOwnerFailure(t *testing.T) {
	release := make(chan struct{})
	var p *fakePeer
	p = &fakePeer{name: "n2", fetch: func(ctx context.Context, req FetchRequest) (*Entry, Status, error) {
		if p.fetches.Load() == 1 {
			<-release // the leader's fetch, still running
			return remoteEntry(req), Hit, nil
		}
		return nil, 0, fmt.Errorf("peer: %w", context.DeadlineExceeded)
	}}
	c, _ := newTestCache(t, CacheConfig{Self: "n1", Peers: pickAll{p}})
	var fills atomic.Int64
	w := register(t, c, Config{Label: "dd", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		fills.Add(1)
		return Value{Data: []byte("local")}, nil
	})})
	key := mustKey(t, w, Args{})
	leader := make(chan error, 1)
	go func() {
		_, _, err := w.Get(context.Background(), Args{}, Settings{})
		leader <- err
	}()
	waitFor(t, "the leader's fetch", func() bool { return w.Busy(key) && p.fetches.Load() == 1 })
	no := false
	ctx := pastDeadline{Context: context.Background(), dl: time.Now().Add(-time.Millisecond)}
	if _, _, err := w.Get(ctx, Args{}, Settings{IsConcurrent: &no}); err == nil {
		t.Fatal("the direct caller got a value after its deadline")
	}
	if fills.Load() != 0 || w.Stats().Fallbacks != 0 {
		t.Errorf("%d fills, %d fallbacks: the caller's own deadline was taken for the owner failing", fills.Load(), w.Stats().Fallbacks)
	}
	close(release)
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
}
