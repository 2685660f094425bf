package worker

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// item is how the store keeps an entry: 64 bytes and, besides the key, one
// allocation for the bytes. An [Entry] is built from it on read.
//
// Why not the Entry itself: an Entry is 208 bytes of headers (three
// time.Time, four strings, a slice) and its Args a map with its own groups,
// together about 600 bytes an entry before the store's node; the item keeps
// the deadlines as unix nanoseconds, the label, owner and content type as
// one pointer to an interned triple, and the arguments msgpack-encoded in
// front of the value, in one allocation with it.
type item struct {
	data    *byte  // args encoding (argsLen bytes), then the value
	n       uint32 // len of data
	argsLen uint32
	created int64 // unix nanoseconds on the cache's clock
	avail   int64
	relev   int64 // 0: no relevance deadline
	fillUS  uint32
	// readAt is when the entry was last read, in unix seconds on the
	// cache's clock (0: never; itemWithdrawn: withdrawn), accessed
	// atomically: written at most once a second, so that hot keys do not
	// write one cache line from every core.
	readAt uint32
	meta   *meta
	ext    *itemExt // nil unless the entry keeps a decoded copy
}

// itemWithdrawn marks an item withdrawn by an invalidation whose rebuild is
// queued: it counts as expired until the rebuild replaces it.
const itemWithdrawn = math.MaxUint32

// itemExt holds what few items have: the Go value of a typed worker's local
// fill, which spares its local hits a decode.
type itemExt struct{ decoded any }

// meta is the label, owner and content type of entries, interned by the
// cache: a store holds few distinct triples.
type meta struct{ label, owner, contentType string }

// itemSize is the heap an item costs besides its key and data: the item
// (64 B), the store's node and table slot for it and the rounding of the key
// and data to allocation size classes (about 128 B more, measured
// with the memory scenario of bench; see docs/BENCHMARKS.md). The store's
// weigher counts it for each entry.
const itemSize = 192

// maxInterned bounds the interned triples; beyond it (an origin answering
// with endless content types) triples are allocated per entry, and weighed.
const maxInterned = 4096

// interner interns meta triples.
type interner struct {
	mu sync.RWMutex
	m  map[meta]*meta
}

func (in *interner) get(label, owner, ct string) (*meta, bool) {
	k := meta{label, owner, ct}
	in.mu.RLock()
	p, ok := in.m[k]
	in.mu.RUnlock()
	if ok {
		return p, true
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if p, ok := in.m[k]; ok {
		return p, true
	}
	if in.m == nil {
		in.m = make(map[meta]*meta)
	}
	p = &meta{label, owner, ct}
	if len(in.m) >= maxInterned {
		return p, false
	}
	in.m[k] = p
	return p, true
}

// newItem packs e; an error means its arguments cannot be encoded.
func (c *Cache) newItem(e *Entry) (*item, error) {
	var args []byte // nil Args stay nil: an entry without them is not rebuilt
	if e.Args != nil {
		b, err := msgpack.Marshal(map[string]any(e.Args))
		if err != nil {
			return nil, err
		}
		args = b
	}
	it := &item{
		argsLen: uint32(len(args)),
		created: e.CreatedAt.UnixNano(),
		avail:   e.AvailableTo.UnixNano(),
		fillUS:  uint32(min(max(e.FillDuration/time.Microsecond, 0), math.MaxUint32)),
	}
	if !e.RelevanceTo.IsZero() {
		it.relev = e.RelevanceTo.UnixNano()
	}
	if n := len(args) + len(e.Value); n > 0 {
		buf := make([]byte, 0, n)
		buf = append(append(buf, args...), e.Value...)
		it.data, it.n = unsafe.SliceData(buf), uint32(n)
	}
	it.meta, _ = c.meta.get(e.Label, e.Owner, e.ContentType)
	if e.decoded != nil {
		it.ext = &itemExt{decoded: e.decoded}
	}
	if e.it != nil {
		it.readAt = atomic.LoadUint32(&e.it.readAt)
		if it.readAt == itemWithdrawn {
			it.readAt = 0
		}
	}
	return it, nil
}

func (it *item) bytes() []byte {
	if it.data == nil {
		return nil
	}
	return unsafe.Slice(it.data, it.n)
}

func (it *item) value() []byte {
	b := it.bytes()
	if b == nil {
		return nil
	}
	return b[it.argsLen:len(b):len(b)]
}

// args decodes the item's arguments.
func (it *item) args() Args {
	if it.argsLen == 0 {
		return nil
	}
	var m map[string]any
	if err := msgpack.Unmarshal(it.bytes()[:it.argsLen], &m); err != nil {
		return nil // written by newItem: cannot happen
	}
	if m == nil {
		m = map[string]any{}
	}
	return Args(m)
}

func (it *item) expired(now int64) bool {
	return now >= it.avail || atomic.LoadUint32(&it.readAt) == itemWithdrawn
}

func (it *item) withdrawn() bool { return atomic.LoadUint32(&it.readAt) == itemWithdrawn }

// withdraw makes the item count as expired until the rebuild queued by an
// invalidation replaces it: cheaper than removing it from the store, whose
// write buffer a storm of 10,000 removals fills (each then waits for the
// store's maintenance), and the rebuild's store writes it anyway.
func (it *item) withdraw() { atomic.StoreUint32(&it.readAt, itemWithdrawn) }

// weight is what the store's weigher counts for an item of key.
func (it *item) weight(key string) uint32 {
	w := int64(len(key)) + int64(it.n) + itemSize
	if it.ext != nil {
		// The decoded copy: a Go value is rarely larger than twice its
		// msgpack encoding.
		w += 16 + 2*int64(it.n-it.argsLen)
	}
	return uint32(min(w, math.MaxUint32))
}

// fill sets e from the item of key; args are the entry's arguments when the
// caller has them (the arguments of a Get, whose key is the item's), nil to
// decode them.
func (it *item) fill(e *Entry, key string, args Args) { it.fillArgs(e, key, args, true) }

// fillArgs is fill that leaves Args nil, without decoding them, when args
// is nil and decode false.
func (it *item) fillArgs(e *Entry, key string, args Args, decode bool) {
	if args == nil && decode {
		args = it.args()
	}
	*e = Entry{
		Label:        it.meta.label,
		Key:          key,
		Args:         args,
		Value:        it.value(),
		ContentType:  it.meta.contentType,
		Owner:        it.meta.owner,
		CreatedAt:    time.Unix(0, it.created),
		AvailableTo:  time.Unix(0, it.avail),
		FillDuration: time.Duration(it.fillUS) * time.Microsecond,
		it:           it,
	}
	if it.relev != 0 {
		e.RelevanceTo = time.Unix(0, it.relev)
	}
	if it.ext != nil {
		e.decoded = it.ext.decoded
	}
}

// build fills dst from the item of key, or a new Entry when dst is nil.
func build(dst *Entry, it *item, key string, args Args) *Entry {
	if dst == nil {
		dst = new(Entry)
	}
	it.fill(dst, key, args)
	return dst
}

func (it *item) entry(key string, args Args) *Entry {
	e := new(Entry)
	it.fill(e, key, args)
	return e
}
