package persist

// The batch transaction of the writer: the writes of one batch, the view
// of the keys it reads back, and the record and index writes (writer.go
// builds one per batch and commits it).

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// viewEntry is the state of a key as the batch being built leaves it.
type viewEntry struct {
	val []byte
	del bool
}

// txn is a batch under construction by the writer: its writes, per table,
// and a view of the keys that later operations of the same batch read back
// through get (Pebble cannot answer those reads before the commit). It is
// used by the writer goroutine only, and reused from batch to batch (reset
// after each commit), so that building a batch allocates little: keys,
// encoded records and prefetched values are appended to buf.
type txn struct {
	db     *pebble.DB
	count  int64                // records created minus removed (see counted)
	tables [256][]write         // by the key's table prefix
	n      int                  // writes in tables
	view   map[string]viewEntry // final state of the keys written with set and del
	buf    []byte               // keys and values of this batch (see appendIndexKeys)
	keys   [][]byte             // scratch for writeIndexes
	keep   map[string]struct{}  // scratch for writeIndexes
	// The async records of the batch: their record keys, their indexes in
	// key order, and what prefetch read of their previous records.
	recKeys [][]byte
	order   []int32
	prev    []prevEntry
	// live counts the committed records (see liveKeys); delta is what this
	// batch changes in it, applied once the batch is committed.
	live  *liveKeys
	delta map[uint64]int32
}

// prevEntry is what prefetch read of an async record's previous record.
type prevEntry struct {
	val   []byte
	state uint8 // prevUnknown, prevAbsent or prevPresent
}

const (
	prevUnknown uint8 = iota // not prefetched: read it with get
	prevAbsent
	prevPresent
)

// maxRetainedBuf bounds the batch buffer that a txn keeps between batches.
const maxRetainedBuf = 4 << 20

// reset empties t for the next batch, dropping its references to the
// callers' data.
func (t *txn) reset() {
	t.count = 0
	for i := range t.tables {
		if len(t.tables[i]) > 0 {
			clear(t.tables[i])
			t.tables[i] = t.tables[i][:0]
		}
	}
	t.n = 0
	if len(t.view) > 4096 {
		t.view = make(map[string]viewEntry)
	} else {
		clear(t.view)
	}
	if cap(t.buf) > maxRetainedBuf {
		t.buf = nil
	}
	t.buf = t.buf[:0]
	clear(t.keys)
	t.keys = t.keys[:0]
	clear(t.recKeys)
	t.recKeys = t.recKeys[:0]
	t.order = t.order[:0]
	clear(t.prev)
	t.prev = t.prev[:0]
	clear(t.delta)
}

// write is one Set or Delete of a txn; seq orders writes of the same key.
type write struct {
	key, val []byte
	seq      int32
	del      bool
}

// prefetch reads the committed previous records of the batch's async
// records with one iterator, in key order, so that prevRecord does not pay
// a point lookup each (most of them miss, and a miss through one
// iterator's bloom-filtered prefix seeks is several times cheaper than a
// Get, which builds an iterator per call). Keys that liveKeys proves
// absent are not read at all: for new keys, the common case, the batch
// reads nothing. Keys it does not settle stay prevUnknown.
func (t *txn) prefetch(recs []Record) error {
	t.prev = slices.Grow(t.prev[:0], len(t.recKeys))[:len(t.recKeys)] // zero: reset clears it
	seek := 0
	for _, i := range t.order {
		if t.live.absent(recs[i].Key) {
			t.prev[i].state = prevAbsent
		} else {
			seek++
		}
	}
	if seek < 8 {
		return nil // prevRecord reads them one by one
	}
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixRecord + 1}})
	if err != nil {
		return err
	}
	for _, i := range t.order {
		if t.prev[i].state != prevUnknown {
			continue
		}
		k := t.recKeys[i]
		if it.SeekPrefixGE(k) && bytes.Equal(it.Key(), k) {
			v, err := it.ValueAndErr()
			if err != nil {
				t.forgetPrefetch()
				return errors.Join(err, it.Close())
			}
			from := len(t.buf)
			t.buf = append(t.buf, v...)
			t.prev[i] = prevEntry{val: t.buf[from:len(t.buf):len(t.buf)], state: prevPresent}
			continue
		}
		if err := it.Error(); err != nil {
			t.forgetPrefetch()
			return errors.Join(err, it.Close())
		}
		t.prev[i] = prevEntry{state: prevAbsent}
	}
	return it.Close()
}

