package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Worker is a named loader of one [Cache]: it answers Gets from the store,
// runs its getter once per key for concurrent callers, and rebuilds entries
// on invalidation and when they turn stale. Create it with
// [Cache.Register]; it is safe for concurrent use.
type Worker struct {
	cache *Cache
	cfg   Config
	base  Policy // the cache's defaults with the worker's settings applied
	stats counters
	// lim bounds the getter runs (origin requests); nil: no bound.
	lim *Limiter

	mu sync.Mutex
	// flights are the computations that callers can join, by key. An
	// invalidation detaches the flight of its key (its result is no longer
	// wanted), so a later caller never joins a computation that started
	// before the invalidation. Guarded by mu.
	flights map[string]*flight
	// gens holds, for each key with a computation running, the generation
	// of the key: an invalidation bumps it, and a computation stores its
	// result only if the generation it started with is still current (the
	// idea of memcache leases). Entries live only while computations run,
	// so the map does not grow with the key space. Guarded by mu.
	gens map[string]*keyGen
}

type keyGen struct {
	gen     uint64
	running int
}

// flight is one computation of a key that callers wait on.
type flight struct {
	done    chan struct{} // closed when the fields below are set
	args    Args
	refresh bool // started by an invalidation
	// gen is the generation of the key the flight's result is kept under.
	// Guarded by the worker's mu: an invalidation moves a flight that has
	// not reached the origin yet to the new generation (its getter will
	// read the changed data).
	gen uint64
	// queued is true while the flight waits for a slot of the origin's
	// limiter: a caller whose budget ends then is told the origin is busy
	// instead of queueing a second request.
	queued atomic.Bool
	// ticket is the flight's place in the limiter's queue of rebuilds, set
	// under the worker's mu; nil for flights that started at once.
	ticket *ticket
	// results, written before done is closed
	entry  *Entry
	status Status
	err    error
}

// Label returns the worker's label.
func (w *Worker) Label() string { return w.cfg.Label }

// Config returns the worker's definition.
func (w *Worker) Config() Config { return w.cfg }

// Policy returns the settings in force for calls without overrides.
func (w *Worker) Policy() Policy { return w.base }

// Limiter returns the limiter of the worker's getter runs (shared with the
// other workers of its origin), nil when they are not bounded.
func (w *Worker) Limiter() *Limiter { return w.lim }

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats { return w.stats.snapshot() }

// Key returns the key of args: "label@" and the canonical encoding of
// [KeyOf], or of the worker's KeyGen.
func (w *Worker) Key(args Args) (string, error) {
	if w.cfg.KeyGen == nil {
		return KeyOf(w.cfg.Label, args)
	}
	s, err := w.cfg.KeyGen(args)
	if err != nil {
		return "", fmt.Errorf("%w: key_gen: %v", ErrBadArgs, err)
	}
	return shorten(w.cfg.Label + "@" + s), nil
}

