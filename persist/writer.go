package persist

import (
	"bytes"
	"fmt"
	"slices"
	"time"
)

// WAL sync policy.
//
// Every batch the writer commits is committed with pebble.Sync: Pebble
// writes it to the WAL and fsyncs the WAL before the commit returns. Put,
// Delete, Enqueue, Ack and PutValue return only after the batch holding
// them was synced, so an acknowledged operation survives a process crash
// and a machine crash. Async records are synced too, one fsync per batch of
// up to BatchSize records, so a crash loses at most the records still in
// the queue and the batch being committed, never older ones.
//
// Why not NoSync for the async path: Pebble's NoSync commit leaves the WAL
// in a user-space buffer that a kill loses, so "pending batch" would become
// "whatever was written since the last sync", an unbounded window. (With
// NoSync for every commit, TestCrash loses acknowledged records.) The
// price of syncing is small because it is paid per batch, not per record:
// the writer is a single goroutine that takes every synchronous operation
// waiting and up to BatchSize async records, so concurrent callers share
// one fsync (group commit) and the batch grows while an fsync is running.

// expireChunk bounds how many records (and values) one RemoveExpired step
// deletes, so that the sweep never holds the writer for one huge batch.
const expireChunk = 1024

type opKind uint8

const (
	opPut opKind = iota
	opDelete
	opExpire
	opEnqueue
	opAck
	opPutValue
)

// op is a synchronous operation for the writer. The caller fills the
// arguments, the writer fills the results and closes done.
type op struct {
	kind    opKind
	rec     *Record   // opPut
	enc     []byte    // opPut: the encoded record
	key     string    // opDelete, opPutValue
	t       time.Time // opExpire: now; opEnqueue: due; opPutValue: availableTo
	payload []byte    // opEnqueue: payload; opPutValue: value
	id      uint64    // opEnqueue: result; opAck: argument

	n, nValues int      // opExpire results: records and values removed
	limit      int      // opExpire: the most records to remove (RemoveEarliest); 0: expireChunk, and values
	removed    []string // opExpire with a limit: the keys whose records it removed
	found      bool
	err        error
	done       chan struct{}
}

// signal wakes the writer without blocking.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func checkRecord(rec *Record) error {
	if rec.Key == "" {
		return fmt.Errorf("%w: record has an empty Key", ErrInvalid)
	}
	if rec.Label == "" {
		return fmt.Errorf("%w: record %q has an empty Label", ErrInvalid, rec.Key)
	}
	return nil
}

// Put writes rec, replacing the previous record of rec.Key and its index
// entries. It returns once the record is durable (see the WAL sync policy);
// a pending PutAsync of the same key is discarded, as Put is newer.
func (s *Store) Put(rec Record) error {
	if err := checkRecord(&rec); err != nil {
		return err
	}
	enc, err := encodeRecord(&rec)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.overBudget() {
		return ErrOverBudget
	}
	return s.do(&op{kind: opPut, rec: &rec, key: rec.Key, enc: enc})
}

// overBudget reports whether an in-memory database holds more records than
// its cap (see enforceMemory), counting a dropped record.
func (s *Store) overBudget() bool {
	if c := s.recordCap.Load(); c > 0 && s.recordCount.Load() > c {
		s.stats.dropped.Add(1)
		return true
	}
	return false
}

