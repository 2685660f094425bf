package persist

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Get returns the record of key, or an error wrapping ErrNotFound.
func (s *Store) Get(key string) (Record, error) {
	var rec Record
	err := s.read(func(db *pebble.DB) error {
		var err error
		rec, err = getRecord(db, key)
		return err
	})
	return rec, err
}

func getRecord(r pebble.Reader, key string) (Record, error) {
	raw, closer, err := r.Get(recordKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return Record{}, fmt.Errorf("%w: record %q", ErrNotFound, key)
	}
	if err != nil {
		return Record{}, fmt.Errorf("persist: get %q: %w", key, err)
	}
	defer closer.Close()
	return decodeRecord(raw) // copies everything out of raw
}

// records fetches the records of keys from r, in order. A key whose record
// is missing or corrupt is logged and skipped: one bad record must not hide
// the others from an invalidation.
func (s *Store) records(r pebble.Reader, keys []string) ([]Record, error) {
	recs := make([]Record, 0, len(keys))
	for _, k := range keys {
		rec, err := getRecord(r, k)
		switch {
		case err == nil:
			recs = append(recs, rec)
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrCorrupt):
			s.log.Error("persist: index entry without a readable record", "key", k, "err", err)
		default:
			return nil, err
		}
	}
	return recs, nil
}

// scanKeys calls f with the cache key that ends each index key starting
// with prefix, from lower (inclusive, nil for the prefix itself), until f
// returns false.
func scanKeys(r pebble.Reader, prefix, lower []byte, f func(key string) bool) error {
	if lower == nil {
		lower = prefix
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixSuccessor(prefix)})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		k, err := lastKey(it.Key(), len(prefix))
		if err != nil {
			return errors.Join(fmt.Errorf("index key %q: %w", it.Key(), err), it.Close())
		}
		if !f(k) {
			break
		}
	}
	return it.Close()
}

// List returns up to limit records of label ordered by key, starting after
// the key after ("" for the first page), and the key to pass as after for
// the next page ("" when there is none). limit <= 0 means no limit.
func (s *Store) List(label, after string, limit int) ([]Record, string, error) {
	var (
		recs []Record
		next string
	)
	err := s.readSnapshot(func(r pebble.Reader) error {
		keys, more, err := listKeys(r, label, after, limit)
		if err != nil {
			return err
		}
		if more {
			next = keys[len(keys)-1]
		}
		recs, err = s.records(r, keys)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return recs, next, nil
}

// listKeys merges the shape indexes of label in key order: one iterator per
// shape, each positioned after the key after, the smallest key taken each
// step.
func listKeys(r pebble.Reader, label, after string, limit int) (keys []string, more bool, err error) {
	shapeList, err := shapes(r, label)
	if err != nil {
		return nil, false, err
	}
	type cursor struct {
		it     *pebble.Iterator
		prefix int
		key    string
		valid  bool
	}
	cursors := make([]*cursor, 0, len(shapeList))
	defer func() {
		for _, c := range cursors {
			err = errors.Join(err, c.it.Close())
		}
	}()
	advance := func(c *cursor, valid bool) error {
		c.valid = valid
		if !valid {
			return c.it.Error()
		}
		k, err := lastKey(c.it.Key(), c.prefix)
		c.key = k
		return err
	}
	for _, shape := range shapeList {
		prefix := shapePrefix(label, shape)
		lower := prefix
		if after != "" {
			lower = prefixSuccessor(appendEsc(bytes.Clone(prefix), after))
		}
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixSuccessor(prefix)})
		if err != nil {
			return nil, false, err
		}
		c := &cursor{it: it, prefix: len(prefix)}
		cursors = append(cursors, c)
		if err := advance(c, it.First()); err != nil {
			return nil, false, err
		}
	}
	for {
		var min *cursor
		for _, c := range cursors {
			if c.valid && (min == nil || c.key < min.key) {
				min = c
			}
		}
		if min == nil {
			return keys, false, nil
		}
		if limit > 0 && len(keys) == limit {
			return keys, true, nil
		}
		keys = append(keys, min.key)
		if err := advance(min, min.it.Next()); err != nil {
			return nil, false, err
		}
	}
}

// Labels returns the labels that have at least one record, sorted. It seeks
// from label to label instead of reading every record's entry.
func (s *Store) Labels() ([]string, error) {
	var labels []string
	err := s.read(func(db *pebble.DB) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixShape}, UpperBound: []byte{prefixShape + 1}})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; {
			label, _, err := readEsc(it.Key()[1:])
			if err != nil {
				return errors.Join(err, it.Close())
			}
			labels = append(labels, label)
			valid = it.SeekGE(prefixSuccessor(shapeLabelPrefix(label)))
		}
		return it.Close()
	})
	return labels, err
}

