package worker

import (
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// item is how the store keeps an entry: a 40-byte header without pointers,
// followed in the same allocation by the key (after its length as a
// uvarint), the arguments' encoding and the value, so that an entry is one
// allocation besides the store's node, and one the garbage collector does
// not scan. An [Entry] is built from it
// on read.
//
// Why not the Entry itself: an Entry is 208 bytes of headers (three
// time.Time, four strings, a slice) and its Args a map with its own groups,
// together about 600 bytes an entry before the store's node; the item keeps
// the deadlines as unix nanoseconds, the label, owner and content type as
// the index of an interned triple, and the arguments msgpack-encoded in
// front of the value.
//
// The few items that need pointers (a typed worker's decoded copy, a
// triple the interner has no room for, arguments over 64 KiB) are boxed: a
// [boxedItem] whose header has meta 0.
type item struct {
	created int64 // unix nanoseconds on the cache's clock
	avail   int64
	relev   int64  // 0: no relevance deadline
	n       uint32 // len of the bytes: the key with its length, the args encoding, the value
	fillUS  uint32
	// readAt is when the entry was last read, in unix seconds on the
	// cache's clock (0: never; itemWithdrawn: withdrawn), accessed
	// atomically: written at most once a second, so that hot keys do not
	// write one cache line from every core.
	readAt  uint32
	argsLen uint16
	metaID  uint16 // 1 + the index of the interned triple; 0: boxed
}

// itemHeader is the size of an item's header, where its bytes start.
const itemHeader = int(unsafe.Sizeof(item{}))

// boxedItem is an item with what cannot live in a pointer-free header.
type boxedItem struct {
	item
	data    []byte // the key with its length, the args encoding (argsN bytes), the value
	argsN   int
	m       *meta
	decoded any // the Go value of a typed worker's local fill, or nil
}

// boxedExtra is what a boxed item costs more than a packed one.
const boxedExtra = int64(unsafe.Sizeof(boxedItem{})) - int64(itemHeader) + 48

func (it *item) boxed() *boxedItem {
	if it.metaID != 0 {
		return nil
	}
	return (*boxedItem)(unsafe.Pointer(it))
}

// itemWithdrawn marks an item withdrawn by an invalidation whose rebuild is
// queued: it counts as expired until the rebuild replaces it.
const itemWithdrawn = math.MaxUint32

// meta is the label, owner and content type of entries, interned by the
// cache: a store holds few distinct triples.
type meta struct{ label, owner, contentType string }

// itemSlot is the heap an item costs in the store besides its own
// allocation: otter's node for it (48 B) and its slot in otter's table
// (about 28 B), measured with the memory scenario of bench (see
// docs/BENCHMARKS.md).
const itemSlot = 80

// maxInterned bounds the interned triples; beyond it (an origin answering
// with endless content types) items are boxed with their own triple, and
// weighed.
const maxInterned = 4096

// interner interns meta triples; an item holds 1 + the index of its
// triple, read without a lock.
type interner struct {
	mu    sync.RWMutex
	m     map[meta]uint16
	slots [maxInterned]atomic.Pointer[meta]
}

// get returns the index+1 of the triple, 0 when the interner is full.
func (in *interner) get(label, owner, ct string) uint16 {
	k := meta{label, owner, ct}
	in.mu.RLock()
	i, ok := in.m[k]
	in.mu.RUnlock()
	if ok {
		return i
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if i, ok := in.m[k]; ok {
		return i
	}
	if in.m == nil {
		in.m = make(map[meta]uint16)
	}
	if len(in.m) >= maxInterned {
		return 0
	}
	i = uint16(len(in.m) + 1)
	in.slots[i-1].Store(&meta{label, owner, ct})
	in.m[k] = i
	return i
}

func (in *interner) at(i uint16) *meta { return in.slots[i-1].Load() }

// newItem packs e; an error means its arguments cannot be encoded.
func (c *Cache) newItem(e *Entry) (*item, error) {
	var klen [binary.MaxVarintLen64]byte
	kl := binary.PutUvarint(klen[:], uint64(len(e.Key)))
	var args []byte // nil Args stay nil: an entry without them is not rebuilt
	if e.Args != nil {
		b, err := msgpack.Marshal(map[string]any(e.Args))
		if err != nil {
			return nil, err
		}
		args = b
	}
	n := kl + len(e.Key) + len(args) + len(e.Value)
	hdr := item{
		created: e.CreatedAt.UnixNano(),
		avail:   e.AvailableTo.UnixNano(),
		n:       uint32(n),
		fillUS:  uint32(min(max(e.FillDuration/time.Microsecond, 0), math.MaxUint32)),
	}
	if !e.RelevanceTo.IsZero() {
		hdr.relev = e.RelevanceTo.UnixNano()
	}
	if e.it != nil {
		hdr.readAt = atomic.LoadUint32(&e.it.readAt)
		if hdr.readAt == itemWithdrawn {
			hdr.readAt = 0
		}
	}
	var m uint16
	if e.decoded == nil && len(args) <= math.MaxUint16 {
		m = c.meta.get(e.Label, e.Owner, e.ContentType)
	}
	if m == 0 {
		b := &boxedItem{item: hdr, argsN: len(args), m: &meta{e.Label, e.Owner, e.ContentType}, decoded: e.decoded}
		b.data = append(append(append(append(make([]byte, 0, n), klen[:kl]...), e.Key...), args...), e.Value...)
		return &b.item, nil
	}
	hdr.argsLen, hdr.metaID = uint16(len(args)), m
	// One pointer-free allocation: the header, then the bytes.
	buf := make([]byte, itemHeader+n)
	it := (*item)(unsafe.Pointer(unsafe.SliceData(buf)))
	*it = hdr
	b := buf[itemHeader:]
	b = b[copy(b, klen[:kl]):]
	b = b[copy(b, e.Key):]
	copy(b[copy(b, args):], e.Value)
	return it, nil
}

func (it *item) bytes() []byte {
	if b := it.boxed(); b != nil {
		return b.data
	}
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(it), itemHeader)), it.n)
}

