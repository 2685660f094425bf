package invalidation

import (
	"context"
	"errors"
	"fmt"

	"github.com/cachenode/cachenode/worker"
)

// Host is the node an event is applied on.
type Host interface {
	// Worker returns the worker of label on this node.
	Worker(label string) (*worker.Worker, bool)
	// OwnedRecordKeys returns the keys of label that this node owns and has
	// created-cache records of, restricted to those that match (every key
	// of the label when match is nil). It is the records index query.
	OwnedRecordKeys(label string, match map[string][]string) ([]string, error)
}

// Apply applies an event on one node and returns how many keys it acted on
// (refreshed, dropped, or stopped from being stored). For each target:
//
//   - the keys this node owns are found through its created-cache records
//     and refreshed (or dropped, per worker);
//   - the in-memory entries and running computations of the label are
//     scanned as well: they hold the near-cache copies of keys other nodes
//     own (dropped, the owner rebuilds them), fills still running (never
//     kept), and owned entries whose record is still in the background
//     writer's queue (delay_logging).
//
// A member that has no worker of a label holds none of its keys and skips
// the target. Apply waits for the rebuilds, so that when it returns this
// node serves no value the event invalidated.
func Apply(ctx context.Context, ev *Event, h Host) (int, error) {
	return ApplyScope(ctx, ev, h, worker.ScopeAll)
}

// ApplyScope is Apply for the keys of one scope: a cluster applies an event
// to the keys each member owns first (worker.ScopeOwned) and to the
// near-cache copies only when every owner is done (worker.ScopeNear), so
// that a non-owner that dropped its copy cannot fetch the old value from an
// owner that has not applied the event yet.
func ApplyScope(ctx context.Context, ev *Event, h Host, scope worker.Scope) (int, error) {
	// The keys of every target first, per label and each once, so that a
	// key named by several targets (several changes, or several events
	// merged into one) is rebuilt once, not once per target.
	type labelKeys struct {
		w    *worker.Worker
		keys []string
		seen map[string]struct{}
	}
	var labels []*labelKeys
	byLabel := make(map[string]*labelKeys)
	var errs []error
	for _, t := range ev.Targets {
		lk := byLabel[t.Label]
		if lk == nil {
			w, ok := h.Worker(t.Label)
			if !ok {
				continue
			}
			lk = &labelKeys{w: w, seen: make(map[string]struct{})}
			byLabel[t.Label] = lk
			labels = append(labels, lk)
		}
		keys, err := targetKeys(lk.w, t, h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, k := range keys {
			if _, dup := lk.seen[k]; !dup {
				lk.seen[k] = struct{}{}
				lk.keys = append(lk.keys, k)
			}
		}
	}
	total := 0
	for _, lk := range labels {
		n, err := lk.w.InvalidateKeysScope(ctx, lk.keys, scope)
		total += n
		if err != nil {
			if ctx.Err() != nil {
				return total, err
			}
			// A failed rebuild removed the entry: the event is applied.
			if !errors.Is(err, worker.ErrFill) {
				errs = append(errs, err)
			}
		}
	}
	return total, errors.Join(errs...)
}

func targetKeys(w *worker.Worker, t Target, h Host) ([]string, error) {
	switch t.Kind {
	case KindKey:
		k, err := w.Key(t.Args)
		if err != nil {
			return nil, fmt.Errorf("invalidation: %s: %w", t.Label, err)
		}
		return []string{k}, nil
	case KindAll:
		return w.KeysWhere(nil), nil
	case KindMatch:
		owned, err := h.OwnedRecordKeys(t.Label, t.Match)
		if err != nil {
			return nil, fmt.Errorf("invalidation: records of %s: %w", t.Label, err)
		}
		inMemory := w.KeysWhere(func(a worker.Args) bool {
			mv, err := worker.MatchValues(a)
			return err == nil && Matches(mv, t.Match)
		})
		seen := make(map[string]struct{}, len(owned)+len(inMemory))
		keys := make([]string, 0, len(owned)+len(inMemory))
		for _, list := range [][]string{owned, inMemory} {
			for _, k := range list {
				if _, dup := seen[k]; !dup {
					seen[k] = struct{}{}
					keys = append(keys, k)
				}
			}
		}
		return keys, nil
	}
	return nil, fmt.Errorf("%w: target kind %d", ErrBadRequest, t.Kind)
}
