package worker

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// ErrOriginBusy is wrapped by the error of a fill that never reached the
// origin: its wait for a slot of the origin's [Limiter] outlasted the
// caller's wait budget, the queue was full, or the origin asked to slow down
// (HTTP 429 or 503). The error is an [*OriginBusyError]; like a getter
// error, it is the owner's answer (no fallback fill) and is never cached.
var ErrOriginBusy = errors.New("worker: origin busy")

// OriginBusyError is the error of a fill the origin could not take: it
// says when to try again.
type OriginBusyError struct {
	// Origin names the limiter (an origin host, or a worker's label).
	Origin string
	// RetryAfter is how long the caller should wait before trying again
	// (at least a second: HTTP's Retry-After counts whole seconds).
	RetryAfter time.Duration
	// Reason says why: "queue wait", "queue full" or "origin back-pressure".
	Reason string
}

func (e *OriginBusyError) Error() string {
	return fmt.Sprintf("worker: origin busy: %s: %s, retry after %v", e.Origin, e.Reason, e.RetryAfter)
}

// Unwrap makes the error match [ErrOriginBusy].
func (e *OriginBusyError) Unwrap() error { return ErrOriginBusy }

// BackPressureError is what a getter returns when its origin asked it to
// slow down (an HTTP origin's 429 or 503). The fill's limiter then admits
// no new request of that origin for RetryAfter (at most a minute), the
// callers get an [*OriginBusyError], and nothing is cached.
type BackPressureError struct {
	// Status is the origin's answer, such as 429 or 503.
	Status int
	// RetryAfter is the origin's Retry-After; 0 when it sent none.
	RetryAfter time.Duration
}

func (e *BackPressureError) Error() string {
	return fmt.Sprintf("origin answered %d: asked to slow down, retry after %v", e.Status, e.RetryAfter)
}

// maxPause bounds how long one Retry-After of an origin stops its fills: a
// broken origin sending "Retry-After: 86400" must not freeze the cache.
const maxPause = time.Minute

// LimiterConfig configures a [Limiter].
type LimiterConfig struct {
	// Name names the origin in errors and metrics, such as its host.
	// Default "origin".
	Name string
	// MaxConcurrent bounds the getter runs (origin requests) in flight
	// through the limiter. Default 64.
	MaxConcurrent int
	// MaxQueue bounds the reads waiting for a slot; a read past it is
	// answered at once with ErrOriginBusy. Refreshes are not counted: they
	// are bounded by the keys they rebuild. Default 4096.
	MaxQueue int
	// RefreshSpread is the window over which an invalidation or sweep
	// spreads the starts of its rebuilds, per 1,000 keys (an invalidation of
	// 10,000 keys starts them over 10 s by default). Batches that fit in
	// the limit start at once. Default 1s; negative: no spreading.
	RefreshSpread time.Duration
	// Clock times the queue: read budgets, spread rebuilds and origin
	// pauses. Default SystemClock; a Cache's own limiter uses the cache's.
	Clock Clock
}

// DefaultLimiterConfig returns the defaults: 64 in flight, 4,096 reads
// queued, rebuild storms spread over 1 s per 1,000 keys.
func DefaultLimiterConfig() LimiterConfig {
	return LimiterConfig{Name: "origin", MaxConcurrent: 64, MaxQueue: 4096, RefreshSpread: time.Second}
}

// LimiterStats are the counters of a [Limiter].
type LimiterStats struct {
	Name string `json:"name"`
	// Limit is the number of origin requests allowed in flight.
	Limit int `json:"limit"`
	// InFlight are the origin requests running now, Peak the most there
	// ever were at once.
	InFlight int `json:"in_flight"`
	Peak     int `json:"peak"`
	// QueuedReads and QueuedRefreshes wait for a slot now.
	QueuedReads     int `json:"queued_reads"`
	QueuedRefreshes int `json:"queued_refreshes"`
	// Admitted counts the slots granted; Busy the fills answered
	// ErrOriginBusy without reaching the origin (queue wait or queue full);
	// BackPressure the origin's answers asking to slow down.
	Admitted     int64 `json:"admitted"`
	Busy         int64 `json:"busy"`
	BackPressure int64 `json:"back_pressure"`
}

