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
	total := 0
	var errs []error
	for _, t := range ev.Targets {
		w, ok := h.Worker(t.Label)
		if !ok {
			continue
		}
		keys, err := targetKeys(w, t, h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := w.InvalidateKeys(ctx, keys)
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
