package worker

import (
	"context"
	"time"
)

// Value is what a getter produces: the encoded bytes of the value and their
// media type (an origin's Content-Type; "application/msgpack" for typed
// workers).
type Value struct {
	Data        []byte
	ContentType string

	// decoded is the Go value Data encodes, when the fill happened in this
	// process through a typed worker; it spares local hits a decode.
	decoded any
}

// Getter builds the value of a worker from a call's arguments.
type Getter interface {
	Get(ctx context.Context, args Args) (Value, error)
}

// GetterFunc adapts a function to [Getter].
type GetterFunc func(ctx context.Context, args Args) (Value, error)

// Get calls f.
func (f GetterFunc) Get(ctx context.Context, args Args) (Value, error) { return f(ctx, args) }

var _ Getter = GetterFunc(nil)

// Entry is a cached value with its metadata: the CachedEntity of the
// original. The store keeps entries packed (see item) and builds an Entry
// for each read: two reads of one entry give equal Entries, not the same
// pointer. An Entry is immutable once a worker returned it; its Value
// shares the store's bytes and must not be modified.
type Entry struct {
	Label string
	Key   string
	// Args are the arguments the value was built from; an invalidation
	// rebuilds the entry from them.
	Args        Args
	Value       []byte
	ContentType string
	// Owner is the name of the node that filled the entry ("" for a
	// standalone cache).
	Owner     string
	CreatedAt time.Time
	// RelevanceTo is the soft deadline, zero when the worker had no
	// relevance invalidation at fill time.
	RelevanceTo time.Time
	// AvailableTo is the hard deadline: the entry is gone after it.
	AvailableTo  time.Time
	FillDuration time.Duration

	decoded any
	// it is the store's item the entry was read from or stored as (nil for
	// an entry that was not stored): its read time and withdrawal.
	it *item
}

// Expired reports whether the entry is past its hard deadline at now, or
// was withdrawn by an invalidation whose rebuild is queued.
func (e *Entry) Expired(now time.Time) bool {
	return !now.Before(e.AvailableTo) || (e.it != nil && e.it.withdrawn())
}

// Status says how a Get was answered.
type Status uint8

const (
	// Hit: a fresh entry was in the cache.
	Hit Status = iota
	// Miss: the value was computed (here, or by the owner) for this call or
	// for a call it waited on.
	Miss
	// Stale: the entry was past its relevance deadline; it was served while
	// one rebuild runs in the background.
	Stale
	// Fallback: the owner could not be reached in time, so the value was
	// computed here and not kept.
	Fallback
)

// String returns the X-Cache form of s: hit, miss, stale or fallback.
func (s Status) String() string {
	switch s {
	case Hit:
		return "hit"
	case Miss:
		return "miss"
	case Stale:
		return "stale"
	case Fallback:
		return "fallback"
	}
	return "unknown"
}

// PeerPicker is the seam to the cluster. The node implements it; a
// standalone cache has none and owns every key.
type PeerPicker interface {
	// PickPeer returns the owner of key when it is another node; ok is false
	// when this node owns the key.
	PickPeer(key string) (p Peer, ok bool)
}

// Peer is another node that can answer for the keys it owns.
type Peer interface {
	// Name is the node's name, used as the Owner of entries it filled.
	Name() string
	// Fetch asks the owner for the entry of req and how the owner answered
	// it (a hit, a miss it filled, a stale value). The owner fills it once for
	// the whole cluster. An error that wraps [ErrFill] means the owner's
	// getter failed: the caller does not retry it locally. Any other error
	// (unreachable, timeout, protocol) makes the caller compute the value
	// itself and answer [Fallback]. Fetch must give up at req.Deadline,
	// which ctx does not carry.
	Fetch(ctx context.Context, req FetchRequest) (*Entry, Status, error)
}

// FetchRequest is what a node asks the owner of a key for.
type FetchRequest struct {
	Label     string
	Key       string
	Args      Args
	Overrides Settings
	// Deadline is when the caller stops waiting for the owner: the end of
	// the call's wait budget. It is not put in the context: a context's
	// timer and channel were a third of a remote hit's allocations.
	Deadline time.Time
}
