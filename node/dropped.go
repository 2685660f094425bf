package node

import (
	"sync"

	"github.com/cachenode/cachenode/invalidation"
)

// Dropped tells a listener registered with [Node.OnDropped] that values
// this node served may not be served as they were any more. A front that
// remembers which keys its clients cached (the RESP front's client
// tracking) turns it into invalidation messages.
type Dropped struct {
	// Targets are the targets of an invalidation event this node has just
	// applied (its owners' round, its near-copy round, or a gossiped or
	// redelivered event): the keys they name were refreshed or dropped
	// here.
	Targets []invalidation.Target
	// Ring: the ring changed; a key may have another owner now, and the
	// near copies of the moved keys were dropped.
	Ring bool
	// All: every entry of this node was dropped (after a pause, on the
	// minority side of a partition, or when a member came back from dead).
	All bool
}

// droppedListeners are the listeners of Node.OnDropped.
type droppedListeners struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(Dropped) // guarded by mu
}

// OnDropped registers f to be called after this node applied an
// invalidation event, after a ring change, and after it dropped every
// entry. f runs synchronously in the goroutine that applied the change,
// before that change is acknowledged (for an invalidation: before the
// member answers the broadcast, so before POST /v1/invalidate returns on
// whichever node it was sent to): it must not block for long. The
// returned function unregisters f.
func (n *Node) OnDropped(f func(Dropped)) (stop func()) {
	l := &n.dropped
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fns == nil {
		l.fns = make(map[int]func(Dropped))
	}
	id := l.next
	l.next++
	l.fns[id] = f
	return func() {
		l.mu.Lock()
		delete(l.fns, id)
		l.mu.Unlock()
	}
}

// notifyDropped calls the OnDropped listeners with d.
func (n *Node) notifyDropped(d Dropped) {
	l := &n.dropped
	l.mu.Lock()
	fns := make([]func(Dropped), 0, len(l.fns))
	for _, f := range l.fns {
		fns = append(fns, f)
	}
	l.mu.Unlock()
	for _, f := range fns {
		f(d)
	}
}