// PolicyFor returns the policy of a call with overrides ov, or an error
// wrapping [ErrConfig] when an override is out of range.
func (w *Worker) PolicyFor(ov Settings) (Policy, error) {
	if ov.IsZero() {
		return w.base, nil
	}
	if err := ov.validateOverride(); err != nil {
		return Policy{}, err
	}
	p := w.base.With(ov)
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Get returns the entry of args and how it was answered. A key owned by
// another node is fetched from it (and kept as a near-cache copy); when the
// owner cannot answer, the value is computed here and answered as
// [Fallback]. Errors: [ErrBadArgs], [ErrConfig] for bad overrides, errors
// wrapping [ErrFill] from the getter, the context's error, [ErrClosed].
func (w *Worker) Get(ctx context.Context, args Args, ov Settings) (*Entry, Status, error) {
	return w.get(ctx, args, ov, true, nil)
}

// GetInto is Get writing the entry into *dst: a hit builds it there and
// allocates no Entry (the store keeps entries packed and builds one per
// read). The Entry's Value shares the store's bytes.
func (w *Worker) GetInto(ctx context.Context, args Args, ov Settings, dst *Entry) (Status, error) {
	e, st, err := w.get(ctx, args, ov, true, dst)
	if err != nil {
		return 0, err
	}
	if e != dst {
		*dst = *e
	}
	return st, nil
}

// GetOwned is Get for a key this node owns, as asked by a peer: it never
// forwards the request to another node, whatever the ring says, so that two
// nodes whose rings disagree for a moment cannot bounce a request forever.
func (w *Worker) GetOwned(ctx context.Context, args Args, ov Settings) (*Entry, Status, error) {
	return w.get(ctx, args, ov, false, nil)
}

// PeekOwned returns the entry of key that GetOwned would answer at once as
// a [Hit]: present, unexpired, within its soft TTL, and with no computation
// of key running (a peer asking while an invalidation's rebuild runs must
// wait for the rebuilt value). It never blocks and never starts a
// computation, except the early refresh a hit may start in the background;
// when it reports false, call GetOwned. An entry it returns counts as a hit.
// Its Args are nil: the peer that asks has them (decoding them is most of
// what building the entry would cost).
func (w *Worker) PeekOwned(key string, ov Settings) (*Entry, bool) {
	e := new(Entry)
	if !w.PeekOwnedInto(key, ov, e) {
		return nil, false
	}
	return e, true
}

// PeekOwnedInto is PeekOwned writing the entry into *dst.
func (w *Worker) PeekOwnedInto(key string, ov Settings, dst *Entry) bool {
	pol, err := w.PolicyFor(ov)
	if err != nil {
		return false
	}
	now := w.cache.clock.Now()
	it, ok := w.cache.store.get(key)
	if !ok || it.expired(now.UnixNano()) || !freshItem(it, pol, now) || w.Busy(key) {
		return false
	}
	w.stats.hits.Add(1)
	markRead(it, now)
	it.fillArgs(&w.cache.meta, dst, key, nil, false)
	w.maybeRefreshEarly(dst, now, pol, false)
	return true
}

// markRead notes that e was read at now, at most once a second per entry
// so that hot keys do not write one cache line from every core.
func (w *Worker) markRead(e *Entry, now time.Time) {
	if e.it != nil {
		markRead(e.it, now)
	}
}

func markRead(it *item, now time.Time) {
	n := uint32(min(max(now.Unix(), 1), itemWithdrawn-1))
	if old := atomic.LoadUint32(&it.readAt); old != itemWithdrawn && n != old {
		// A CAS, not a store: a withdrawn entry stays withdrawn.
		atomic.CompareAndSwapUint32(&it.readAt, old, n)
	}
}

// readRecently reports whether e was read since it was built and within
// the worker's RefreshIfReadWithin of now.
func (w *Worker) readRecently(e *Entry, now time.Time) bool {
	if w.cfg.RefreshIfReadWithin < 0 {
		return true
	}
	if e.it == nil {
		return false
	}
	r := atomic.LoadUint32(&e.it.readAt)
	// Read times are whole seconds: a read in the second of the window's
	// start counts.
	return r != 0 && r != itemWithdrawn && now.Unix()-int64(r) <= int64(w.cfg.RefreshIfReadWithin/time.Second)
}

func (w *Worker) get(ctx context.Context, args Args, ov Settings, route bool, dst *Entry) (*Entry, Status, error) {
	marked := false
	e, st, err := w.read(ctx, args, ov, route, dst, &marked)
	if err == nil && !marked {
		w.markRead(e, w.cache.clock.Now())
	}
	return e, st, err
}

// read answers a Get; a hit is built into dst when it is not nil. A fresh
// hit is marked read here, with the clock reading of its lookup, and
// *marked set: a hit reads the clock once.
func (w *Worker) read(ctx context.Context, args Args, ov Settings, route bool, dst *Entry, marked *bool) (*Entry, Status, error) {
	pol, err := w.PolicyFor(ov)
	if err != nil {
		return nil, 0, err
	}
	key, err := w.Key(args)
	if err != nil {
		return nil, 0, err
	}
	now := w.cache.clock.Now()
	if it, ok := w.cache.store.get(key); ok && !it.expired(now.UnixNano()) {
		if freshItem(it, pol, now) {
			if !route {
				// Asked by a peer that will keep what it gets as a near
				// copy: while an invalidation's rebuild of this key runs,
				// the entry in place is the invalidated value, fine for a
				// local reader now but not for a copy that outlives the
				// rebuild. Answer with the rebuilt value instead.
				if f := w.refreshing(key); f != nil {
					select {
					case <-f.done:
						if f.err == nil && f.entry != nil {
							return f.entry, Miss, nil
						}
						return w.load(ctx, key, args, pol, route)
					case <-ctx.Done():
						return nil, 0, ctx.Err()
					}
				}
				// No rebuild running now, but one may have ended between
				// the lookup above and that check, replacing e: answer
				// what is in place now.
				if cur, ok := w.cache.store.get(key); ok && cur != it && !cur.expired(now.UnixNano()) {
					it = cur
				}
			}
			e := build(&w.cache.meta, dst, it, key, args)
			markRead(it, now)
			*marked = true
			w.stats.hits.Add(1)
			w.maybeRefreshEarly(e, now, pol, route)
			return e, Hit, nil
		}
		// Past the soft deadline.
		e := build(&w.cache.meta, dst, it, key, args)
		w.stats.staleHits.Add(1)
		if pol.DelayInvalidation {
			// Stale-while-revalidate: at most one rebuild per key, however
			// many stale reads arrive (startFlight joins a running one).
			w.background(key, e.Args, pol, route, time.Time{})
			return e, Stale, nil
		}
		ne, st, err := w.load(ctx, key, e.Args, pol, route)
		if err != nil {
			// Stale-if-error: the old value is still within its hard TTL.
			if ctx.Err() != nil {
				return nil, 0, err
			}
			return e, Stale, nil
		}
		return ne, st, nil
	}
	w.stats.misses.Add(1)
	return w.load(ctx, key, args, pol, route)
}

// load joins or starts the computation of key and waits for it.
func (w *Worker) load(ctx context.Context, key string, args Args, pol Policy, route bool) (*Entry, Status, error) {
	if w.cache.isClosed() {
		return nil, 0, ErrClosed
	}
	w.mu.Lock()
	if f := w.flights[key]; f != nil {
		tk := f.ticket
		w.mu.Unlock()
		if !pol.IsConcurrent {
			return w.computeDirect(ctx, key, args, pol, route)
		}
		if tk != nil {
			// A rebuild still queued behind reads: a reader waits for it
			// now, so it goes at read priority.
			w.lim.promote(tk)
		}
		w.stats.waits.Add(1)
		t := w.cache.clock.NewTimer(pol.Budget())
		select {
		case <-f.done:
			t.Stop()
			return f.result()
		case <-t.Chan():
			w.stats.waitTimeouts.Add(1)
			if f.queued.Load() {
				// The computation has not reached the origin yet: a second
				// request would only queue behind it.
				w.stats.originBusy.Add(1)
				return nil, 0, w.lim.busyError("queue wait", w.lim.cfg.Clock.Now())
			}
			// The budget ran out: compute it ourselves, as the original did.
			return w.computeDirect(ctx, key, args, pol, route)
		case <-ctx.Done():
			t.Stop()
			return nil, 0, ctx.Err()
		}
	}
	// Check the store again under the lock: a flight may have stored the
	// value and left between the caller's lookup and now. Flights store
	// before they leave the map, both under w.mu, so this check cannot miss
	// a value and start a second fill of it.
	if now := w.cache.clock.Now(); true {
		if it, ok := w.cache.store.get(key); ok && !it.expired(now.UnixNano()) && freshItem(it, pol, now) {
			w.mu.Unlock()
			return it.entry(&w.cache.meta, key, args), Hit, nil
		}
	}
	if p := w.remoteOwner(key, route); p != nil {
		// Another node owns the key: this caller fetches it in its own
		// goroutine, a remote hit being too short for a goroutine and a
		// handoff to pay off.
		f, gen := w.registerFlightLocked(key, args, false)
		w.mu.Unlock()
		return w.leadFetch(ctx, p, key, args, pol, f, gen)
	}
	f, err := w.startFlightLocked(ctx, key, args, pol, route, false)
	w.mu.Unlock()
	if err != nil {
		return nil, 0, err
	}
	return w.awaitLed(ctx, f)
}

// awaitLed is the wait of the caller that started flight f: without a
// budget, since it is the computation everyone else is waiting for. Its own
// context only ends its wait; the computation goes on for the others.
func (w *Worker) awaitLed(ctx context.Context, f *flight) (*Entry, Status, error) {
	select {
	case <-f.done:
		return f.result()
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

// remoteOwner returns the peer that owns key when the call may be routed
// and another node owns it, else nil.
func (w *Worker) remoteOwner(key string, route bool) Peer {
	if !route || w.cache.cfg.Peers == nil {
		return nil
	}
	p, ok := w.cache.cfg.Peers.PickPeer(key)
	if !ok {
		return nil
	}
	return p
}

// errFetchPanicked is what the waiters of a flight get when the fetch of
// the caller leading it panicked (the panic goes on in that caller).
var errFetchPanicked = errors.New("worker: the fetch from the owner panicked")

// leadFetch runs flight f, a fetch of key from its owner p, in the goroutine
// of the caller that started it, with the wait budget as the fetch's
// deadline. Other callers of the key wait on f as on any flight, so whatever
// happens to this caller, f must end with a result for them: an answer or
// the owner's getter error is the flight's result; when the owner cannot
// answer, the fallback fill runs in a goroutine of the flight, as
// startFlightLocked's would; when this caller's context ends first, the
// flight is handed to such a goroutine, which starts the fetch over.
func (w *Worker) leadFetch(ctx context.Context, p Peer, key string, args Args, pol Policy, f *flight, gen uint64) (*Entry, Status, error) {
	settled := false
	defer func() {
		if !settled { // the fetch panicked
			w.finish(key, gen, f, nil, 0, errFetchPanicked, pol, false)
		}
	}()
	e, st, err := w.fetch(ctx, p, key, args, pol)
	switch {
	case err == nil:
		settled = true
		w.finish(key, gen, f, e, st, nil, pol, false)
		return e, st, nil
	case !isFillError(err) && callerEnded(ctx):
		settled = true
		w.handOff(key, gen, f, pol, func(cctx context.Context) (*Entry, Status, error) {
			return w.compute(cctx, key, args, pol, true, &slot{f: f})
		})
		<-ctx.Done() // at once, or as soon as its timer fires
		return nil, 0, ctx.Err()
	case isFillError(err):
		settled = true
		w.stats.fillErrors.Add(1)
		w.finish(key, gen, f, nil, 0, err, pol, false)
		return nil, 0, err
	}
	settled = true
	w.handOff(key, gen, f, pol, func(cctx context.Context) (*Entry, Status, error) {
		return w.fallback(cctx, p, key, args, pol, err, &slot{f: f})
	})
	return w.awaitLed(ctx, f)
}

// callerEnded reports whether ctx has ended or its deadline has passed: a
// context's Err turns non-nil only once its timer has fired, a little after
// the deadline that a fetch bounded by it has already seen pass. Contexts
// run on the system clock, so this reads it, not the cache's.
func callerEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// handOff goes on with flight f, registered under generation gen, in a
// goroutine bounded by the cache's lifetime, which ends it with the result
// of run.
func (w *Worker) handOff(key string, gen uint64, f *flight, pol Policy, run func(context.Context) (*Entry, Status, error)) {
	c := w.cache
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		w.finish(key, gen, f, nil, 0, ErrClosed, pol, false)
		return
	}
	c.wg.Add(1)
	c.mu.RUnlock()
	go func() {
		defer c.wg.Done()
		e, st, err := run(c.ctx)
		w.finish(key, gen, f, e, st, err, pol, false)
	}()
}

// refreshing returns the running rebuild of key that an invalidation
// started, if any.
func (w *Worker) refreshing(key string) *flight {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f := w.flights[key]; f != nil && f.refresh {
		return f
	}
	return nil
}

// Busy reports whether a computation of key is running (a fill or a
// rebuild ordered by an invalidation).
func (w *Worker) Busy(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flights[key] != nil
}

// fresh reports whether e is within its soft TTL under pol.
func fresh(e *Entry, pol Policy, now time.Time) bool {
	return !pol.RelevanceInvalidation || now.Before(e.CreatedAt.Add(pol.RelevanceExpires))
}

func freshItem(it *item, pol Policy, now time.Time) bool {
	return !pol.RelevanceInvalidation || now.UnixNano() < it.created+int64(pol.RelevanceExpires)
}

func (f *flight) result() (*Entry, Status, error) {
	if f.err != nil {
		return nil, 0, f.err
	}
	return f.entry, f.status, nil
}

// background starts a rebuild of key unless one is running, behind the
// reads of the origin's limiter and not before due.
func (w *Worker) background(key string, args Args, pol Policy, route bool, due time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flights[key] != nil {
		return
	}
	_, _, _ = w.scheduleFlightLocked(key, args, pol, route, false, due)
}

// maybeRefreshEarly implements XFetch: the closer to its hard deadline and
// the slower its fill, the likelier a hit starts a background rebuild, so
// hot keys are rebuilt before they expire instead of stampeding after.
func (w *Worker) maybeRefreshEarly(e *Entry, now time.Time, pol Policy, route bool) {
	beta := w.cfg.EarlyRefresh
	if beta == 0 || e.FillDuration <= 0 {
		return
	}
	r := w.cache.cfg.Rand()
	if r <= 0 {
		r = math.SmallestNonzeroFloat64
	}
	gap := time.Duration(-float64(e.FillDuration) * beta * math.Log(r))
	if now.Add(gap).Before(e.AvailableTo) {
		return
	}
	w.stats.refreshes.Add(1)
	args := e.Args
	if args == nil && e.it != nil { // a PeekOwned entry
		args = e.it.args()
	}
	w.background(e.Key, args, pol, route, time.Time{})
}

// startFlightLocked registers a computation of key that callers can join and
// runs it in its own goroutine, bounded by the cache's lifetime rather than
// by one caller's context. The getter's context carries the values of from,
// the context of the caller that started it (a trace span), when not nil,
// but not its cancellation or deadline. refresh marks a rebuild ordered by
// an invalidation: if it fails, the old entry must go. w.mu must be held.
func (w *Worker) startFlightLocked(from context.Context, key string, args Args, pol Policy, route, refresh bool) (*flight, error) {
	c := w.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, ErrClosed
	}
	f, gen := w.registerFlightLocked(key, args, refresh)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx := c.ctx
		if from != nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(context.WithoutCancel(from))
			stop := context.AfterFunc(c.ctx, cancel)
			defer func() { stop(); cancel() }()
		}
		e, st, err := w.compute(ctx, key, args, pol, route, &slot{f: f})
		w.finish(key, gen, f, e, st, err, pol, refresh)
	}()
	return f, nil
}

