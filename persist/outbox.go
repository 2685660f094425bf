package persist

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// OutboxItem is a delayed invalidation waiting in the outbox.
type OutboxItem struct {
	// ID identifies the item for Ack. IDs increase, also across reopens.
	ID uint64
	// Due is when the item should be applied, at nanosecond precision, in
	// UTC (compare with Equal).
	Due time.Time
	// Payload is the caller's encoding of the invalidation.
	Payload []byte
}

// Enqueue adds an item to the outbox and returns its ID once it is durable.
// The outbox is at-least-once: an item stays until Ack, so a crash between
// applying an item and acknowledging it applies it again after the restart.
func (s *Store) Enqueue(due time.Time, payload []byte) (uint64, error) {
	o := &op{kind: opEnqueue, t: due, payload: bytes.Clone(payload)}
	if err := s.do(o); err != nil {
		return 0, err
	}
	return o.id, nil
}

// Ack removes the item id from the outbox; call it after the item was
// applied. It returns ErrNotFound if there is no such item.
func (s *Store) Ack(id uint64) error {
	o := &op{kind: opAck, id: id}
	return s.do(o)
}

// DueItems returns up to limit items due at or before now, ordered by due
// time (then ID). limit <= 0 means no limit.
func (s *Store) DueItems(now time.Time, limit int) ([]OutboxItem, error) {
	return s.outboxItems(timeUpper(prefixOutbox, now), limit)
}

// Pending returns every item in the outbox, ordered by due time (then ID).
func (s *Store) Pending() ([]OutboxItem, error) {
	return s.outboxItems([]byte{prefixOutbox + 1}, 0)
}

func (s *Store) outboxItems(upper []byte, limit int) ([]OutboxItem, error) {
	var items []OutboxItem
	err := s.read(func(db *pebble.DB) error {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOutbox}, UpperBound: upper})
		if err != nil {
			return err
		}
		for valid := it.First(); valid && (limit <= 0 || len(items) < limit); valid = it.Next() {
			p, err := parseKey(it.Key())
			if err != nil {
				s.log.Error("persist: skipping a corrupt outbox key", "key", fmt.Sprintf("%q", it.Key()), "err", err)
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			items = append(items, OutboxItem{ID: p.ID, Due: p.Time, Payload: bytes.Clone(v)})
		}
		return it.Close()
	})
	return items, err
}

// enqueue writes the item and the sequence in one batch, so that IDs never
// repeat after a reopen even when every item was acknowledged.
func (t *txn) enqueue(id uint64, due time.Time, payload []byte) {
	k := outboxKey(due, id)
	t.setIndex(k, payload)
	t.set(outboxIDKey(id), k[1:9])
	t.setIndex(metaKey(metaOutboxSeq), binary.BigEndian.AppendUint64(nil, id))
}

func (t *txn) ack(id uint64) error {
	idKey := outboxIDKey(id)
	bits, found, err := t.get(idKey)
	if err != nil {
		return fmt.Errorf("persist: read outbox item %d: %w", id, err)
	}
	if !found {
		return fmt.Errorf("%w: outbox item %d", ErrNotFound, id)
	}
	if len(bits) != 8 {
		return fmt.Errorf("%w: outbox item %d: due of %d bytes", ErrCorrupt, id, len(bits))
	}
	k := append([]byte{prefixOutbox}, bits...)
	k = binary.BigEndian.AppendUint64(k, id)
	t.delIndex(k)
	t.del(idKey)
	return nil
}
