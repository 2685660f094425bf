package persist

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A stored value is valueVersion, then 0 (no deadline) or 1 followed by the
// 8-byte time of availableTo, then the value's bytes.
const valueVersion = 1

var errBadValue = fmt.Errorf("%w: bad value", ErrCorrupt)

func encodeValueEntry(value []byte, availableTo time.Time) []byte {
	b := make([]byte, 0, 2+8+len(value))
	b = append(b, valueVersion)
	if availableTo.IsZero() {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = appendTime(b, availableTo)
	}
	return append(b, value...)
}

// decodeValueEntry returns the value (aliasing b), its deadline (zero for
// none) and the 8-byte deadline as stored (nil for none).
func decodeValueEntry(b []byte) (value []byte, availableTo time.Time, bits []byte, err error) {
	if len(b) < 2 || b[0] != valueVersion {
		return nil, time.Time{}, nil, fmt.Errorf("%w: header", errBadValue)
	}
	switch b[1] {
	case 0:
		return b[2:], time.Time{}, nil, nil
	case 1:
		if len(b) < 10 {
			return nil, time.Time{}, nil, fmt.Errorf("%w: short deadline", errBadValue)
		}
		return b[10:], bitsTime(binary.BigEndian.Uint64(b[2:10])), b[2:10], nil
	default:
		return nil, time.Time{}, nil, fmt.Errorf("%w: flag %d", errBadValue, b[1])
	}
}

// PutValue stores the value of key until availableTo (zero: no deadline),
// replacing the previous one, so that a restarted owner can serve it. It
// returns once the value is durable; a fill that should not wait for the
// disk calls it from a goroutine. It returns ErrValuesDisabled unless the
// store was opened with KeepValues.
func (s *Store) PutValue(key string, value []byte, availableTo time.Time) error {
	if !s.cfg.KeepValues {
		return ErrValuesDisabled
	}
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalid)
	}
	return s.do(&op{kind: opPutValue, key: key, payload: bytes.Clone(value), t: availableTo})
}

// Value returns the stored value of key and its deadline. It returns
// ErrNotFound if there is none or if it expired (availableTo at or before
// Config.Now()), and ErrValuesDisabled unless the store was opened with
// KeepValues.
func (s *Store) Value(key string) ([]byte, time.Time, error) {
	if !s.cfg.KeepValues {
		return nil, time.Time{}, ErrValuesDisabled
	}
	var (
		value []byte
		until time.Time
	)
	err := s.read(func(db *pebble.DB) error {
		raw, closer, err := db.Get(valueKey(key))
		if errors.Is(err, pebble.ErrNotFound) {
			return fmt.Errorf("%w: value %q", ErrNotFound, key)
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		v, t, _, err := decodeValueEntry(raw)
		if err != nil {
			return err
		}
		if !t.IsZero() && !t.After(s.cfg.Now()) {
			return fmt.Errorf("%w: value %q expired", ErrNotFound, key)
		}
		value, until = bytes.Clone(v), t
		return nil
	})
	return value, until, err
}

func valueExpiryKey(bits []byte, key string) []byte {
	b := append([]byte{prefixValueExpiry}, bits...)
	return appendEsc(b, key)
}

// putValue writes the value and its expiry entry, removing the expiry entry
// of the value it replaces.
func (t *txn) putValue(key string, value []byte, availableTo time.Time) error {
	if _, err := t.deleteValue(key); err != nil {
		return err
	}
	entry := encodeValueEntry(value, availableTo)
	t.set(valueKey(key), entry)
	if !availableTo.IsZero() {
		t.setIndex(timeKey(prefixValueExpiry, availableTo, key), nil)
	}
	return nil
}

// deleteValue removes the value of key and its expiry entry.
func (t *txn) deleteValue(key string) (bool, error) {
	raw, found, err := t.get(valueKey(key))
	if err != nil {
		return false, fmt.Errorf("persist: read value %q: %w", key, err)
	}
	if !found {
		return false, nil
	}
	if _, _, bits, err := decodeValueEntry(raw); err == nil && bits != nil {
		t.delIndex(valueExpiryKey(bits, key))
	}
	t.del(valueKey(key))
	return true, nil
}

// expireValues removes up to limit values whose deadline is at or before
// now (see expireRecords).
func (t *txn) expireValues(now time.Time, limit int) (int, error) {
	it, err := t.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixValueExpiry},
		UpperBound: timeUpper(prefixValueExpiry, now),
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for valid := it.First(); valid && n < limit; valid = it.Next() {
		k := bytes.Clone(it.Key())
		key, err := lastKey(k, 1+8)
		if err != nil {
			t.delIndex(k)
			continue
		}
		raw, found, err := t.get(valueKey(key))
		if err != nil {
			return n, errors.Join(err, it.Close())
		}
		if !found {
			t.delIndex(k)
			continue
		}
		_, until, _, err := decodeValueEntry(raw)
		if err == nil && (until.IsZero() || until.After(now)) {
			continue // replaced earlier in this batch
		}
		if _, err := t.deleteValue(key); err != nil {
			return n, errors.Join(err, it.Close())
		}
		t.delIndex(k)
		n++
	}
	return n, it.Close()
}