// forgetPrefetch drops what a failed prefetch read (what liveKeys proved
// stays).
func (t *txn) forgetPrefetch() {
	for i := range t.prev {
		if t.prev[i].state == prevPresent {
			t.prev[i] = prevEntry{}
		}
	}
}

// get returns the value of k as it will be once the batch is committed.
func (t *txn) get(k []byte) ([]byte, bool, error) {
	if e, ok := t.view[string(k)]; ok {
		return e.val, !e.del, nil
	}
	v, closer, err := t.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v = bytes.Clone(v)
	return v, true, closer.Close()
}

// set and del write a key that later operations of the batch may read
// through get (records, values, outbox IDs).
func (t *txn) set(k, v []byte) {
	t.view[string(k)] = viewEntry{val: v}
	t.setIndex(k, v)
}

func (t *txn) del(k []byte) {
	t.view[string(k)] = viewEntry{del: true}
	t.delIndex(k)
}

// setIndex and delIndex write a key that nothing reads back before the
// commit: index entries, outbox items, meta.
func (t *txn) setIndex(k, v []byte) {
	t.tables[k[0]] = append(t.tables[k[0]], write{key: k, val: v, seq: int32(t.n)})
	t.n++
}

func (t *txn) delIndex(k []byte) {
	t.tables[k[0]] = append(t.tables[k[0]], write{key: k, del: true, seq: int32(t.n)})
	t.n++
}

func cmpWrite(a, b write) int {
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c
	}
	return int(a.seq - b.seq)
}

// commit writes the batch in key order, the last write of each key only,
// and syncs the WAL. Sorted inserts are cheaper for the memtable's
// skiplist, which starts each insert from the previous one's position.
// The writes are kept per table, and the table prefix is the key's first
// byte, so sorting each table sorts the batch; a table written in key
// order (the records of async writes, the time indexes of records with
// equal deadlines) costs one pass.
func (t *txn) commit() error {
	size := 0
	for _, ws := range t.tables {
		if len(ws) == 0 {
			continue
		}
		if !slices.IsSortedFunc(ws, cmpWrite) {
			slices.SortFunc(ws, cmpWrite)
		}
		for _, w := range ws {
			size += len(w.key) + len(w.val) + 8
		}
	}
	b := t.db.NewBatchWithSize(size)
	defer b.Close()
	for _, ws := range t.tables {
		for i, w := range ws {
			if i+1 < len(ws) && bytes.Equal(w.key, ws[i+1].key) {
				continue // a later write of the same key wins
			}
			// Set and Delete fail only on a committed batch.
			if w.del {
				_ = b.Delete(w.key, nil)
			} else {
				_ = b.Set(w.key, w.val, nil)
			}
		}
	}
	return b.Commit(pebble.Sync) // see the WAL sync policy
}

// oldRecord reads the current record of key through the view. A record
// that does not decode is logged and treated as absent: its index entries
// cannot be found without it, and refusing every write of the key forever
// would be worse.
func (t *txn) oldRecord(key string, log logger) (*Record, error) {
	k := recordKey(key)
	if e, ok := t.view[string(k)]; ok {
		return decodeOld(key, e.val, !e.del, nil, log)
	}
	if t.live.absent(key) {
		return nil, nil
	}
	raw, found, err := t.get(k)
	return decodeOld(key, raw, found, err, log)
}

// prevRecord is oldRecord for the async record i of the batch: through the
// view (a synchronous operation earlier in the batch), else what prefetch
// read, else a point read.
func (t *txn) prevRecord(i int, key string, log logger) (*Record, error) {
	k := t.recKeys[i]
	if e, ok := t.view[string(k)]; ok {
		return decodeOld(key, e.val, !e.del, nil, log)
	}
	switch p := t.prev[i]; p.state {
	case prevAbsent:
		return nil, nil
	case prevPresent:
		return decodeOld(key, p.val, true, nil, log)
	}
	raw, found, err := t.get(k)
	return decodeOld(key, raw, found, err, log)
}