// Limiter bounds the concurrent requests to one origin, for every worker
// it is given to (several workers reading one database share one). Reads
// that miss are admitted before rebuilds (invalidations, sweeps, early and
// stale-while-revalidate refreshes); a read waits at most its wait budget,
// a rebuild as long as it takes. Create it with [NewLimiter]; it is safe
// for concurrent use and holds no goroutine.
//
// A hand-written queue rather than golang.org/x/sync/semaphore: the
// semaphore has neither priorities nor grants that start a rebuild without
// a goroutine parked per waiting key (an invalidation of 100,000 keys).
type Limiter struct {
	cfg LimiterConfig

	mu struct {
		sync.Mutex
		inFlight int
		peak     int
		queue    ticketHeap // waiting reads first, then refreshes by due time
		reads    int        // tickets of read priority in queue
		seq      uint64
		paused   time.Time       // no grant before it (origin back-pressure)
		timer    clockwork.Timer // wakes the queue at timerAt; nil until needed
		timerAt  time.Time
	}
	admitted, busy, backPressure atomic.Int64
}

// NewLimiter validates cfg and fills its defaults; the caller's cfg is not
// modified. Errors wrap [ErrConfig] and name the field.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	d := DefaultLimiterConfig()
	if cfg.Name == "" {
		cfg.Name = d.Name
	}
	switch {
	case cfg.MaxConcurrent < 0:
		return nil, fmt.Errorf("%w: max_concurrent_fills must be > 0, got %d", ErrConfig, cfg.MaxConcurrent)
	case cfg.MaxQueue < 0:
		return nil, fmt.Errorf("%w: max_queued_fills must be >= 0, got %d", ErrConfig, cfg.MaxQueue)
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = d.MaxConcurrent
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = d.MaxQueue
	}
	if cfg.RefreshSpread == 0 {
		cfg.RefreshSpread = d.RefreshSpread
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	return &Limiter{cfg: cfg}, nil
}

// Config returns the limiter's settings in force.
func (l *Limiter) Config() LimiterConfig { return l.cfg }

// Stats returns the limiter's counters.
func (l *Limiter) Stats() LimiterStats {
	l.mu.Lock()
	s := LimiterStats{Name: l.cfg.Name, Limit: l.cfg.MaxConcurrent, InFlight: l.mu.inFlight, Peak: l.mu.peak,
		QueuedReads: l.mu.reads, QueuedRefreshes: len(l.mu.queue) - l.mu.reads}
	l.mu.Unlock()
	s.Admitted, s.Busy, s.BackPressure = l.admitted.Load(), l.busy.Load(), l.backPressure.Load()
	return s
}

// spread returns the window over which n rebuilds start: none when they
// fit in the limit.
func (l *Limiter) spread(n int) time.Duration {
	if n <= l.cfg.MaxConcurrent || l.cfg.RefreshSpread <= 0 {
		return 0
	}
	return time.Duration(int64(l.cfg.RefreshSpread) * int64(n) / 1000)
}

type priority uint8

const (
	prioRead priority = iota
	prioRefresh
)

// ticket is a place in the queue: a read parked on ready, or a rebuild
// that grant starts.
type ticket struct {
	prio  priority
	due   time.Time // refreshes: not granted before it
	seq   uint64
	index int // in the queue; -1 once granted or cancelled
	ready chan struct{}
	grant func() // called with the limiter's lock held: must not block
}

type ticketHeap []*ticket