// scheduleFlightLocked registers a rebuild of key, as startFlightLocked
// does, that waits for a slot of the origin's limiter behind the reads and
// does not start before due. queued reports that it did not start at once
// (its ticket is in the limiter's queue). w.mu must be held.
func (w *Worker) scheduleFlightLocked(key string, args Args, pol Policy, route, refresh bool, due time.Time) (f *flight, queued bool, err error) {
	if w.lim == nil || w.remoteOwner(key, route) != nil {
		// No origin request to bound: a fetch from the owner, which
		// bounds its own.
		f, err = w.startFlightLocked(nil, key, args, pol, route, refresh)
		return f, false, err
	}
	c := w.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, false, ErrClosed
	}
	f, gen := w.registerFlightLocked(key, args, refresh)
	f.queued.Store(true)
	c.wg.Add(1)
	run := func() {
		defer c.wg.Done()
		s := &slot{f: f, held: true}
		e, st, err := w.compute(c.ctx, key, args, pol, route, s)
		if s.held { // the slot was not used: the owner moved meanwhile
			w.lim.release(0)
		}
		w.finish(key, gen, f, e, st, err, pol, refresh)
	}
	t := w.lim.schedule(due, func() {
		f.queued.Store(false)
		go run()
	})
	f.ticket = t
	return f, t != nil, nil
}

