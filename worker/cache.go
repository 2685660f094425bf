package worker

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Errors returned by a [Cache].
var (
	// ErrDuplicateLabel is returned by Register for a label already in use.
	ErrDuplicateLabel = errors.New("worker: duplicate label")
	// ErrUnknownLabel is returned for a label no worker has.
	ErrUnknownLabel = errors.New("worker: unknown label")
	// ErrClosed is returned by calls on a closed cache.
	ErrClosed = errors.New("worker: cache closed")
	// ErrFill wraps the error (or panic) of a getter. Such errors are
	// returned to every caller that waited for the fill and are never cached.
	ErrFill = errors.New("worker: getter failed")
	// ErrFillTimeout wraps ErrFill for a getter that ran past its deadline
	// (the wait budget, or the worker's FillTimeout), here or on the
	// key's owner: the HTTP API's fill_timeout, where other fill errors
	// are origin_error.
	ErrFillTimeout = fmt.Errorf("%w: timed out", ErrFill)
)

// CacheConfig configures a [Cache].
type CacheConfig struct {
	// MaxBytes bounds the bytes of cached entries (values, keys and a fixed
	// per-entry overhead); the least valuable entries are evicted beyond it.
	// Default 256 MiB.
	MaxBytes int64
	// Defaults are the process-wide defaults of every worker field. The zero
	// value means [DefaultPolicy].
	Defaults Policy
	// Clock is the time source. Default [SystemClock].
	Clock Clock
	// Self is this node's name, written as the Owner of the entries it fills.
	// Default "".
	Self string
	// Peers routes keys owned by other nodes. Default nil: this cache owns
	// every key.
	Peers PeerPicker
	// NoNearCache stops this cache from keeping copies of entries fetched
	// from their owner: every Get of another node's key then goes to the
	// owner. Default false (copies are kept, and dropped by invalidations
	// and ring changes).
	NoNearCache bool
	// OnFill is called after an owned fill was stored and before the callers
	// that waited for it are released, with the policy the fill ran with: the
	// node writes the created-cache record there (synchronously unless
	// DelayLogging). Default nil.
	OnFill func(e *Entry, p Policy)
	// Logger receives background errors. Default: discarded.
	Logger *slog.Logger
	// Rand returns a uniform float in [0, 1) for the early-refresh draw.
	// Default math/rand/v2.Float64.
	Rand func() float64
}

// Cache holds the workers of one node and the byte-bounded store their
// entries live in. It is safe for concurrent use. Close stops background
// rebuilds and sweeps; it is safe to call twice.
type Cache struct {
	cfg   CacheConfig
	clock Clock
	store *store
	meta  interner

	ctx    context.Context // cancelled by Close: stops fills and loops
	cancel context.CancelFunc
	wg     sync.WaitGroup // background flights and sweep loops

	mu      sync.RWMutex
	workers map[string]*Worker // guarded by mu
	closed  bool               // guarded by mu
}

