package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Errors returned by the store. They are checked with errors.Is.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("persist: store closed")
	// ErrNotFound is returned by Get, Value and Ack when there is nothing
	// under the key or ID.
	ErrNotFound = errors.New("persist: not found")
	// ErrQueueFull is returned by PutAsync when the write was dropped
	// because the queue was full and held no pending write of the same key.
	ErrQueueFull = errors.New("persist: async queue full, record dropped")
	// ErrInvalid is wrapped by errors about invalid arguments.
	ErrInvalid = errors.New("persist: invalid argument")
	// ErrValuesDisabled is returned by PutValue and Value when the store
	// was opened without Config.KeepValues.
	ErrValuesDisabled = errors.New("persist: values are not kept (Config.KeepValues is false)")
	// ErrCorrupt is wrapped by errors about stored data that cannot be
	// decoded.
	ErrCorrupt = errors.New("persist: corrupt data")
	// ErrUnavailable is returned by every operation but PutAsync while the
	// store is degraded (see Health): its database failed (a full,
	// read-only or failing disk) and is being reopened in the background.
	// The error also wraps the fault.
	ErrUnavailable = errors.New("persist: records unavailable (storage fault; reopening)")
	// ErrOverBudget is returned by Put and PutAsync when an in-memory
	// database holds a quarter more records than its memory budget allows
	// and the removal of the earliest ones is behind: the record is not
	// written (counted in Stats.Dropped).
	ErrOverBudget = errors.New("persist: in-memory records over their memory budget, record dropped")
)

// Pebble sizing. A record is about 6 keys; with Pebble's 4 MiB default
// memtable, a burst of async records is flushed in many small L0 tables
// whose compactions rewrite the base level again and again (measured: a
// third more CPU per record, see docs/BENCHMARKS.md). Pebble grows
// memtables from 256 KiB up to this size, so an idle or small store (a
// test node) does not pay for it. The block cache holds the index and
// filter blocks that the read-before-write of every record touches.
const (
	memTableSize   = 16 << 20
	blockCacheSize = 64 << 20
)

// formatVersion is the version of the key layout, stored under the meta key
// "format". Version 1 wrote whole shapes in the value index (see keys.go);
// Open drops the records, indexes and values of a version-1 database (they
// index a cache: fills write them again) and keeps its outbox, whose
// layout did not change. It refuses any other version.
const (
	formatVersion   = 2
	formatVersionV1 = 1
)