// cancelQueued ends the flights whose rebuild still waits in the
// limiter's queue with ErrClosed: the cache is closing.
func (w *Worker) cancelQueued() {
	type queued struct {
		key     string
		f       *flight
		refresh bool
	}
	var qs []queued
	w.mu.Lock()
	for k, f := range w.flights {
		if f.ticket != nil {
			qs = append(qs, queued{k, f, f.refresh})
		}
	}
	w.mu.Unlock()
	for _, q := range qs {
		if w.lim.cancel(q.f.ticket) {
			w.finish(q.key, 0, q.f, nil, 0, ErrClosed, w.base, q.refresh)
			w.cache.wg.Done()
		}
	}
}

// registerFlightLocked registers a computation of key that callers can
// join and returns it with the generation it runs under. Whoever registers
// it must end it with finish. w.mu must be held.
func (w *Worker) registerFlightLocked(key string, args Args, refresh bool) (*flight, uint64) {
	f := &flight{done: make(chan struct{}), args: args, refresh: refresh}
	w.flights[key] = f
	f.gen = w.beginLocked(key)
	return f, f.gen
}

// computeDirect computes key in the caller's goroutine without letting
// others join: the path of callers whose wait budget ran out, and of
// callers that do not wait (is_concurrent off).
func (w *Worker) computeDirect(ctx context.Context, key string, args Args, pol Policy, route bool) (*Entry, Status, error) {
	w.mu.Lock()
	gen := w.beginLocked(key)
	w.mu.Unlock()
	e, st, err := w.compute(ctx, key, args, pol, route, nil)
	w.finish(key, gen, nil, e, st, err, pol, false)
	if err != nil {
		return nil, 0, err
	}
	return e, st, nil
}