// PutAsync queues rec for the background writer and returns at once; it
// never blocks on I/O. The record is written within FlushInterval (sooner
// when a batch fills), and is visible to reads from then on; Flush waits
// for it. A newer PutAsync of a key still pending replaces the pending
// record in place (counted in Stats.Replaced). When the queue holds
// QueueSize records and none of rec.Key, rec is dropped: PutAsync returns
// ErrQueueFull and Stats.Dropped counts it. Records that fail to encode are
// logged and counted in Stats.AsyncErrors.
func (s *Store) PutAsync(rec Record) error {
	if err := checkRecord(&rec); err != nil {
		return err
	}
	if s.overBudget() {
		return ErrOverBudget
	}
	s.mu.Lock()
	if s.mu.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	q := &s.mu.q
	if p, ok := q.byKey[rec.Key]; ok {
		p.rec = rec
		s.mu.Unlock()
		s.stats.replaced.Add(1)
		return nil
	}
	if q.slots() >= s.cfg.QueueSize {
		if !s.waitForRoomLocked() {
			s.mu.Unlock()
			s.stats.dropped.Add(1)
			return ErrQueueFull
		}
		if p, ok := q.byKey[rec.Key]; ok { // queued meanwhile
			p.rec = rec
			s.mu.Unlock()
			s.stats.replaced.Add(1)
			return nil
		}
	}
	q.pushLocked(&pending{rec: rec, at: time.Now()})
	// Wake the writer when the queue becomes non-empty (to arm the flush
	// timer) and when a batch is full; between, it sleeps.
	wake := q.live == 1 || q.live == s.cfg.BatchSize
	s.mu.Unlock()
	if wake {
		s.signal()
	}
	return nil
}

// waitForRoomLocked waits, for at most QueueWait, until the full queue has
// room, and reports whether it has. It is called and returns with s.mu
// held; it does not wait while the store is degraded or closing.
func (s *Store) waitForRoomLocked() bool {
	if s.cfg.QueueWait < 0 {
		return false
	}
	deadline := time.Now().Add(s.cfg.QueueWait)
	for s.mu.q.slots() >= s.cfg.QueueSize {
		wait := time.Until(deadline)
		if s.mu.degraded || s.mu.closing || wait <= 0 {
			return false
		}
		if s.mu.space == nil {
			s.mu.space = make(chan struct{})
		}
		space := s.mu.space
		s.mu.Unlock()
		s.signal() // a full queue is a full batch: the writer takes it
		t := time.NewTimer(wait)
		select {
		case <-space:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
	}
	return true
}

// wakeRoomLocked wakes the PutAsync callers waiting for room in the queue:
// the writer took records, or the store degraded or is closing (they then
// give up at once).
func (s *Store) wakeRoomLocked() {
	if s.mu.space != nil {
		close(s.mu.space)
		s.mu.space = nil
	}
}

// Delete removes the record of key, its index entries and its stored
// value. Deleting a key that has no record is not an error. Like Put, it
// discards a pending PutAsync of the key and returns once durable.
func (s *Store) Delete(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalid)
	}
	return s.do(&op{kind: opDelete, key: key})
}

// RemoveExpired removes every record whose AvailableTo is at or before now,
// with its index entries, and every stored value whose availableTo is at or
// before now. It works in steps of a bounded batch, so other writes go on
// meanwhile. It returns the number of records removed. The background
// loop calls it every SweepInterval with Config.Now().
func (s *Store) RemoveExpired(now time.Time) (int, error) {
	total := 0
	for {
		o := &op{kind: opExpire, t: now}
		err := s.do(o)
		total += o.n
		if err != nil {
			return total, err
		}
		if o.n < expireChunk && o.nValues < expireChunk {
			return total, nil
		}
	}
}

// RemoveEarliest removes up to n records, those that expire first, and
// returns the keys it removed them of: what the store drops when an
// in-memory database is over its memory budget (see Config.MemoryBudget).
func (s *Store) RemoveEarliest(n int) ([]string, error) {
	var keys []string
	for len(keys) < n {
		o := &op{kind: opExpire, t: time.Unix(1<<40, 0), limit: min(n-len(keys), expireChunk)}
		err := s.do(o)
		keys = append(keys, o.removed...)
		if err != nil || o.n == 0 {
			return keys, err
		}
	}
	return keys, nil
}

// Flush waits until every PutAsync that returned before the call was
// committed (or superseded). It returns the first error of a background
// batch since the previous Flush.
func (s *Store) Flush() error {
	s.mu.Lock()
	if s.mu.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.mu.degraded {
		s.mu.Unlock()
		return s.unavailable()
	}
	w := flushWaiter{target: s.mu.q.pushed, done: make(chan error, 1)}
	if s.mu.q.committed >= w.target {
		err := s.mu.asyncErr
		s.mu.asyncErr = nil
		s.mu.Unlock()
		return err
	}
	s.mu.flushes = append(s.mu.flushes, w)
	s.mu.Unlock()
	s.signal()
	return <-w.done
}