// NewCache validates cfg, fills its defaults and returns an empty cache.
// The caller's cfg is not modified.
func NewCache(cfg CacheConfig) (*Cache, error) {
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: max_bytes must be > 0, got %d", ErrConfig, cfg.MaxBytes)
	}
	if cfg.Defaults == (Policy{}) {
		cfg.Defaults = DefaultPolicy()
	}
	if err := cfg.Defaults.Validate(); err != nil {
		return nil, fmt.Errorf("defaults: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	c := &Cache{cfg: cfg, clock: cfg.Clock, workers: make(map[string]*Worker)}
	store, err := newStore(cfg.MaxBytes, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("worker: store: %w", err)
	}
	c.store = store
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Go(func() { store.reap(c.ctx) })
	return c, nil
}

// Register adds a worker. The worker's settings are resolved against the
// cache's defaults and validated; errors wrap [ErrConfig] and name the field,
// or are [ErrDuplicateLabel].
func (c *Cache) Register(cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pol := c.cfg.Defaults.With(cfg.Settings)
	if err := pol.Validate(); err != nil {
		return nil, fmt.Errorf("worker %q: %w", cfg.Label, err)
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Second
	}
	if cfg.RefreshIfReadWithin == 0 {
		cfg.RefreshIfReadWithin = 5 * time.Minute
	}
	lim := cfg.Limiter
	if lim == nil && cfg.MaxConcurrentFills >= 0 {
		var err error
		if lim, err = NewLimiter(LimiterConfig{Name: cfg.Label, MaxConcurrent: cfg.MaxConcurrentFills, Clock: c.clock}); err != nil {
			return nil, fmt.Errorf("worker %q: %w", cfg.Label, err)
		}
	}
	w := &Worker{
		cache:   c,
		cfg:     cfg,
		base:    pol,
		lim:     lim,
		flights: make(map[string]*flight),
		gens:    make(map[string]*keyGen),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if _, dup := c.workers[cfg.Label]; dup {
		return nil, fmt.Errorf("%w: %q", ErrDuplicateLabel, cfg.Label)
	}
	c.workers[cfg.Label] = w
	if cfg.Sweep {
		c.wg.Add(1)
		go w.sweepLoop()
	}
	return w, nil
}

// Worker returns the worker of label.
func (c *Cache) Worker(label string) (*Worker, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	w, ok := c.workers[label]
	return w, ok
}

// Workers returns the registered workers sorted by label.
func (c *Cache) Workers() []*Worker {
	c.mu.RLock()
	ws := make([]*Worker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	c.mu.RUnlock()
	slices.SortFunc(ws, func(a, b *Worker) int {
		if a.cfg.Label < b.cfg.Label {
			return -1
		}
		if a.cfg.Label > b.cfg.Label {
			return 1
		}
		return 0
	})
	return ws
}

// Defaults returns the process-wide defaults in force.
func (c *Cache) Defaults() Policy { return c.cfg.Defaults }

// Clock returns the cache's clock.
func (c *Cache) Clock() Clock { return c.clock }

// Lookup returns the unexpired entry of key, without counting a hit.
func (c *Cache) Lookup(key string) (*Entry, bool) {
	it, ok := c.store.get(key)
	if !ok || it.expired(c.clock.Now().UnixNano()) {
		return nil, false
	}
	return it.entry(&c.meta, key, nil), true
}

// Entries iterates over the entries in the store, in no particular order.
// Each is built for the iteration (its arguments decoded).
func (c *Cache) Entries() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for k, it := range c.store.all(c.clock.Now().UnixNano()) {
			if !yield(it.entry(&c.meta, k, nil)) {
				return
			}
		}
	}
}

// EntriesWithoutArgs is Entries with the entries' Args left nil, not
// decoded: for the scans that need their keys, owners and deadlines only
// (a ring change over a million entries).
func (c *Cache) EntriesWithoutArgs() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for k, it := range c.store.all(c.clock.Now().UnixNano()) {
			e := new(Entry)
			it.fillArgs(&c.meta, e, k, nil, false)
			if !yield(e) {
				return
			}
		}
	}
}

// Hottest iterates over the entries from the most to the least valuable to
// keep, as the eviction policy sees them. The store holds its eviction lock
// for the whole iteration: the loop body must not call into a worker (whose
// lock is held while entries are removed, which takes the eviction lock);
// collect the entries first (see node's handoff).
func (c *Cache) Hottest() iter.Seq[*Entry] {
	return func(yield func(*Entry) bool) {
		for it := range c.store.hottest(c.clock.Now().UnixNano()) {
			if !yield(it.entry(&c.meta, it.key(), nil)) {
				return
			}
		}
	}
}

// DropIf removes every entry for which drop returns true and returns how
// many it removed. The node uses it for near-cache copies of partitions whose
// owner changed. It does not guard against fills in flight: use
// [Worker.Drop] for invalidations.
func (c *Cache) DropIf(drop func(*Entry) bool) int {
	n := 0
	for k, it := range c.store.all(math.MinInt64) { // expired ones too

		if drop(it.entry(&c.meta, k, nil)) {
			if c.store.remove(k) {
				n++
			}
		}
	}
	return n
}

// Len returns the number of entries held.
func (c *Cache) Len() int { return c.store.len() }

// Bytes returns the weight of the entries held, in bytes.
func (c *Cache) Bytes() uint64 { return c.store.bytes() }

// Close stops background rebuilds and sweeps and waits for them. Getters
// still running see their context cancelled. Safe to call twice.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ws := make([]*Worker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	c.cancel()
	for _, w := range ws {
		w.cancelQueued()
	}
	c.wg.Wait()
	c.store.close()
	return nil
}

func (c *Cache) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}