func (w *Worker) beginLocked(key string) uint64 {
	g := w.gens[key]
	if g == nil {
		g = &keyGen{}
		w.gens[key] = g
	}
	g.running++
	return g.gen
}

// finish stores the result of a computation if no invalidation of its key
// happened since it started, records it, and releases the flight's waiters.
func (w *Worker) finish(key string, gen uint64, f *flight, e *Entry, st Status, err error, pol Policy, refresh bool) {
	w.mu.Lock()
	if f != nil {
		gen = f.gen // an invalidation may have moved it (see flight.gen)
	}
	g := w.gens[key]
	current := g.gen == gen
	if g.running--; g.running == 0 {
		delete(w.gens, key)
	}
	if f != nil && w.flights[key] == f {
		delete(w.flights, key)
	}
	stored := false
	switch {
	case !current:
		// An invalidation came while this ran: the value may predate the
		// change, so it is not kept (the invalidation started its own
		// rebuild). Callers that asked before the invalidation still get it.
		w.stats.discarded.Add(1)
	case err != nil || st == Fallback:
		if refresh {
			// The invalidated value must not be served any longer.
			w.cache.store.remove(key)
		}
	case w.cache.cfg.NoNearCache && e.Owner != w.cache.cfg.Self:
		// Copies of other nodes' keys are not kept.
	default:
		it, ierr := w.cache.newItem(e)
		if ierr != nil {
			w.cache.cfg.Logger.Error("entry not kept: its arguments cannot be encoded", "label", w.cfg.Label, "key", key, "err", ierr)
			break
		}
		e.it = it
		w.cache.store.set(it)
		stored = true
	}
	w.mu.Unlock()
	if stored && e.Owner == w.cache.cfg.Self && w.cache.cfg.OnFill != nil {
		w.cache.cfg.OnFill(e, pol)
	}
	if f != nil {
		f.entry, f.status, f.err = e, st, err
		close(f.done)
	}
}