// do hands o to the writer and waits for its result.
func (s *Store) do(o *op) error {
	o.done = make(chan struct{})
	s.mu.Lock()
	if s.mu.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.mu.degraded {
		s.mu.Unlock()
		return s.unavailable()
	}
	if o.kind == opPut || o.kind == opDelete {
		// A synchronous write is newer than a pending async one of the
		// same key; without this, the async one, written later, would win.
		if s.mu.q.removeLocked(o.key) {
			s.stats.replaced.Add(1)
		}
	}
	s.mu.ops = append(s.mu.ops, o)
	s.mu.Unlock()
	s.signal()
	<-o.done
	return o.err
}

// writeLoop is the writer goroutine: the only one that mutates the
// database after Open, and the one that closes and reopens it after a
// fault (see Storage faults in health.go).
func (s *Store) writeLoop() {
	defer close(s.writerDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	backoff := s.cfg.ReopenBackoff
	retryAt := time.Now().Add(backoff)
	for {
		if s.failed.Load() && s.db != nil {
			s.degrade()
			backoff = s.nextBackoff(backoff)
			retryAt = time.Now().Add(backoff)
		}
		s.mu.Lock()
		if s.mu.degraded {
			if s.degradedStep(&backoff, &retryAt, timer) {
				return
			}
			continue
		}
		ops := s.mu.ops
		s.mu.ops = nil
		q := &s.mu.q
		// Someone is waiting: write everything that is pending now rather
		// than waiting for a full batch or the flush interval.
		// So is a PutAsync waiting for room in the full queue.
		eager := len(ops) > 0 || len(s.mu.flushes) > 0 || s.mu.closing || s.mu.space != nil
		var recs []Record
		var wait time.Duration
		if q.live > 0 {
			age := time.Since(q.oldestLocked())
			if eager || q.live >= s.cfg.BatchSize || age >= s.cfg.FlushInterval {
				recs = q.popLocked(s.cfg.BatchSize)
				s.wakeRoomLocked()
			} else {
				wait = s.cfg.FlushInterval - age
			}
		}
		upTo := q.popped
		if len(ops) == 0 && len(recs) == 0 {
			// Idle: nothing is in flight, so every popped position is
			// settled.
			q.committed = upTo
			s.releaseFlushesLocked()
			if s.mu.closing && q.live == 0 {
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			var tc <-chan time.Time
			if wait > 0 {
				timer.Reset(wait)
				tc = timer.C
			}
			select {
			case <-s.wake:
			case <-tc:
			}
			timer.Stop()
			continue
		}
		s.mu.Unlock()

		asyncErr, lost := s.applySafe(ops, recs)

		s.mu.Lock()
		if lost {
			// The batch met a storage fault: its records go back to the
			// queue, for the reopened database.
			s.requeueLocked(recs)
		} else if asyncErr != nil && s.mu.asyncErr == nil {
			s.mu.asyncErr = asyncErr
		}
		q.committed = upTo
		s.releaseFlushesLocked()
		s.mu.Unlock()
		for _, o := range ops {
			close(o.done)
		}
	}
}

// degradedStep is one turn of the writer while the database is closed
// after a fault; s.mu is held on entry and released. It refuses the
// operations that arrived, answers Flush callers, and reopens the database
// when the backoff has passed (at once when the store is closing, for a
// last chance to write the queue). It returns true when the writer must
// exit.
func (s *Store) degradedStep(backoff *time.Duration, retryAt *time.Time, timer *time.Timer) bool {
	ops := s.mu.ops
	s.mu.ops = nil
	flushes := s.mu.flushes
	s.mu.flushes = nil
	closing := s.mu.closing
	s.mu.Unlock()
	err := s.unavailable()
	for _, w := range flushes {
		w.done <- err
	}
	for _, o := range ops {
		o.err = err
		close(o.done)
	}
	if closing || !time.Now().Before(*retryAt) {
		if s.tryReopen() {
			return false
		}
		if closing {
			s.mu.Lock()
			lost := s.mu.q.live
			s.mu.Unlock()
			if lost > 0 {
				s.stats.dropped.Add(uint64(lost))
				s.log.Error("persist: closing while degraded: queued records not written", "records", lost, "err", err)
			}
			return true
		}
		*backoff = min(2**backoff, s.cfg.ReopenBackoffMax)
		*retryAt = time.Now().Add(*backoff)
	}
	timer.Reset(time.Until(*retryAt))
	select {
	case <-s.wake:
	case <-timer.C:
	}
	timer.Stop()
	return false
}

// requeueLocked puts back the records of a batch lost to a fault, unless a
// newer record of the same key is pending; beyond QueueSize they are
// dropped (Stats.Dropped).
func (s *Store) requeueLocked(recs []Record) {
	q := &s.mu.q
	now := time.Now()
	for _, r := range recs {
		if _, newer := q.byKey[r.Key]; newer {
			continue
		}
		if q.slots() >= s.cfg.QueueSize {
			s.stats.dropped.Add(1)
			continue
		}
		q.pushLocked(&pending{rec: r, at: now})
	}
}

// applySafe is apply, with the faults of a failing database turned into
// errors: a panic of Pebble's (its commit pipeline panics once broken),
// or a fault reported while the batch was committed (Pebble's Fatalf
// returns, and the commit then reports success). lost says the batch met a
// fault: its operations failed with ErrUnavailable, and its async records
// were not written.
func (s *Store) applySafe(ops []*op, recs []Record) (asyncErr error, lost bool) {
	defer func() {
		if r := recover(); r != nil {
			s.fault(fmt.Errorf("%w: panic: %v", errFatal, r))
			asyncErr, lost = s.lose(ops)
		}
	}()
	asyncErr = s.apply(ops, recs)
	// A read of the batch (the previous record of a key) that failed on
	// the disk is a fault like a failed write.
	if asyncErr != nil && isStorageFault(asyncErr) {
		s.fault(asyncErr)
	}
	for _, o := range ops {
		if o.err != nil && isStorageFault(o.err) {
			s.fault(o.err)
		}
	}
	if s.failed.Load() {
		return s.lose(ops)
	}
	return asyncErr, false
}

// lose fails the operations of a batch that met a fault (see applySafe).
func (s *Store) lose(ops []*op) (error, bool) {
	err := s.unavailable()
	for _, o := range ops {
		o.err = err
	}
	return nil, true
}

// releaseFlushesLocked wakes the Flush callers whose records are committed.
func (s *Store) releaseFlushesLocked() {
	kept := s.mu.flushes[:0]
	for _, w := range s.mu.flushes {
		if w.target <= s.mu.q.committed {
			w.done <- s.mu.asyncErr
			s.mu.asyncErr = nil
			continue
		}
		kept = append(kept, w)
	}
	clear(s.mu.flushes[len(kept):])
	s.mu.flushes = kept
}

// apply builds one batch from the synchronous operations and the async
// records, commits it, and fills in the operations' results. It returns the
// error that lost async records, if any.
func (s *Store) apply(ops []*op, recs []Record) error {
	if s.wtx == nil {
		s.wtx = &txn{db: s.db, view: make(map[string]viewEntry), live: s.live, delta: make(map[uint64]int32)}
	}
	t := s.wtx
	defer t.reset()
	for _, o := range ops {
		o.err = s.applyOp(t, o)
	}
	written, asyncErr := s.applyAsync(t, recs)
	if t.n == 0 {
		return asyncErr
	}
	if err := t.commit(); err != nil {
		// The batch may or may not be in the database: count the records
		// it created, not those it removed (a count too high costs a read,
		// one too low would skip the read of a record that exists).
		t.live.apply(t.delta, false)
		err = fmt.Errorf("persist: commit: %w", err)
		for _, o := range ops {
			if o.err == nil {
				o.err = err
			}
		}
		if written > 0 {
			s.stats.asyncErrors.Add(uint64(written))
			s.log.Error("persist: async records not written", "records", written, "err", err)
			asyncErr = cmpOr(asyncErr, err)
		}
		return asyncErr
	}
	t.live.apply(t.delta, true)
	s.recordCount.Add(t.count)
	s.stats.batches.Add(1)
	s.stats.writtenAsync.Add(uint64(written))
	for _, o := range ops {
		if o.err != nil {
			continue
		}
		switch o.kind {
		case opPut:
			s.stats.writtenSync.Add(1)
		case opDelete:
			if o.found {
				s.stats.deleted.Add(1)
			}
		case opExpire:
			s.stats.expired.Add(uint64(o.n))
			s.stats.valuesExpired.Add(uint64(o.nValues))
		}
	}
	return asyncErr
}

// applyAsync adds the async records to t, after the synchronous operations
// (which are older: a PutAsync that a Put or Delete of the same key
// superseded never reaches the writer). The records' keys are distinct (the
// queue keeps one per key), so nothing later in the batch reads them back:
// they bypass the view. They are encoded into t's buffer and handled in key
// order, so the prefetch seeks forward and the record table's writes need
// no sorting.
func (s *Store) applyAsync(t *txn, recs []Record) (written int, asyncErr error) {
	if len(recs) == 0 {
		return 0, nil
	}
	for i := range recs {
		from := len(t.buf)
		t.buf = appendEsc(append(t.buf, prefixRecord), recs[i].Key)
		t.recKeys = append(t.recKeys, t.buf[from:len(t.buf):len(t.buf)])
		t.order = append(t.order, int32(i))
	}
	slices.SortFunc(t.order, func(a, b int32) int { return bytes.Compare(t.recKeys[a], t.recKeys[b]) })
	if err := t.prefetch(recs); err != nil {
		s.log.Error("persist: prefetch of replaced records failed", "err", err)
	}
	for _, i := range t.order {
		rec := &recs[i]
		from := len(t.buf)
		var err error
		t.buf, err = appendRecord(t.buf, rec)
		var old *Record
		if err == nil {
			enc := t.buf[from:len(t.buf):len(t.buf)]
			old, err = t.prevRecord(int(i), rec.Key, s.log)
			if err == nil {
				t.writeIndexes(rec, old)
				t.setIndex(t.recKeys[i], enc)
				if old == nil {
					t.counted(rec.Key, +1)
				}
			}
		} else {
			t.buf = t.buf[:from]
		}
		if err != nil {
			s.stats.asyncErrors.Add(1)
			s.log.Error("persist: async record not written", "key", rec.Key, "err", err)
			asyncErr = cmpOr(asyncErr, err)
			continue
		}
		written++
	}
	return written, asyncErr
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// applyOp adds the mutations of o to t. An error leaves t without any of
// o's mutations, except for opExpire, whose deletions done before the error
// are kept (each is complete on its own).
func (s *Store) applyOp(t *txn, o *op) error {
	switch o.kind {
	case opPut:
		return t.putRecord(o.rec, o.enc, s.log)
	case opDelete:
		found, err := t.deleteRecord(o.key, s.log)
		if err != nil {
			return err
		}
		o.found = found
		// Values are deleted and expired even without KeepValues: the
		// database may come from a run that kept them.
		_, err = t.deleteValue(o.key)
		return err
	case opExpire:
		var err error
		if o.limit > 0 { // RemoveEarliest
			o.n, err = t.expireRecords(o.t, o.limit, s.log, &o.removed)
			return err
		}
		o.n, err = t.expireRecords(o.t, expireChunk, s.log, nil)
		if err != nil {
			return err
		}
		o.nValues, err = t.expireValues(o.t, expireChunk)
		return err
	case opEnqueue:
		s.outboxSeq++
		o.id = s.outboxSeq
		t.enqueue(o.id, o.t, o.payload)
		return nil
	case opAck:
		return t.ack(o.id)
	case opPutValue:
		return t.putValue(o.key, o.payload, o.t)
	}
	return fmt.Errorf("persist: unknown operation %d", o.kind)
}
