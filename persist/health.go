package persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// Storage faults.
//
// The records are an index of what a node caches, not the cache: a full,
// read-only or failing disk must cost the records, never the node. Pebble
// treats a failed WAL write as fatal to the database (its commit pipeline
// is left broken) and reports it, like a failed MANIFEST write, through
// Logger.Fatalf, expecting the call not to return; failed flushes and
// compactions go to EventListener.BackgroundError and are retried for
// ever. The store turns each of these, and a read that fails with a disk
// error, into a fault (see fault): the database is given up, never written
// again, and closed by the writer goroutine; the store is then degraded.
//
// While degraded, every operation but PutAsync returns ErrUnavailable at
// once, without touching the disk; PutAsync keeps queueing records (within
// QueueSize; beyond it they are dropped and counted in Stats.Dropped), and
// the records of the batch that was being committed when the fault hit go
// back to the queue. The writer reopens the database with backoff
// (ReopenBackoff doubling up to ReopenBackoffMax); once it opens, the queue
// is written as usual. Health says which state the store is in.
//
// Fatalf returning is safe for the calls a disk fault can reach in this
// version of Pebble: after a failed commit DB.Apply returns (nil: the
// writer checks the fault flag after each commit instead), and after a
// failed MANIFEST write the version update returns its error.

// healthState is the fault history of a Store. Its mutex guards every
// field; fault takes it from Pebble's goroutines, some of which hold
// Pebble's own mutex, so nothing here calls into Pebble or blocks.
type healthState struct {
	mu        sync.Mutex
	cause     error     // the fault that degraded the store; nil when healthy
	since     time.Time // when cause was reported
	faults    uint64    // faults since Open
	reopens   uint64    // successful reopens since Open
	attempts  uint64    // failed reopen attempts since the last fault
	lastErr   error     // the last reopen attempt's error
	moved     []string  // where corrupt databases were moved, oldest first
	droppedAt uint64    // Stats.Dropped when the fault was reported
	lastLog   time.Time // last "still unavailable" log line
	lastFault time.Time // last "records degraded" log line at Error
	reopened  time.Time // when the database last reopened
}

// Health is the state of a Store's database.
type Health struct {
	// Degraded is true from a storage fault until the database is open
	// again: records are not written (PutAsync queues them within
	// QueueSize) and reads answer ErrUnavailable.
	Degraded bool
	// Since is when the current fault was reported; zero when healthy.
	Since time.Time
	// Cause is the fault, or the last reopen attempt's error; "" when
	// healthy.
	Cause string
	// ReopenAttempts counts the failed reopen attempts of the current
	// fault.
	ReopenAttempts uint64
	// Faults and Reopens count the faults and successful reopens since
	// Open.
	Faults, Reopens uint64
	// MovedAside lists the directories that corrupt databases were moved to
	// by this store (Config.OnCorruption), oldest first.
	MovedAside []string
}

// Health returns the state of the store's database.
func (s *Store) Health() Health {
	h := &s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := Health{Faults: h.faults, Reopens: h.reopens, ReopenAttempts: h.attempts, MovedAside: slices.Clone(h.moved)}
	if h.cause != nil {
		out.Degraded, out.Since, out.Cause = true, h.since, h.cause.Error()
		if h.lastErr != nil {
			out.Cause = h.lastErr.Error()
		}
	}
	return out
}

// errFatal wraps what Pebble reported through Logger.Fatalf.
var errFatal = errors.New("persist: pebble gave the database up")

// isStorageFault reports whether err means the disk, not the caller, is at
// fault: the database is given up and reopened.
func isStorageFault(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EROFS, syscall.EIO, syscall.EDQUOT, errFatal} {
		if errors.Is(err, e) {
			return true
		}
	}
	return pebble.IsCorruptionError(err)
}

// isCorruption reports whether err from opening a database means its
// content is unreadable (as opposed to a disk that refuses writes).
func isCorruption(err error) bool {
	return pebble.IsCorruptionError(err) || errors.Is(err, ErrCorrupt)
}

// fault reports a storage fault on the open database. It never blocks:
// Pebble calls it from its own goroutines. The first fault of a database
// wins; the writer closes the database the next time it runs.
func (s *Store) fault(err error) {
	h := &s.health
	h.mu.Lock()
	if h.cause == nil {
		h.cause, h.since, h.attempts, h.lastErr = err, time.Now(), 0, nil
		h.faults++
		h.droppedAt = s.stats.dropped.Load()
	}
	h.mu.Unlock()
	s.failed.Store(true)
	s.signal()
}