// keyBytes returns the key and the bytes after it.
func (it *item) keyBytes() (key string, rest []byte) {
	b := it.bytes()
	kl, n := binary.Uvarint(b)
	b = b[n:]
	return unsafe.String(unsafe.SliceData(b), int(kl)), b[kl:]
}

// key returns the item's key; it shares the item's bytes.
func (it *item) key() string {
	k, _ := it.keyBytes()
	return k
}

func (it *item) argsSize() int {
	if b := it.boxed(); b != nil {
		return b.argsN
	}
	return int(it.argsLen)
}

func (it *item) value() []byte {
	_, b := it.keyBytes()
	a := it.argsSize()
	if len(b) == 0 && a == 0 {
		return nil // as stored: no args and no value
	}
	return b[a:len(b):len(b)]
}

// args decodes the item's arguments.
func (it *item) args() Args {
	a := it.argsSize()
	if a == 0 {
		return nil
	}
	var m map[string]any
	_, b := it.keyBytes()
	if err := msgpack.Unmarshal(b[:a], &m); err != nil {
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

// weight is what the store's weigher counts for an item: its allocation,
// with up to an eighth more for the rounding to the allocator's size
// classes (at most 12.5 % below 32 KiB, and 8 KiB pages above), and its slot
// in the store.
func (it *item) weight() uint32 {
	alloc := int64(itemHeader) + int64(it.n)
	w := alloc + alloc/8 + itemSlot
	if b := it.boxed(); b != nil {
		w += boxedExtra + int64(len(b.m.label)+len(b.m.owner)+len(b.m.contentType))
		if b.decoded != nil {
			// The decoded copy: a Go value is rarely larger than twice its
			// msgpack encoding.
			w += 16 + 2*int64(len(it.value()))
		}
	}
	return uint32(min(w, math.MaxUint32))
}

// fill sets e from the item of key, whose triple in holds; args are the
// entry's arguments when the caller has them (the arguments of a Get, whose
// key is the item's), nil to decode them.
func (it *item) fill(in *interner, e *Entry, key string, args Args) {
	it.fillArgs(in, e, key, args, true)
}

// fillArgs is fill that leaves Args nil, without decoding them, when args
// is nil and decode false.
func (it *item) fillArgs(in *interner, e *Entry, key string, args Args, decode bool) {
	if args == nil && decode {
		args = it.args()
	}
	var m *meta
	var decoded any
	if b := it.boxed(); b != nil {
		m, decoded = b.m, b.decoded
	} else {
		m = in.at(it.metaID)
	}
	*e = Entry{
		Label:        m.label,
		Key:          key,
		Args:         args,
		Value:        it.value(),
		ContentType:  m.contentType,
		Owner:        m.owner,
		CreatedAt:    time.Unix(0, it.created),
		AvailableTo:  time.Unix(0, it.avail),
		FillDuration: time.Duration(it.fillUS) * time.Microsecond,
		decoded:      decoded,
		it:           it,
	}
	if it.relev != 0 {
		e.RelevanceTo = time.Unix(0, it.relev)
	}
}

// build fills dst from the item of key, or a new Entry when dst is nil.
func build(in *interner, dst *Entry, it *item, key string, args Args) *Entry {
	if dst == nil {
		dst = new(Entry)
	}
	it.fill(in, dst, key, args)
	return dst
}

func (it *item) entry(in *interner, key string, args Args) *Entry {
	e := new(Entry)
	it.fill(in, e, key, args)
	return e
}