func (h ticketHeap) Len() int { return len(h) }
func (h ticketHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	if a.prio == prioRefresh && !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	return a.seq < b.seq
}
func (h ticketHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *ticketHeap) Push(x any) {
	t := x.(*ticket)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *ticketHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// busyError returns the error of a fill turned away for reason.
func (l *Limiter) busyError(reason string, now time.Time) error {
	l.busy.Add(1)
	return &OriginBusyError{Origin: l.cfg.Name, RetryAfter: l.retryAfter(now), Reason: reason}
}

func (l *Limiter) retryAfter(now time.Time) time.Duration {
	l.mu.Lock()
	d := l.mu.paused.Sub(now)
	l.mu.Unlock()
	return max(d, time.Second)
}

// acquire waits for a slot for a read's fill, at most budget on the
// limiter's clock (not at all when budget is 0) and until ctx ends. On success the caller must
// call release once the origin answered.
func (l *Limiter) acquire(ctx context.Context, budget time.Duration) error {
	now := l.cfg.Clock.Now()
	l.mu.Lock()
	// Every change of the queue ends with dispatchLocked, so a free slot
	// here means no read is queued: taking it jumps nobody.
	if l.mu.inFlight < l.cfg.MaxConcurrent && !now.Before(l.mu.paused) {
		l.takeLocked()
		l.mu.Unlock()
		return nil
	}
	if l.mu.reads >= l.cfg.MaxQueue || budget <= 0 {
		l.mu.Unlock()
		return l.busyError("queue full", now)
	}
	t := &ticket{prio: prioRead, ready: make(chan struct{})}
	t.grant = func() { close(t.ready) }
	l.pushLocked(t)
	l.dispatchLocked(now)
	l.mu.Unlock()

	timer := l.cfg.Clock.NewTimer(budget)
	select {
	case <-t.ready:
		timer.Stop()
		return nil
	case <-timer.Chan():
	case <-ctx.Done():
		timer.Stop()
	}
	if !l.cancel(t) {
		return nil // granted meanwhile: the slot is ours
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A fill that never started does not run later for nobody: the
	// caller's budget is over, it is told to come back.
	return l.busyError("queue wait", l.cfg.Clock.Now())
}

// schedule queues a rebuild not to start before due (zero: as soon as a
// slot is free); grant is called, with the limiter's lock held, when it
// gets its slot, and must start the rebuild without blocking (which calls
// release when done). It returns nil when the rebuild was granted at once,
// else its ticket. A rebuild with a due time, one of a spread storm, is
// never granted at once, even when its time has passed (the loop queueing
// a large storm on a loaded machine runs past the first due times): it is
// queued, so that its invalidation does not wait for it.
func (l *Limiter) schedule(due time.Time, grant func()) *ticket {
	now := l.cfg.Clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if due.IsZero() && l.mu.inFlight < l.cfg.MaxConcurrent && !now.Before(l.mu.paused) {
		l.takeLocked()
		grant()
		return nil
	}
	t := &ticket{prio: prioRefresh, due: due, grant: grant}
	l.pushLocked(t)
	l.dispatchLocked(now)
	return t
}

// promote moves a queued rebuild that a read now waits for to read
// priority.
func (l *Limiter) promote(t *ticket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.index < 0 || t.prio == prioRead {
		return
	}
	t.prio = prioRead
	l.mu.reads++
	heap.Fix(&l.mu.queue, t.index)
	l.dispatchLocked(l.cfg.Clock.Now())
}

// cancel removes t from the queue and reports whether it was still there
// (false: it was granted).
func (l *Limiter) cancel(t *ticket) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&l.mu.queue, t.index)
	if t.prio == prioRead {
		l.mu.reads--
	}
	return true
}

// release returns a slot. pause, when positive, is the origin's request to
// send nothing for that long.
func (l *Limiter) release(pause time.Duration) {
	now := l.cfg.Clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.inFlight--
	if pause > 0 {
		if until := now.Add(min(pause, maxPause)); until.After(l.mu.paused) {
			l.mu.paused = until
		}
	}
	l.dispatchLocked(now)
}

func (l *Limiter) pushLocked(t *ticket) {
	l.mu.seq++
	t.seq = l.mu.seq
	if t.prio == prioRead {
		l.mu.reads++
	}
	heap.Push(&l.mu.queue, t)
}

func (l *Limiter) takeLocked() {
	l.mu.inFlight++
	l.mu.peak = max(l.mu.peak, l.mu.inFlight)
	l.admitted.Add(1)
}

// dispatchLocked grants the free slots to the queue's head, reads first,
// and arms the timer for the next rebuild due or the end of a pause.
func (l *Limiter) dispatchLocked(now time.Time) {
	q := &l.mu.queue
	for l.mu.inFlight < l.cfg.MaxConcurrent && q.Len() > 0 {
		if now.Before(l.mu.paused) {
			l.wakeAtLocked(l.mu.paused)
			return
		}
		t := (*q)[0]
		if t.prio == prioRefresh && now.Before(t.due) {
			l.wakeAtLocked(t.due)
			return
		}
		heap.Pop(q)
		if t.prio == prioRead {
			l.mu.reads--
		}
		l.takeLocked()
		t.grant()
	}
}

// wakeAtLocked makes sure the queue is looked at again at at.
func (l *Limiter) wakeAtLocked(at time.Time) {
	now := l.cfg.Clock.Now()
	if l.mu.timer != nil && l.mu.timerAt.After(now) && !l.mu.timerAt.After(at) {
		return // an earlier wake-up is set
	}
	l.mu.timerAt = at
	if l.mu.timer == nil {
		l.mu.timer = l.cfg.Clock.AfterFunc(at.Sub(now), l.wake)
		return
	}
	l.mu.timer.Reset(at.Sub(now))
}

func (l *Limiter) wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dispatchLocked(l.cfg.Clock.Now())
}