// unavailable is the error of an operation refused while degraded.
func (s *Store) unavailable() error {
	h := &s.health
	h.mu.Lock()
	cause := cmpOr(h.lastErr, h.cause)
	h.mu.Unlock()
	if cause == nil {
		return ErrUnavailable
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// startDegraded makes a store whose first open failed start degraded.
func (s *Store) startDegraded(err error) {
	s.fault(err)
	s.mu.degraded = true // before the writer starts: no lock needed
	s.log.Error("persist: records unavailable at start: the node serves from memory and reopens them with backoff",
		"dir", s.cfg.Dir, "err", err)
}

// pebbleOptions returns the options of every open of the database: its
// sizing (see memTableSize) and the fault hooks.
func (s *Store) pebbleOptions() *pebble.Options {
	l := s.cfg.Logger.With("component", "pebble")
	opts := &pebble.Options{
		FS:                 s.cfg.FS,
		Logger:             pebbleLogger{l: l, fault: s.fault},
		FormatMajorVersion: pebble.FormatNewest,
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				// Pebble retries a failed flush at once, in a loop, until
				// the writer closes the database: log the first only.
				if !isStorageFault(err) || !s.failed.Load() {
					l.Error("pebble background error", "err", err)
				}
				if isStorageFault(err) {
					s.fault(err)
				}
			},
		},
	}
	// Every write of a record first reads the key's previous record, and
	// for a new key that read is a miss: bloom filters let it skip the
	// tables instead of reading their index blocks. Later levels inherit
	// L0's policy.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	opts.CacheSize = s.cacheSize()
	opts.MemTableSize = s.memTableSize()
	return opts
}

// openDB opens the database, checks and loads it (init) and publishes it
// to readers. A corrupt database is moved aside once (Config.OnCorruption)
// and an empty one opened in its place. It runs in Open and then in the
// writer goroutine only.
func (s *Store) openDB() error {
	dir := s.cfg.Dir
	if dir == "" {
		dir = "mem"
	}
	moved := false
	for {
		db, err := pebble.Open(dir, s.pebbleOptions())
		if err != nil {
			err = fmt.Errorf("persist: open %q: %w", s.cfg.Dir, err)
		} else if err = s.init(db); err != nil {
			err = errors.Join(err, closePebble(db))
		}
		if err == nil {
			s.closeMu.Lock()
			s.db = db
			s.closeMu.Unlock()
			s.wtx = nil // its txn reads the database it was built on
			return nil
		}
		if moved || !isCorruption(err) || s.cfg.OnCorruption != CorruptionMoveAside || s.cfg.Dir == "" {
			return err
		}
		to, merr := s.moveAside()
		if merr != nil {
			return fmt.Errorf("%w; moving it aside failed: %w", err, merr)
		}
		s.log.Error("persist: the records database is corrupt: moved aside, starting with no records",
			"dir", s.cfg.Dir, "moved_to", to, "err", err)
		moved = true
	}
}

// corruptSuffix is the layout of the time in a moved-aside directory's name.
const corruptSuffix = "20060102T150405.000000000Z"

// moveAside renames the database directory to Dir.corrupt-<UTC time> and
// removes the oldest such directories beyond Config.KeepCorrupt.
func (s *Store) moveAside() (string, error) {
	fs, dir := s.cfg.FS, strings.TrimRight(s.cfg.Dir, "/")
	to := dir + ".corrupt-" + time.Now().UTC().Format(corruptSuffix)
	if err := fs.Rename(dir, to); err != nil {
		return "", err
	}
	h := &s.health
	h.mu.Lock()
	h.moved = append(h.moved, to)
	h.mu.Unlock()
	names, err := fs.List(fs.PathDir(dir))
	if err != nil {
		return to, nil // the pruning is best effort
	}
	prefix := fs.PathBase(dir) + ".corrupt-"
	var old []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			old = append(old, n)
		}
	}
	slices.Sort(old) // the time layout sorts as text
	keep := max(s.cfg.KeepCorrupt, 0)
	for _, n := range old[:max(len(old)-keep, 0)] {
		p := fs.PathJoin(fs.PathDir(dir), n)
		if err := fs.RemoveAll(p); err != nil {
			s.log.Warn("persist: cannot remove an old corrupt records directory", "dir", p, "err", err)
		}
	}
	return to, nil
}