// compute produces the entry of key: from its owner when another node owns
// it, else by running the getter. The status is Miss for a local fill, the
// owner's answer for a copy fetched from it, Fallback for a local fill after
// the owner failed.
func (w *Worker) compute(ctx context.Context, key string, args Args, pol Policy, route bool, s *slot) (*Entry, Status, error) {
	if p := w.remoteOwner(key, route); p != nil {
		e, st, err := w.fetch(ctx, p, key, args, pol)
		if err == nil {
			return e, st, nil
		}
		if isFillError(err) || callerEnded(ctx) {
			// The caller's own deadline, seen by the transport before
			// ctx reports it, is not the owner failing: no fallback fill.
			// Nor is an owner whose origin is busy: filling here would
			// go around the owner's limit.
			w.stats.fillErrors.Add(1)
			return nil, 0, err
		}
		return w.fallback(ctx, p, key, args, pol, err, s)
	}
	e, err := w.fill(ctx, key, args, pol, s)
	if err != nil {
		return nil, 0, err
	}
	return e, Miss, nil
}

// fetch asks the owner p for key, waiting at most the wait budget. The
// deadline bounds a network call, so it is on the system clock.
func (w *Worker) fetch(ctx context.Context, p Peer, key string, args Args, pol Policy) (*Entry, Status, error) {
	w.stats.peerFetches.Add(1)
	return p.Fetch(ctx, FetchRequest{Label: w.cfg.Label, Key: key, Args: args, Overrides: overridesOf(pol, w.base),
		Deadline: time.Now().Add(pol.Budget())})
}