func decodeOld(key string, raw []byte, found bool, err error, log logger) (*Record, error) {
	if err != nil {
		return nil, fmt.Errorf("persist: read record %q: %w", key, err)
	}
	if !found {
		return nil, nil
	}
	old, err := decodeRecord(raw)
	if err != nil {
		log.Error("persist: replacing a corrupt record", "key", key, "err", err)
		return nil, nil
	}
	return &old, nil
}

type logger interface {
	Error(msg string, args ...any)
}

// putRecord writes rec (encoded as enc) and its index entries, deleting the
// entries of the record it replaces that the new one does not have.
func (t *txn) putRecord(rec *Record, enc []byte, log logger) error {
	old, err := t.oldRecord(rec.Key, log)
	if err != nil {
		return err
	}
	t.writeIndexes(rec, old)
	t.set(recordKey(rec.Key), enc)
	if old == nil {
		t.counted(rec.Key, +1)
	}
	return nil
}

// writeIndexes writes the index entries of rec, and deletes those of old
// (the record rec replaces, or nil) that rec does not have. Entries that
// both have are not rewritten.
func (t *txn) writeIndexes(rec, old *Record) {
	from := len(t.keys)
	t.keys, t.buf = appendIndexKeys(t.keys, t.buf, rec)
	newKeys := t.keys[from:]
	defer func() {
		clear(t.keys[from:])
		t.keys = t.keys[:from]
	}()
	if old == nil {
		for _, k := range newKeys {
			t.setIndex(k, nil)
		}
		return
	}
	if t.keep == nil {
		t.keep = make(map[string]struct{})
	}
	keep := t.keep
	clear(keep)
	for _, k := range newKeys {
		keep[string(k)] = struct{}{}
	}
	mid := len(t.keys)
	t.keys, t.buf = appendIndexKeys(t.keys, t.buf, old)
	for _, k := range t.keys[mid:] {
		if _, ok := keep[string(k)]; ok {
			delete(keep, string(k)) // present already: do not rewrite
			continue
		}
		t.delIndex(k)
	}
	for _, k := range newKeys {
		if _, ok := keep[string(k)]; ok {
			t.setIndex(k, nil)
		}
	}
}

// deleteRecord removes the record of key and its index entries.
func (t *txn) deleteRecord(key string, log logger) (bool, error) {
	old, err := t.oldRecord(key, log)
	if err != nil {
		return false, err
	}
	if old != nil {
		for _, k := range indexKeys(old) {
			t.delIndex(k)
		}
		t.counted(key, -1)
	}
	t.del(recordKey(key))
	return old != nil, nil
}

// expireRecords removes up to limit records whose AvailableTo is at or
// before now, walking the expiry index of the committed state and checking
// each record through the view (an operation earlier in the batch may have
// replaced it with a later deadline). The keys it removes are appended to
// *removed unless removed is nil.
func (t *txn) expireRecords(now time.Time, limit int, log logger, removed *[]string) (int, error) {
	it, err := t.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixExpiry},
		UpperBound: timeUpper(prefixExpiry, now),
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for valid := it.First(); valid && n < limit; valid = it.Next() {
		key, err := lastKey(it.Key(), 1+8)
		if err != nil {
			log.Error("persist: removing a corrupt expiry index entry", "key", fmt.Sprintf("%q", it.Key()), "err", err)
			t.delIndex(bytes.Clone(it.Key()))
			continue
		}
		rec, err := t.oldRecord(key, log)
		if err != nil {
			return n, errors.Join(err, it.Close())
		}
		if rec == nil {
			// An entry without a record cannot be produced by putRecord;
			// remove it rather than skip it on every sweep.
			t.delIndex(bytes.Clone(it.Key()))
			continue
		}
		if rec.AvailableTo.IsZero() || rec.AvailableTo.After(now) {
			continue // replaced earlier in this batch
		}
		if _, err := t.deleteRecord(key, log); err != nil {
			return n, errors.Join(err, it.Close())
		}
		if removed != nil {
			*removed = append(*removed, key)
		}
		n++
	}
	return n, it.Close()
}
