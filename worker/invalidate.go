package worker

import (
	"context"
	"errors"
	"time"
)

// Invalidate invalidates the entry of key with the worker's action. With
// [Refresh] (the default) an entry read within RefreshIfReadWithin is
// rebuilt from its stored arguments, and one nobody read is dropped. While
// the rebuild runs, readers keep getting the old value until the new one is
// in place, and Invalidate returns once it is (or when ctx ends; the
// rebuild goes on). A rebuild that has to wait for a slot of the origin's
// limiter does not keep the old value meanwhile: the entry is removed at
// once, and a reader joins the queued rebuild, which then goes at read
// priority. If the rebuild fails, the entry is removed, since the old value
// must not be served any longer. With [Drop] the entry is removed. In every
// case a computation of key that is running is not kept as fresh.
//
// Invalidate only rebuilds values this node owns; near-cache copies of
// other nodes' keys are dropped (their owner rebuilds them).
func (w *Worker) Invalidate(ctx context.Context, key string) error {
	f, _, err := w.invalidate(key, w.cfg.Action, nil, time.Time{})
	if err != nil || f == nil {
		return err
	}
	select {
	case <-f.done:
		if f.err != nil && !errors.Is(f.err, ErrClosed) {
			return f.err
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// InvalidateArgs is Invalidate for the key of args.
func (w *Worker) InvalidateArgs(ctx context.Context, args Args) error {
	key, err := w.Key(args)
	if err != nil {
		return err
	}
	return w.Invalidate(ctx, key)
}

// Refresh rebuilds the entry of args whether or not it is cached (the node
// uses it for keys known from its created-cache records but evicted from
// memory), with the semantics of Invalidate.
func (w *Worker) Refresh(ctx context.Context, args Args) error {
	key, err := w.Key(args)
	if err != nil {
		return err
	}
	f, _, err := w.invalidate(key, Refresh, args, time.Time{})
	if err != nil || f == nil {
		return err
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Drop removes the entry of key (a near-cache copy, or an entry whose
// worker drops on invalidation), and makes sure no computation of key that
// is running gets kept.
func (w *Worker) Drop(key string) {
	_, _, _ = w.invalidate(key, Drop, nil, time.Time{})
}

// InvalidateAll invalidates every key of the worker held by this node and
// every computation running, and returns how many keys it acted on. Rebuilds
// run concurrently; it returns when all finished or ctx ended.
func (w *Worker) InvalidateAll(ctx context.Context) (int, error) {
	return w.InvalidateKeys(ctx, w.KeysWhere(nil))
}

// KeysWhere returns the keys of the worker's cached entries and running
// computations whose arguments satisfy pred (every key when pred is nil).
func (w *Worker) KeysWhere(pred func(Args) bool) []string {
	keys := make(map[string]struct{})
	for e := range w.cache.Entries() {
		if e.Label == w.cfg.Label && (pred == nil || pred(e.Args)) {
			keys[e.Key] = struct{}{}
		}
	}
	w.mu.Lock()
	for k, f := range w.flights {
		if pred == nil || pred(f.args) {
			keys[k] = struct{}{}
		}
	}
	w.mu.Unlock()
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	return out
}

// Scope selects the keys an invalidation acts on by who owns them.
type Scope uint8

const (
	// ScopeAll acts on every key: owned keys are rebuilt (or dropped, with
	// the Drop action), near-cache copies and fetches are dropped.
	ScopeAll Scope = iota
	// ScopeOwned acts only on the keys this node owns. A cluster applies an
	// event to the owners first so that a non-owner, once it dropped its
	// copy, can only fetch the rebuilt value from the owner.
	ScopeOwned
	// ScopeNear acts only on near-cache copies and on fetches from other
	// owners: the second half of ScopeOwned.
	ScopeNear
)

// InvalidateKeys invalidates keys as Invalidate does, with the rebuilds
// running concurrently, and returns how many of them were cached or being
// computed here. It returns when every rebuild finished or ctx ended.
func (w *Worker) InvalidateKeys(ctx context.Context, keys []string) (int, error) {
	return w.InvalidateKeysScope(ctx, keys, ScopeAll)
}

// InvalidateKeysScope is InvalidateKeys for the keys of keys in scope; the
// others are left alone (their generation is not bumped either). The
// rebuilds of a batch larger than the origin's limit are spread over the
// limiter's RefreshSpread per 1,000 keys; those that wait have their old
// value removed before it returns (see Invalidate).
func (w *Worker) InvalidateKeysScope(ctx context.Context, keys []string, scope Scope) (int, error) {
	var pending []*flight
	acted := 0
	spread := w.spread(len(keys))
	now := w.cache.clock.Now()
	// The keys go in batches under one hold of w.mu: taking it once per
	// key, beside the rebuilds that finish under it, makes a storm of
	// 10,000 keys a convoy of 10,000 lock hand-offs, seconds long on a
	// loaded machine.
	const batch = 256
	for len(keys) > 0 {
		n := min(batch, len(keys))
		w.mu.Lock()
		for _, k := range keys[:n] {
			f, present, err := w.invalidateScopeLocked(k, w.cfg.Action, nil, scope, w.due(now, spread))
			if err != nil {
				w.mu.Unlock()
				return acted, err
			}
			if present {
				acted++
			}
			if f != nil {
				pending = append(pending, f)
			}
		}
		w.mu.Unlock()
		keys = keys[n:]
	}
	var errs []error
	for _, f := range pending {
		select {
		case <-f.done:
			if f.err != nil && !errors.Is(f.err, ErrClosed) {
				errs = append(errs, f.err)
			}
		case <-ctx.Done():
			return acted, ctx.Err()
		}
	}
	return acted, errors.Join(errs...)
}

// spread returns the window over which the rebuilds of n keys start.
func (w *Worker) spread(n int) time.Duration {
	if w.lim == nil {
		return 0
	}
	return w.lim.spread(n)
}

// due returns a random start within spread of now (now itself when spread
// is 0).
func (w *Worker) due(now time.Time, spread time.Duration) time.Time {
	if spread <= 0 {
		return time.Time{}
	}
	return now.Add(time.Duration(w.cache.cfg.Rand() * float64(spread)))
}

// invalidate bumps the generation of key, detaches its running flight, and
// either removes the entry or schedules its rebuild (not before due), which
// it returns when it is running and the old entry stays in place until it
// ends. args, when given, are used if neither an entry nor a flight knows
// them. present says whether the key was cached or being computed.
func (w *Worker) invalidate(key string, action Action, args Args, due time.Time) (f *flight, present bool, err error) {
	return w.invalidateScope(key, action, args, ScopeAll, due)
}

func (w *Worker) invalidateScope(key string, action Action, args Args, scope Scope, due time.Time) (f *flight, present bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.invalidateScopeLocked(key, action, args, scope, due)
}

// invalidateScopeLocked is invalidateScope with w.mu held.
func (w *Worker) invalidateScopeLocked(key string, action Action, args Args, scope Scope, due time.Time) (f *flight, present bool, err error) {
	it, cached := w.cache.store.get(key)
	var e *Entry
	if cached {
		e = it.entry(&w.cache.meta, key, nil)
	}
	// A near-cache copy, or a fetch from the owner in flight: the owner
	// rebuilds; this node forgets what it has.
	near := cached && e.Owner != w.cache.cfg.Self || !w.ownsLocked(key)
	if scope == ScopeOwned && near || scope == ScopeNear && !near {
		return nil, false, nil
	}
	w.stats.invalidations.Add(1)
	g := w.gens[key]
	if g != nil {
		g.gen++
	}
	if old := w.flights[key]; old != nil {
		present = true
		if !near && old.queued.Load() {
			// Its getter has not started: it will read the changed data,
			// so it is kept, with its waiters, under the new generation.
			// The old value must not be served while it waits.
			old.gen = g.gen
			old.refresh = true
			if cached {
				it.withdraw()
			}
			w.stats.invRefreshed.Add(1)
			return nil, true, nil
		}
		delete(w.flights, key)
		if args == nil {
			args = old.args
		}
	}
	if near {
		action = Drop
	}
	if cached {
		present = true
		args = e.Args
		if action == Refresh && !w.readRecently(e, w.cache.clock.Now()) {
			// Nobody read it lately: rebuilding it would load the origin
			// for a value that may never be read. Its next reader fills it.
			action = Drop
			w.stats.invDropped.Add(1)
		}
	}
	if action == Drop || args == nil {
		w.cache.store.remove(key)
		return nil, present, nil
	}
	w.stats.refreshes.Add(1)
	w.stats.invRefreshed.Add(1)
	f, queued, err := w.scheduleFlightLocked(key, args, w.base, false, true, due)
	if err != nil {
		return nil, present, err
	}
	if queued {
		// The rebuild waits behind reads or for its turn in the storm: the
		// old value must not be served meanwhile, so the entry is
		// withdrawn and a reader joins the rebuild (at read priority).
		// Nothing to wait for.
		if cached {
			it.withdraw()
		}
		return nil, present, nil
	}
	// The entry stays in place so that readers see the old value, never a
	// miss, until the rebuild replaces it.
	return f, present, nil
}

// Put stores an entry obtained elsewhere: a hot entry handed over by a node
// that leaves the ring, or a value kept on disk. It is ignored when the
// entry has expired or the store holds a newer one for the key.
func (w *Worker) Put(e *Entry) bool {
	if e.Label != w.cfg.Label || e.Expired(w.cache.clock.Now()) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.cache.store.get(e.Key); ok && cur.created > e.CreatedAt.UnixNano() {
		return false
	}
	it, err := w.cache.newItem(e)
	if err != nil {
		return false
	}
	// Handed over because it was hot, or kept on disk for a restart: it
	// counts as read, so that the next invalidation rebuilds it.
	markRead(it, w.cache.clock.Now())
	w.cache.store.set(it)
	return true
}

// Sweep starts a background rebuild of every owned entry of the worker that
// is past its relevance deadline, and returns how many it found. A rebuild
// already running for a key is not started twice.
//
// The rebuilds go behind the reads of the origin's limiter; more of them
// than the limit are spread over its RefreshSpread per 1,000 keys.
func (w *Worker) Sweep() int {
	now := w.cache.clock.Now()
	var stale []*Entry
	for e := range w.cache.Entries() {
		if e.Label != w.cfg.Label || e.Owner != w.cache.cfg.Self || e.RelevanceTo.IsZero() || now.Before(e.RelevanceTo) || e.Expired(now) {
			continue
		}
		stale = append(stale, e)
	}
	spread := w.spread(len(stale))
	wall := w.cache.clock.Now()
	for _, e := range stale {
		w.background(e.Key, e.Args, w.base, false, w.due(wall, spread))
	}
	return len(stale)
}

func (w *Worker) sweepLoop() {
	c := w.cache
	defer c.wg.Done()
	for {
		t := c.clock.NewTimer(w.cfg.SweepInterval)
		select {
		case <-t.Chan():
			w.Sweep()
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

// Age returns how long ago e was created, on the worker's clock.
func (w *Worker) Age(e *Entry) time.Duration { return w.cache.clock.Now().Sub(e.CreatedAt) }

// ownsLocked reports whether this node owns key (always, without peers).
func (w *Worker) ownsLocked(key string) bool {
	if w.cache.cfg.Peers == nil {
		return true
	}
	_, remote := w.cache.cfg.Peers.PickPeer(key)
	return !remote
}