// fallback computes key here after its owner p failed to answer with err,
// and answers it as Fallback.
func (w *Worker) fallback(ctx context.Context, p Peer, key string, args Args, pol Policy, err error, s *slot) (*Entry, Status, error) {
	w.cache.cfg.Logger.Debug("owner unreachable, computing here", "label", w.cfg.Label, "key", key, "owner", p.Name(), "err", err)
	w.stats.fallbacks.Add(1)
	e, err := w.fill(ctx, key, args, pol, s)
	if err != nil {
		return nil, 0, err
	}
	return e, Fallback, nil
}

// isFillError reports whether err is the owner's answer: its getter
// failed or its origin was busy. The caller then fills nothing itself.
func isFillError(err error) bool {
	return errors.Is(err, ErrFill) || errors.Is(err, ErrOriginBusy)
}

// overridesOf expresses pol as overrides of base, so that the owner runs a
// forwarded call with the caller's per-call settings.
func overridesOf(pol, base Policy) Settings {
	if pol == base {
		return Settings{}
	}
	var s Settings
	if pol.Expires != base.Expires {
		s.Expires = pol.Expires
	}
	if pol.Tick != base.Tick {
		s.Tick = pol.Tick
	}
	if pol.TickAmount != base.TickAmount {
		s.TickAmount = Int(pol.TickAmount)
	}
	if pol.IsConcurrent != base.IsConcurrent {
		s.IsConcurrent = Bool(pol.IsConcurrent)
	}
	if pol.RelevanceInvalidation != base.RelevanceInvalidation {
		s.RelevanceInvalidation = Bool(pol.RelevanceInvalidation)
	}
	if pol.RelevanceExpires != base.RelevanceExpires {
		s.RelevanceExpires = pol.RelevanceExpires
	}
	if pol.DelayInvalidation != base.DelayInvalidation {
		s.DelayInvalidation = Bool(pol.DelayInvalidation)
	}
	if pol.DelayCountdown != base.DelayCountdown {
		s.DelayCountdown = Duration(pol.DelayCountdown)
	}
	return s
}

