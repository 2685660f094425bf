package node

import (
	"context"
	"fmt"

	"github.com/cachenode/cachenode/invalidation"
)

// InvalidateEvent applies several requests as one event with the given
// ID: their targets are resolved, merged and de-duplicated, so that a key
// named by several of them is rebuilt once, and the event is broadcast as
// Invalidate does (never delayed: the caller waits for the members'
// acknowledgement). A member that already applied an event of this ID
// does not apply it again, so a caller that retries after a failure, or
// replays after a crash, with the same ID refreshes nothing twice.
//
// It is the entry of change sources (a database's committed transactions,
// one event per transaction touching several models); an empty id gets a
// random one. Errors are those of Invalidate.
func (n *Node) InvalidateEvent(ctx context.Context, id string, reqs []invalidation.Request) (invalidation.Result, error) {
	var targets []invalidation.Target
	for i := range reqs {
		ts, err := invalidation.Resolve(&reqs[i], n.rules, n.known)
		if err != nil {
			return invalidation.Result{}, fmt.Errorf("request %d: %w", i, err)
		}
		targets = append(targets, ts...)
	}
	if len(targets) == 0 {
		return invalidation.Result{}, nil
	}
	if id == "" {
		id = invalidation.NewID()
	}
	ev := invalidation.Event{ID: id, Origin: n.cfg.Name, Targets: invalidation.Dedup(targets)}
	return n.broadcast(ctx, &ev)
}