// Config configures a Store. The zero value of every field means its
// default; Open never modifies the caller's Config.
type Config struct {
	// Dir is the Pebble directory, created if missing. "" keeps everything
	// in memory (Pebble's vfs.NewMem): the same code, nothing survives
	// Close.
	Dir string
	// KeepValues enables PutValue and Value, so that a restarted owner can
	// answer hits for unexpired keys at once. Default false.
	KeepValues bool
	// QueueSize bounds the writes PutAsync keeps pending. Default 65536,
	// or within MemoryBudget an eighth of it at 1 KiB a record (at least
	// two batches).
	QueueSize int
	// OnBudgetRemoved is called with the keys whose records an in-memory
	// database removed to stay within MemoryBudget (the records that
	// expire first), not those removed at their expiry: the node drops
	// their entries, which no record indexes any longer. Default nil.
	OnBudgetRemoved func(keys []string)
	// QueueWait is how long PutAsync waits for room in a full queue (the
	// writer is behind a burst) before it drops the record with
	// ErrQueueFull: a bounded queue pushes back on its producers rather
	// than lose what they asked to record. It does not wait while the
	// store is degraded (nothing drains the queue then). Default 1s;
	// negative: never wait.
	QueueWait time.Duration
	// BatchSize is the most async records the writer commits in one batch.
	// Default 1024.
	BatchSize int
	// FlushInterval is the longest an async record waits before the writer
	// commits it, unless the queue fills a batch sooner. Default 50ms.
	FlushInterval time.Duration
	// SweepInterval is how often the background loop removes expired
	// records and values. Default 1s; negative disables the loop (call
	// RemoveExpired yourself).
	SweepInterval time.Duration
	// Now is the clock of the sweep loop and of Value's expiry check.
	// Default time.Now.
	Now func() time.Time
	// Logger receives the store's and Pebble's logs. Default: discarded.
	Logger *slog.Logger

	// FS is the filesystem the database lives on. Default vfs.Default (the
	// operating system's), or vfs.NewMem() when Dir is "". Tests inject
	// faults through it (vfs/errorfs).
	FS vfs.FS
	// OnCorruption says what Open does with a database that Pebble finds
	// corrupt: CorruptionMoveAside (the default) renames the directory to
	// Dir.corrupt-<UTC time> and starts empty; CorruptionFail returns the
	// error, as before this option existed.
	OnCorruption string
	// KeepCorrupt is how many moved-aside directories are kept; older ones
	// are removed. Default 1; negative keeps none (the corrupt directory is
	// removed at once).
	KeepCorrupt int
	// ReopenBackoff is the first wait before reopening a database that
	// failed; it doubles up to ReopenBackoffMax. Defaults 1s and 30s.
	ReopenBackoff, ReopenBackoffMax time.Duration
	// MemoryBudget bounds the heap the store holds, so that the node's
	// --memory bounds the process (see docs/ARCHITECTURE.md, Memory):
	// Pebble's memtables (a sixteenth of it, at most 16 MiB each) and block
	// cache (an eighth, at most 64 MiB), the async queue (an eighth, see
	// QueueSize), the writer's counts of the keys
	// with a record (an eighth: beyond it the writer stops counting and
	// reads each key's record before writing it, as it did before the
	// counts), and with Dir "" the in-memory database itself (the other half:
	// beyond it the sweep removes the records that expire first, see
	// RemoveEarliest). 0: Pebble's sizes of before the bound, no bound.
	MemoryBudget int64
}

// Values of Config.OnCorruption.
const (
	CorruptionMoveAside = "move-aside"
	CorruptionFail      = "fail"
)

// Default values of Config.
const (
	DefaultQueueSize        = 65536
	DefaultBatchSize        = 1024
	DefaultFlushInterval    = 50 * time.Millisecond
	DefaultSweepInterval    = time.Second
	DefaultReopenBackoff    = time.Second
	DefaultReopenBackoffMax = 30 * time.Second
)