// slot is how a fill gets its slot of the origin's limiter: held already
// (a rebuild the limiter granted), or to acquire within the wait budget,
// with the flight to mark as queued meanwhile (f may be nil).
type slot struct {
	held bool
	f    *flight
}

// fill runs the getter once and builds the entry. A panic in the getter is
// turned into an error, so that every waiter gets it and the node survives.
// The run takes a slot of the worker's limiter first: a read waits for it
// at most its wait budget, then the fill ends with ErrOriginBusy without
// reaching the origin.
func (w *Worker) fill(ctx context.Context, key string, args Args, pol Policy, s *slot) (e *Entry, err error) {
	clock := w.cache.clock
	if s == nil {
		s = &slot{}
	}
	if lim := w.lim; lim != nil {
		if !s.held {
			if s.f != nil {
				s.f.queued.Store(true)
			}
			err := lim.acquire(ctx, pol.Budget())
			if err == nil && s.f != nil {
				// Left queued on failure: a caller joining the flight
				// until it ends is told the origin is busy.
				s.f.queued.Store(false)
			}
			if err != nil {
				if errors.Is(err, ErrOriginBusy) {
					w.stats.originBusy.Add(1)
				}
				return nil, err
			}
		}
		s.held = false // released below, whatever happens
		var pause time.Duration
		defer func() { lim.release(pause) }()
		defer func() {
			var bp *BackPressureError
			if errors.As(err, &bp) {
				w.stats.backPressure.Add(1)
				lim.backPressure.Add(1)
				pause = max(bp.RetryAfter, 0)
				err = &OriginBusyError{Origin: lim.cfg.Name, RetryAfter: max(min(bp.RetryAfter, maxPause), time.Second),
					Reason: "origin back-pressure"}
			}
		}()
	}
	if w.cfg.FillTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.cfg.FillTimeout)
		defer cancel()
	}
	start := clock.Now()
	defer func() {
		if r := recover(); r != nil {
			w.cache.cfg.Logger.Error("getter panicked", "label", w.cfg.Label, "key", key, "panic", r, "stack", string(debug.Stack()))
			e, err = nil, fmt.Errorf("%w: %s: panic: %v", ErrFill, w.cfg.Label, r)
		}
		if err != nil {
			w.stats.fillErrors.Add(1)
		}
	}()
	v, gerr := w.cfg.Getter.Get(ctx, args)
	if gerr != nil {
		sentinel := ErrFill
		if errors.Is(gerr, context.DeadlineExceeded) {
			sentinel = ErrFillTimeout
		}
		return nil, fmt.Errorf("%w: %s: %w", sentinel, w.cfg.Label, gerr)
	}
	w.stats.fills.Add(1)
	end := clock.Now()
	e = &Entry{
		Label:        w.cfg.Label,
		Key:          key,
		Args:         args,
		Value:        v.Data,
		ContentType:  v.ContentType,
		Owner:        w.cache.cfg.Self,
		CreatedAt:    end,
		AvailableTo:  end.Add(pol.Expires),
		FillDuration: end.Sub(start),
		decoded:      v.decoded,
	}
	if pol.RelevanceInvalidation {
		e.RelevanceTo = end.Add(pol.RelevanceExpires)
	}
	return e, nil
}