// shapes returns the distinct shape components of label, seeking from one
// shape to the next. There are as many shapes as distinct sets of
// constrained attributes among the label's records: a handful per worker.
func shapes(r pebble.Reader, label string) ([]string, error) {
	prefix := shapeLabelPrefix(label)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixSuccessor(prefix)})
	if err != nil {
		return nil, err
	}
	var out []string
	for valid := it.First(); valid; {
		shape, _, err := readEsc(it.Key()[len(prefix):])
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		out = append(out, shape)
		valid = it.SeekGE(prefixSuccessor(appendEsc(bytes.Clone(prefix), shape)))
	}
	return out, it.Close()
}

// Match returns the records of label, ordered by key, that an event with
// attrs affects: those that, for every attribute a of attrs, either
// constrain a to a list holding one of attrs[a] or do not constrain a (a is
// not a key of their Match). An empty attrs matches every record of label.
//
// The records of a label are grouped by shape, the set of attributes they
// constrain. For each shape, the attributes of the event it constrains are
// Q: with Q empty, every record of the shape matches; otherwise the result
// is the intersection, over a in Q, of the union over v in attrs[a] of the
// value index (label, shape ID, a, v). The cost is one seek per shape plus the
// index entries read, never one lookup per combination of attributes.
func (s *Store) Match(label string, attrs map[string][]string) ([]Record, error) {
	var recs []Record
	err := s.readSnapshot(func(r pebble.Reader) error {
		shapeList, err := shapes(r, label)
		if err != nil {
			return err
		}
		var keys []string
		for _, shape := range shapeList {
			names, err := decodeShape(shape)
			if err != nil {
				return err
			}
			var q []string
			for _, a := range names {
				if _, ok := attrs[a]; ok {
					q = append(q, a)
				}
			}
			if len(q) == 0 {
				err := scanKeys(r, shapePrefix(label, shape), nil, func(k string) bool {
					keys = append(keys, k)
					return true
				})
				if err != nil {
					return err
				}
				continue
			}
			var set map[string]struct{}
			for i, a := range q {
				cur := make(map[string]struct{})
				for _, v := range attrs[a] {
					err := scanKeys(r, matchPrefix(label, shape, a, v), nil, func(k string) bool {
						if _, ok := set[k]; ok || i == 0 {
							cur[k] = struct{}{}
						}
						return true
					})
					if err != nil {
						return err
					}
				}
				set = cur
				if len(set) == 0 {
					break
				}
			}
			for k := range set {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys) // shapes whose IDs collide share value entries
		recs, err = s.records(r, keys)
		// A shape whose ID collides with another's reads the other's value
		// entries too: keep the exact predicate.
		recs = slices.DeleteFunc(recs, func(rec Record) bool { return !matches(rec.Match, attrs) })
		return err
	})
	return recs, err
}

// matches is the predicate of Match for one record's constrained values.
func matches(match, attrs map[string][]string) bool {
	for a, want := range attrs {
		have, ok := match[a]
		if !ok {
			continue
		}
		in := func(v string) bool { return slices.Contains(have, v) }
		if len(have) > 16 && len(want) > 1 {
			set := make(map[string]struct{}, len(have))
			for _, v := range have {
				set[v] = struct{}{}
			}
			in = func(v string) bool { _, ok := set[v]; return ok }
		}
		if !slices.ContainsFunc(want, in) {
			return false
		}
	}
	return true
}

// StaleBefore returns up to limit records whose RelevanceTo is set and at or
// before t, oldest deadline first. limit <= 0 means no limit.
func (s *Store) StaleBefore(t time.Time, limit int) ([]Record, error) {
	var recs []Record
	err := s.readSnapshot(func(r pebble.Reader) error {
		it, err := r.NewIter(&pebble.IterOptions{
			LowerBound: []byte{prefixRelevance},
			UpperBound: timeUpper(prefixRelevance, t),
		})
		if err != nil {
			return err
		}
		var keys []string
		for valid := it.First(); valid && (limit <= 0 || len(keys) < limit); valid = it.Next() {
			k, err := lastKey(it.Key(), 1+8)
			if err != nil {
				return errors.Join(err, it.Close())
			}
			keys = append(keys, k)
		}
		if err := it.Close(); err != nil {
			return err
		}
		all, err := s.records(r, keys)
		// The index orders clamped times; keep the exact predicate.
		recs = slices.DeleteFunc(all, func(rec Record) bool {
			return rec.RelevanceTo.IsZero() || rec.RelevanceTo.After(t)
		})
		return err
	})
	return recs, err
}