// withDefaults returns a copy of c with defaults filled in, or an error
// naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.QueueSize < 0:
		return c, fmt.Errorf("%w: Config.QueueSize must not be negative, got %d", ErrInvalid, c.QueueSize)
	case c.BatchSize < 0:
		return c, fmt.Errorf("%w: Config.BatchSize must not be negative, got %d", ErrInvalid, c.BatchSize)
	case c.FlushInterval < 0:
		return c, fmt.Errorf("%w: Config.FlushInterval must not be negative, got %v", ErrInvalid, c.FlushInterval)
	case c.OnCorruption != "" && c.OnCorruption != CorruptionMoveAside && c.OnCorruption != CorruptionFail:
		return c, fmt.Errorf("%w: Config.OnCorruption must be %q or %q, got %q", ErrInvalid, CorruptionMoveAside, CorruptionFail, c.OnCorruption)
	case c.ReopenBackoff < 0 || c.ReopenBackoffMax < 0:
		return c, fmt.Errorf("%w: Config.ReopenBackoff and ReopenBackoffMax must not be negative", ErrInvalid)
	}
	if c.OnCorruption == "" {
		c.OnCorruption = CorruptionMoveAside
	}
	if c.KeepCorrupt == 0 {
		c.KeepCorrupt = 1
	}
	if c.ReopenBackoff == 0 {
		c.ReopenBackoff = DefaultReopenBackoff
	}
	if c.ReopenBackoffMax == 0 {
		c.ReopenBackoffMax = max(DefaultReopenBackoffMax, c.ReopenBackoff)
	}
	if c.ReopenBackoffMax < c.ReopenBackoff {
		return c, fmt.Errorf("%w: Config.ReopenBackoffMax (%v) is below ReopenBackoff (%v)", ErrInvalid, c.ReopenBackoffMax, c.ReopenBackoff)
	}
	if c.FS == nil {
		if c.Dir == "" {
			c.FS = vfs.NewMem()
		} else {
			c.FS = vfs.Default
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
		if c.MemoryBudget > 0 {
			// A pending record (its arguments and index values decoded)
			// is about 1 KiB: an eighth of the budget, and room for two
			// batches.
			c.QueueSize = int(min(max(c.MemoryBudget/8/1024, int64(2*c.BatchSize)), DefaultQueueSize))
		}
	}
	if c.QueueWait == 0 {
		c.QueueWait = time.Second
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Store keeps the created-cache records of the keys a node owns, their
// indexes, the outbox of delayed invalidations and, optionally, values, in
// one Pebble database.
//
// A Store is safe for concurrent use. Reads (Get, List, Labels, Match,
// StaleBefore, DueItems, Pending, Value) go straight to Pebble, in parallel,
// and multi-key reads see one consistent snapshot. Every mutation goes
// through one writer goroutine, which owns the database's contents: it
// serializes the read-modify-write of replacing a record and its index
// entries, and it commits the synchronous operations of all callers that
// arrived together, plus up to BatchSize pending async records, as one
// Pebble batch with one WAL sync (group commit).
//
// Lifecycle: Open starts the writer and the sweep loop; Close flushes the
// pending async writes, stops both goroutines, and closes Pebble. Close is
// safe to call twice; every other method returns ErrClosed after it.
type Store struct {
	cfg Config
	log *slog.Logger
	// db is the open database, nil while the store is degraded: the writer
	// replaces it under closeMu's write lock, readers use it under its read
	// lock.
	db *pebble.DB
	// failed is set when a fault is reported on the open database (see
	// fault); the writer then closes it and reopens with backoff.
	failed atomic.Bool
	health healthState

	// closeMu guards closed, and with it the Pebble handle: readers hold it
	// for reading across their Pebble reads, so it never blocks a reader
	// or the writer; Close takes it for writing only after the writer has
	// exited, to wait for in-flight reads before closing Pebble (using a
	// closed Pebble panics).
	closeMu sync.RWMutex
	closed  bool

	mu struct {
		sync.Mutex
		closing  bool          // Close started: no new operations
		degraded bool          // db is closed after a fault: operations fail at once
		ops      []*op         // synchronous operations for the writer
		q        asyncQueue    // pending PutAsync records
		flushes  []flushWaiter // Flush callers waiting for the queue
		// space is closed by the writer when it takes records from the
		// queue, waking the PutAsync callers that wait for room (nil: none
		// waits).
		space    chan struct{}
		asyncErr error // first async commit error since the last Flush
	}
	wake chan struct{} // capacity 1: the writer has work

	quit       chan struct{} // closed by Close: stops the sweep loop
	sweepDone  chan struct{}
	writerDone chan struct{}

	closeOnce sync.Once
	closeErr  error

	outboxSeq    uint64       // last outbox ID issued; owned by the writer goroutine
	wtx          *txn         // the writer's batch under construction, reused; writer goroutine only
	live         *liveKeys    // records per key hash (see liveKeys); writer goroutine only after Open
	trackedBytes atomic.Int64 // what the writer's key counts hold (see liveKeys)
	recordCount  atomic.Int64 // the records in the database (see txn.counted)
	// recordCap is the most records Put and PutAsync let an in-memory
	// database hold (see enforceMemory); 0: no cap.
	recordCap atomic.Int64

	stats struct {
		writtenSync, writtenAsync, replaced, dropped, asyncErrors atomic.Uint64
		deleted, expired, valuesExpired, batches                  atomic.Uint64
	}
}

// Stats are counters of a Store since Open.
type Stats struct {
	WrittenSync   uint64 // records written by Put
	WrittenAsync  uint64 // records written by the background writer
	Replaced      uint64 // pending async writes superseded by a newer PutAsync, Put or Delete of the same key
	Dropped       uint64 // async writes dropped because the queue was full (ErrQueueFull)
	AsyncErrors   uint64 // async records lost to an encoding or commit error (logged)
	Deleted       uint64 // records removed by Delete
	Expired       uint64 // records removed because their AvailableTo passed
	ValuesExpired uint64 // values removed because their availableTo passed
	Batches       uint64 // batches committed by the writer
	Queued        int    // async writes pending now
}

// Open opens (or creates) the store described by cfg. It fills defaults
// into a copy of cfg and validates it; errors name the field.
//
// A database that Pebble finds corrupt is moved aside and replaced by an
// empty one (Config.OnCorruption; Health().MovedAside says where it went).
// A database that cannot be opened because of a storage fault (a full,
// read-only or failing disk) does not fail Open: the store starts degraded
// and keeps trying (see Health). Other errors (a directory that cannot be
// created, a data format of another version) are returned.
func Open(cfg Config) (*Store, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:        c,
		log:        c.Logger,
		wake:       make(chan struct{}, 1),
		quit:       make(chan struct{}),
		sweepDone:  make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	s.mu.q.byKey = make(map[string]*pending)
	if err := s.openDB(); err != nil {
		if !isStorageFault(err) || isCorruption(err) {
			// A corrupt database here was not moved aside: OnCorruption
			// says fail.
			return nil, err
		}
		s.startDegraded(err)
	}
	go s.writeLoop()
	if c.SweepInterval > 0 {
		go s.sweepLoop()
	} else {
		close(s.sweepDone)
	}
	return s, nil
}

// init checks the format of an existing database, or stamps a new one, and
// loads the outbox sequence and the record counts. It runs before db is
// published to readers.
func (s *Store) init(db *pebble.DB) error {
	v, closer, err := db.Get(metaKey(metaFormat))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.Set(metaKey(metaFormat), []byte{formatVersion}, pebble.Sync); err != nil {
			return fmt.Errorf("persist: stamp format: %w", err)
		}
	case err != nil:
		return fmt.Errorf("persist: read format: %w", err)
	default:
		got := append([]byte(nil), v...)
		closer.Close()
		switch {
		case len(got) == 1 && got[0] == formatVersion:
		case len(got) == 1 && got[0] == formatVersionV1:
			if err := s.dropV1(db); err != nil {
				return err
			}
		default:
			return fmt.Errorf("persist: %s holds data format %v, this version reads [%d] (and drops the records of [%d])",
				s.cfg.Dir, got, formatVersion, formatVersionV1)
		}
	}
	if err := s.countRecords(db); err != nil {
		return err
	}
	s.outboxSeq = 0
	v, closer, err = db.Get(metaKey(metaOutboxSeq))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return fmt.Errorf("persist: read outbox sequence: %w", err)
	default:
		defer closer.Close()
		if len(v) != 8 {
			return fmt.Errorf("%w: outbox sequence of %d bytes", ErrCorrupt, len(v))
		}
		s.outboxSeq = binary.BigEndian.Uint64(v)
	}
	return nil
}