// degrade closes the database after a fault. Writer goroutine only.
func (s *Store) degrade() {
	s.mu.Lock()
	s.mu.degraded = true
	s.wakeRoomLocked()
	s.mu.Unlock()
	s.closeMu.Lock()
	db := s.db
	s.db = nil
	s.closeMu.Unlock()
	// Closing a failed database reports the fault again (the WAL cannot be
	// closed cleanly): the error says nothing new, unless Close hung.
	if err := closePebble(db); errors.Is(err, errAbandoned) {
		s.log.Error("persist: the failed records database did not close", "dir", s.cfg.Dir, "err", err)
	}
	// A database can reopen on a disk that is still full (opening writes
	// little) and fail again at the next write: the line is logged once a
	// minute at most.
	hs := &s.health
	hs.mu.Lock()
	cause := hs.cause
	logNow := time.Since(hs.lastFault) >= time.Minute
	if logNow {
		hs.lastFault = time.Now()
	}
	hs.mu.Unlock()
	lvl := slog.LevelDebug
	if logNow {
		lvl = slog.LevelError
	}
	s.log.Log(context.Background(), lvl, "persist: records degraded: the node serves and fills from memory; records are queued in memory and written when the database reopens",
		"dir", s.cfg.Dir, "err", cause, "queue_bound", s.cfg.QueueSize)
}

// nextBackoff is the wait before the first reopen after a fault: the
// initial backoff, unless the database failed soon after it reopened (a
// disk still full), when the backoff goes on doubling from last.
func (s *Store) nextBackoff(last time.Duration) time.Duration {
	s.health.mu.Lock()
	reopened := s.health.reopened
	s.health.mu.Unlock()
	if !reopened.IsZero() && time.Since(reopened) < s.cfg.ReopenBackoffMax {
		return min(2*last, s.cfg.ReopenBackoffMax)
	}
	return s.cfg.ReopenBackoff
}

// tryReopen opens the database again. Writer goroutine only. It returns
// whether the store is healthy again.
func (s *Store) tryReopen() bool {
	s.failed.Store(false)
	err := s.openDB()
	h := &s.health
	if err == nil && s.failed.Load() {
		// A fault while loading: give the new handle up too.
		s.closeMu.Lock()
		db := s.db
		s.db = nil
		s.closeMu.Unlock()
		_ = closePebble(db)
		err = s.unavailable()
	}
	if err != nil {
		s.failed.Store(false)
		h.mu.Lock()
		h.attempts++
		h.lastErr = err
		logNow := time.Since(h.lastLog) >= time.Minute
		if logNow {
			h.lastLog = time.Now()
		}
		attempts := h.attempts
		h.mu.Unlock()
		if logNow {
			s.log.Warn("persist: records still unavailable", "dir", s.cfg.Dir, "attempts", attempts, "err", err)
		}
		return false
	}
	h.mu.Lock()
	since, dropped := h.since, s.stats.dropped.Load()-h.droppedAt
	h.cause, h.lastErr, h.attempts = nil, nil, 0
	h.reopens++
	h.reopened = time.Now()
	h.mu.Unlock()
	s.mu.Lock()
	s.mu.degraded = false
	queued := s.mu.q.live
	s.mu.Unlock()
	s.log.Info("persist: records reopened; the records queued meanwhile are being written",
		"dir", s.cfg.Dir, "degraded_for", time.Since(since).Round(time.Millisecond), "queued", queued,
		"dropped_while_degraded", dropped)
	return true
}

// errAbandoned is the error of a Close that did not return.
var errAbandoned = errors.New("persist: pebble close did not return; the database handle is abandoned")

// closeTimeout bounds the wait for Pebble's Close of a database: one
// whose commit pipeline panicked may never close (a lock left held), and
// the writer must go on.
const closeTimeout = 10 * time.Second

// closePebble closes db, turning a panic of a broken database into an
// error, and gives up after closeTimeout (the handle is then leaked, and
// its directory stays locked until the process ends: reopening fails and
// the store stays degraded, which the error says).
func closePebble(db *pebble.DB) error {
	if db == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("persist: pebble close panicked: %v", r)
			}
		}()
		done <- db.Close()
	}()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w after %v", errAbandoned, closeTimeout)
	}
}

// pebbleLogger sends Pebble's logs to slog, and its fatal errors to the
// store as faults.
type pebbleLogger struct {
	l     *slog.Logger
	fault func(error)
}

var _ pebble.Logger = pebbleLogger{}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Info(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf reports a fault and returns: a library must not exit the process,
// and a panic in one of Pebble's goroutines would (see Storage faults).
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	p.fault(fmt.Errorf("%w: %s", errFatal, msg))
}