// dropV1 removes the records, their indexes and the kept values of a
// database of format 1, keeps its outbox, and stamps the current format, in
// one synced batch: a crash before it commits leaves format 1, read again
// at the next Open. It logs one line.
func (s *Store) dropV1(db *pebble.DB) error {
	n := 0
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixRecord + 1}})
	if err != nil {
		return fmt.Errorf("persist: upgrade format 1: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("persist: upgrade format 1: %w", err)
	}
	b := db.NewBatch()
	defer b.Close()
	for _, t := range [][2]byte{{prefixRecord, prefixExpiry + 1}, {prefixValue, prefixValueExpiry + 1}} {
		if err := b.DeleteRange([]byte{t[0]}, []byte{t[1]}, nil); err != nil {
			return fmt.Errorf("persist: upgrade format 1: %w", err)
		}
	}
	if err := b.Set(metaKey(metaFormat), []byte{formatVersion}, nil); err != nil {
		return fmt.Errorf("persist: upgrade format 1: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("persist: upgrade format 1: %w", err)
	}
	s.log.Warn("persist: the data directory was of format 1: its created-cache records and kept values were dropped (fills write them again); the outbox of delayed invalidations is kept",
		"dir", s.cfg.Dir, "records", n)
	return nil
}

// countRecords builds s.live from the record table (one pass over its
// keys; see liveKeys).
func (s *Store) countRecords(db *pebble.DB) error {
	total := int64(0)
	l := &liveKeys{seed: maphash.MakeSeed(), n: make(map[uint64]uint32), max: s.maxTracked(), bytes: &s.trackedBytes}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixRecord + 1}})
	if err != nil {
		return fmt.Errorf("persist: count records: %w", err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		key, err := lastKey(it.Key(), 1)
		if err != nil {
			// Never written by this package; count the raw key so that a
			// write of whatever it decodes to is not assumed new.
			key = string(it.Key())
		}
		total++
		if !l.off {
			l.n[l.hash(key)]++
			l.check()
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("persist: count records: %w", err)
	}
	s.live = l
	s.recordCount.Store(total)
	return nil
}

// Close flushes the pending async writes, stops the background loops and
// closes Pebble. It is safe to call twice; the second call returns nil.
func (s *Store) Close() error {
	first := false
	s.closeOnce.Do(func() {
		first = true
		// The sweep loop submits operations to the writer: stop it first.
		close(s.quit)
		<-s.sweepDone
		s.mu.Lock()
		s.mu.closing = true
		s.wakeRoomLocked()
		s.mu.Unlock()
		s.signal()
		<-s.writerDone // the writer drains every queued operation first
		s.mu.Lock()
		asyncErr := s.mu.asyncErr
		s.mu.Unlock()
		s.closeMu.Lock()
		s.closed = true
		var err error
		if s.db != nil {
			err = closePebble(s.db)
			s.db = nil
		}
		s.closeMu.Unlock()
		switch {
		case s.failed.Load():
			// A fault came in the last moments: the database is expected
			// not to close cleanly, and the fault was logged.
			err = nil
		case err != nil:
			err = fmt.Errorf("persist: close pebble: %w", err)
		}
		s.closeErr = errors.Join(asyncErr, err)
	})
	if !first {
		return nil
	}
	return s.closeErr
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	queued := s.mu.q.live
	s.mu.Unlock()
	return Stats{
		WrittenSync:   s.stats.writtenSync.Load(),
		WrittenAsync:  s.stats.writtenAsync.Load(),
		Replaced:      s.stats.replaced.Load(),
		Dropped:       s.stats.dropped.Load(),
		AsyncErrors:   s.stats.asyncErrors.Load(),
		Deleted:       s.stats.deleted.Load(),
		Expired:       s.stats.expired.Load(),
		ValuesExpired: s.stats.valuesExpired.Load(),
		Batches:       s.stats.batches.Load(),
		Queued:        queued,
	}
}

// read runs f with the Pebble handle, or returns ErrClosed, or
// ErrUnavailable while the store is degraded. An error of f that is a
// storage fault degrades the store (see fault).
func (s *Store) read(f func(db *pebble.DB) error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.db == nil || s.failed.Load() {
		return s.unavailable()
	}
	err := f(s.db)
	if err != nil && isStorageFault(err) {
		s.fault(err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// readSnapshot runs f on a snapshot of the database, so that a query that
// reads an index and then the records sees one consistent state.
func (s *Store) readSnapshot(f func(r pebble.Reader) error) error {
	return s.read(func(db *pebble.DB) error {
		snap := db.NewSnapshot()
		return errors.Join(f(snap), snap.Close())
	})
}

// sweepLoop removes expired records and values every SweepInterval.
func (s *Store) sweepLoop() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		n, err := s.RemoveExpired(s.cfg.Now())
		switch {
		case errors.Is(err, ErrClosed):
			return
		case errors.Is(err, ErrUnavailable):
			// Degraded: the reopened database is swept then.
		case err != nil:
			s.log.Error("persist: remove expired records", "err", err)
		case n > 0:
			s.log.Debug("persist: removed expired records", "records", n)
		}
		s.enforceMemory()
	}
}

// maxTracked is how many keys the writer counts (see liveKeys) within
// the memory budget, about 32 bytes each; 0: no bound.
func (s *Store) maxTracked() int {
	if s.cfg.MemoryBudget <= 0 {
		return 0
	}
	return int(max(s.cfg.MemoryBudget/8/32, 1024))
}

// memTableSize and cacheSize are Pebble's sizes within the budget.
func (s *Store) memTableSize() uint64 {
	if s.cfg.MemoryBudget <= 0 {
		return memTableSize
	}
	// Pebble holds up to two memtables while one is flushed.
	return uint64(min(max(s.cfg.MemoryBudget/16, 1<<20), memTableSize))
}

func (s *Store) cacheSize() int64 {
	if s.cfg.MemoryBudget <= 0 {
		return blockCacheSize
	}
	return min(max(s.cfg.MemoryBudget/8, 1<<20), blockCacheSize)
}

// recordsLimit is the most bytes an in-memory database may hold; 0: no
// bound (a database on disk, or no budget).
func (s *Store) recordsLimit() int64 {
	if s.cfg.MemoryBudget <= 0 || s.cfg.Dir != "" {
		return 0
	}
	return s.cfg.MemoryBudget / 2
}

// MemoryBytes returns the store's heap by part, as the budget counts it:
// "pebble" (memtables and block cache in use), "records" (an in-memory
// database's size), "tracked_keys" (the writer's counts).
func (s *Store) MemoryBytes() map[string]int64 {
	out := map[string]int64{"pebble": 0, "records": 0, "tracked_keys": s.trackedBytes.Load()}
	_ = s.read(func(db *pebble.DB) error {
		m := db.Metrics()
		out["pebble"] = int64(m.MemTable.Size) + m.BlockCache.Size
		if s.cfg.Dir == "" {
			out["records"] = int64(m.DiskSpaceUsage())
		}
		return nil
	})
	return out
}

// recordCost is the least the budget counts for a record of an in-memory
// database: the record and its index entries, in a memtable's arena or a
// table (about 70 B once compacted for a record without match values:
// TestMemoryBudgetDropsEarliestRecords logs it). When the database holds
// more per record, that is counted.
const recordCost = 256

// enforceMemory removes the records that expire first while an in-memory
// database holds more than its part of the budget allows, down to nine
// tenths of it. Pebble's compactions then reclaim their space.
func (s *Store) enforceMemory() {
	limit := s.recordsLimit()
	n := s.recordCount.Load()
	if limit == 0 || n <= 0 {
		return
	}
	cost := max(s.MemoryBytes()["records"]/n, recordCost)
	s.recordCap.Store(limit / cost * 5 / 4)
	if n*cost <= limit {
		return
	}
	keys, err := s.RemoveEarliest(int(n - limit*9/10/cost))
	if err != nil && !errors.Is(err, ErrClosed) {
		s.log.Error("persist: remove records over the memory budget", "err", err)
	}
	if len(keys) > 0 && s.cfg.OnBudgetRemoved != nil {
		s.cfg.OnBudgetRemoved(keys)
	}
}
