package persist

// Key layout.
//
// Every Pebble key starts with one prefix byte naming its table. Strings
// (labels, cache keys, attribute names, attribute values) are written as
// escaped components: each 0x00 byte of the string becomes 0x00 0xFF, and
// the component ends with 0x00 0x01. The escaping keeps byte order (a < b as
// strings iff esc(a) < esc(b) as bytes) and no component is a prefix of
// another, so "ab" never shares a prefix scan with "a"+"b…" and a label
// "foo" never sees the keys of label "foo2". Times are the Unix nanoseconds
// of the time (clamped to the int64 range: years 1678–2262) with the sign
// bit flipped, written big-endian in 8 bytes, so that they sort as times;
// outbox IDs are big-endian uint64.
//
//	0x00 esc(name)                      meta: "format" → version byte,
//	                                    "outbox-seq" → last outbox ID
//	0x01 esc(key)                       record: version byte + msgpack
//	0x02 esc(label) esc(shape) esc(key) shape index: the records of a label
//	                                    by the set of attributes they
//	                                    constrain (Match, List, Labels)
//	0x03 esc(label) shapeID esc(attr) esc(value) esc(key)
//	                                    value index: one entry per value a
//	                                    record constrains (Match)
//	0x04 time(relevance_to) esc(key)    relevance index (StaleBefore); only
//	                                    records with a soft TTL
//	0x05 time(available_to) esc(key)   expiry index (RemoveExpired); only
//	                                    records with a hard TTL
//	0x06 time(due) id                   outbox item → payload
//	0x07 id                             outbox by ID → time(due) (Ack)
//	0x08 esc(key)                       value → deadline + bytes
//	0x09 time(available_to) esc(key)    value expiry index
//
// A shape is the sorted list of attribute names a record constrains (the
// keys of Record.Match), written as the concatenation of their escaped forms
// and then escaped once more as one component. The shape index holds it
// whole, once per record; the value index holds its shapeID instead, the
// big-endian 8-byte xxhash of the shape component's content, so that a
// record's index bytes grow with its number of values, not with the number
// of values times the number of attributes (format 1 wrote the whole shape
// in every value entry: a record of n arguments cost n² bytes). Two shapes
// of one label with the same ID would share value entries; Match keeps
// only the records that match exactly, so such a collision costs a wasted
// read, never a wrong answer. Index entries have empty
// values: the record is the only copy of the data. The index entries of a
// record are a pure function of the record (indexKeys), so replacing or
// deleting a record deletes exactly the entries its old version produced,
// in the same batch.
//
// A record costs 4 + (number of constrained values) keys. There is no
// separate label index: a label's records are its shapes' records (a few
// shapes per worker), and List merges them in key order. Every key is
// written to the memtable and then rewritten by each compaction, so a key
// per record saved is CPU saved on both sides.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Table prefixes; see the layout above.
const (
	prefixMeta        byte = 0x00
	prefixRecord      byte = 0x01
	prefixShape       byte = 0x02
	prefixMatch       byte = 0x03
	prefixRelevance   byte = 0x04
	prefixExpiry      byte = 0x05
	prefixOutbox      byte = 0x06
	prefixOutboxID    byte = 0x07
	prefixValue       byte = 0x08
	prefixValueExpiry byte = 0x09
)

// Meta names.
const (
	metaFormat    = "format"
	metaOutboxSeq = "outbox-seq"
)

// errBadKey is wrapped by every key decoding error.
var errBadKey = fmt.Errorf("%w: bad key", ErrCorrupt)

// appendEsc appends the escaped component of s to b.
func appendEsc[S ~string | ~[]byte](b []byte, s S) []byte {
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != 0x00 {
			i++
		}
		b = append(b, s[:i]...)
		if i == len(s) {
			break
		}
		b = append(b, 0x00, 0xFF)
		s = s[i+1:]
	}
	return append(b, 0x00, 0x01)
}

// readEsc decodes one escaped component at the start of b and returns it
// and the rest of b.
func readEsc(b []byte) (string, []byte, error) {
	// Fast path: no escaped zero bytes before the terminator.
	i := bytes.IndexByte(b, 0x00)
	if i < 0 || i+1 >= len(b) {
		return "", nil, fmt.Errorf("%w: unterminated component", errBadKey)
	}
	if b[i+1] == 0x01 {
		return string(b[:i]), b[i+2:], nil
	}
	out := make([]byte, 0, len(b))
	for {
		j := bytes.IndexByte(b, 0x00)
		if j < 0 || j+1 >= len(b) {
			return "", nil, fmt.Errorf("%w: unterminated component", errBadKey)
		}
		out = append(out, b[:j]...)
		switch b[j+1] {
		case 0x01:
			return string(out), b[j+2:], nil
		case 0xFF:
			out = append(out, 0x00)
			b = b[j+2:]
		default:
			return "", nil, fmt.Errorf("%w: bad escape 0x00 0x%02x", errBadKey, b[j+1])
		}
	}
}

// minTime and maxTime bound the times that the index can order exactly.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// timeBits is the order-preserving 8-byte form of t, clamped to the range
// of int64 Unix nanoseconds.
func timeBits(t time.Time) uint64 {
	var n int64
	switch {
	case t.Before(minTime):
		n = math.MinInt64
	case t.After(maxTime):
		n = math.MaxInt64
	default:
		n = t.UnixNano()
	}
	return uint64(n) ^ (1 << 63)
}

// bitsTime is the inverse of timeBits (in UTC).
func bitsTime(u uint64) time.Time {
	return time.Unix(0, int64(u^(1<<63))).UTC()
}

func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, timeBits(t))
}

func readUint64(b []byte) (uint64, []byte, error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("%w: short integer", errBadKey)
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}

// prefixSuccessor returns the smallest key greater than every key that
// starts with p (nil when there is none). It is the exclusive upper bound of
// a prefix scan.
func prefixSuccessor(p []byte) []byte {
	out := bytes.Clone(p)
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] != 0xFF {
			out[i]++
			return out[:i+1]
		}
	}
	return nil
}

// timeUpper is the exclusive upper bound of the keys of table prefix whose
// time component is at or before t.
func timeUpper(prefix byte, t time.Time) []byte {
	return prefixSuccessor(appendTime([]byte{prefix}, t))
}

// encodeShape is the shape component content of a record: its constrained
// attribute names, sorted, each escaped.
func encodeShape(attrs []string) string {
	var b []byte
	for _, a := range attrs {
		b = appendEsc(b, a)
	}
	return string(b)
}

// decodeShape is the inverse of encodeShape.
func decodeShape(s string) ([]string, error) {
	b := []byte(s)
	var attrs []string
	for len(b) > 0 {
		a, rest, err := readEsc(b)
		if err != nil {
			return nil, err
		}
		if n := len(attrs); n > 0 && attrs[n-1] >= a {
			return nil, fmt.Errorf("%w: shape attributes not sorted", errBadKey)
		}
		attrs = append(attrs, a)
		b = rest
	}
	return attrs, nil
}

// shapeOf returns the sorted attribute names that m constrains.
func shapeOf(m map[string][]string) []string {
	return appendShape(make([]string, 0, len(m)), m)
}

// appendShape appends the sorted attribute names that m constrains to dst
// (callers on the write path pass a stack array).
func appendShape(dst []string, m map[string][]string) []string {
	n := len(dst)
	for a := range m {
		dst = append(dst, a)
	}
	slices.Sort(dst[n:])
	return dst
}

func metaKey(name string) []byte { return appendEsc([]byte{prefixMeta}, name) }

func recordKey(key string) []byte { return appendEsc([]byte{prefixRecord}, key) }

func shapeLabelPrefix(label string) []byte { return appendEsc([]byte{prefixShape}, label) }

func shapePrefix(label, shape string) []byte { return appendEsc(shapeLabelPrefix(label), shape) }

// shapeID is the value index's stand-in for a shape component's content.
func shapeID[S ~string | ~[]byte](shape S) uint64 { return xxhash.Sum64([]byte(shape)) }

func matchPrefix(label, shape, attr, value string) []byte {
	b := appendEsc([]byte{prefixMatch}, label)
	b = binary.BigEndian.AppendUint64(b, shapeID(shape))
	b = appendEsc(b, attr)
	return appendEsc(b, value)
}

func timeKey(prefix byte, t time.Time, key string) []byte {
	return appendEsc(appendTime([]byte{prefix}, t), key)
}

func outboxKey(due time.Time, id uint64) []byte {
	b := appendTime([]byte{prefixOutbox}, due)
	return binary.BigEndian.AppendUint64(b, id)
}

func outboxIDKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixOutboxID}, id)
}

func valueKey(key string) []byte { return appendEsc([]byte{prefixValue}, key) }

// indexKeys returns the index entries of rec, all with empty values.
func indexKeys(rec *Record) [][]byte {
	keys, _ := appendIndexKeys(nil, nil, rec)
	return keys
}

// appendIndexKeys appends the index entries of rec to buf, and their
// slices of buf (capacity-capped, never written again) to keys. The writer
// calls it for every record with one buffer per batch, so it allocates
// nothing once buf has grown: slices handed out before buf is reallocated
// keep pointing at the old array, whose bytes do not change.
func appendIndexKeys(keys [][]byte, buf []byte, rec *Record) ([][]byte, []byte) {
	var attrBuf [8]string
	attrs := appendShape(attrBuf[:0], rec.Match)

	// The components, once: label, shape (escaped twice), shape ID and key.
	start := len(buf)
	buf = appendEsc(buf, rec.Label)
	nLabel := len(buf)
	for _, a := range attrs {
		buf = appendEsc(buf, a)
	}
	nInner := len(buf)
	id := shapeID(buf[nLabel:nInner])
	buf = appendEsc(buf, buf[nLabel:nInner])
	nShape := len(buf)
	buf = binary.BigEndian.AppendUint64(buf, id)
	nID := len(buf)
	buf = appendEsc(buf, rec.Key)
	comps := buf[start:len(buf):len(buf)]
	label := comps[:nLabel-start]
	shape := comps[nInner-start : nShape-start]
	sid := comps[nShape-start : nID-start]
	key := comps[nID-start:]

	add := func(from int) {
		keys = append(keys, buf[from:len(buf):len(buf)])
	}
	from := len(buf)
	buf = append(buf, prefixShape)
	buf = append(buf, label...)
	buf = append(buf, shape...)
	buf = append(buf, key...)
	add(from)
	for _, a := range attrs {
		vs := rec.Match[a]
		var seen map[string]struct{} // only for long lists
		if len(vs) > 16 {
			seen = make(map[string]struct{}, len(vs))
		}
		for i, v := range vs {
			if seen != nil {
				if _, dup := seen[v]; dup {
					continue
				}
				seen[v] = struct{}{}
			} else if slices.Contains(vs[:i], v) {
				continue
			}
			from := len(buf)
			buf = append(buf, prefixMatch)
			buf = append(buf, label...)
			buf = append(buf, sid...)
			buf = appendEsc(buf, a)
			buf = appendEsc(buf, v)
			buf = append(buf, key...)
			add(from)
		}
	}
	if !rec.RelevanceTo.IsZero() {
		from := len(buf)
		buf = appendTime(append(buf, prefixRelevance), rec.RelevanceTo)
		buf = append(buf, key...)
		add(from)
	}
	if !rec.AvailableTo.IsZero() {
		from := len(buf)
		buf = appendTime(append(buf, prefixExpiry), rec.AvailableTo)
		buf = append(buf, key...)
		add(from)
	}
	return keys, buf
}

// parsedKey is a decoded Pebble key; which fields are set depends on Table.
type parsedKey struct {
	Table  byte
	Name   string   // meta
	Label  string   // shape, match
	Shape  []string // shape
	SID    uint64   // match: the shape ID
	Attr   string   // match
	Value  string   // match
	Key    string   // record, shape, match, relevance, expiry, value, value expiry
	Time   time.Time
	ID     uint64 // outbox, outbox ID
	shapeC string // the shape component as stored
}

// parseKey decodes any key of the layout. It returns an error wrapping
// ErrCorrupt for anything that is not exactly one well-formed key.
func parseKey(b []byte) (parsedKey, error) {
	if len(b) == 0 {
		return parsedKey{}, fmt.Errorf("%w: empty key", errBadKey)
	}
	p := parsedKey{Table: b[0]}
	rest := b[1:]
	var err error
	str := func(dst *string) {
		if err == nil {
			*dst, rest, err = readEsc(rest)
		}
	}
	tim := func() {
		if err == nil {
			var u uint64
			u, rest, err = readUint64(rest)
			p.Time = bitsTime(u)
		}
	}
	id := func() {
		if err == nil {
			p.ID, rest, err = readUint64(rest)
		}
	}
	switch p.Table {
	case prefixMeta:
		str(&p.Name)
	case prefixRecord, prefixValue:
		str(&p.Key)
	case prefixShape:
		str(&p.Label)
		str(&p.shapeC)
		if err == nil {
			p.Shape, err = decodeShape(p.shapeC)
		}
		str(&p.Key)
	case prefixMatch:
		str(&p.Label)
		id()
		p.SID, p.ID = p.ID, 0
		str(&p.Attr)
		str(&p.Value)
		str(&p.Key)
	case prefixRelevance, prefixExpiry, prefixValueExpiry:
		tim()
		str(&p.Key)
	case prefixOutbox:
		tim()
		id()
	case prefixOutboxID:
		id()
	default:
		return parsedKey{}, fmt.Errorf("%w: unknown table 0x%02x", errBadKey, p.Table)
	}
	if err != nil {
		return parsedKey{}, err
	}
	if len(rest) != 0 {
		return parsedKey{}, fmt.Errorf("%w: %d trailing bytes", errBadKey, len(rest))
	}
	return p, nil
}

// lastKey decodes the cache key that ends an index key, given the length of
// the prefix that the caller already knows. It is the hot path of index
// scans, so it does not parse the whole key.
func lastKey(b []byte, prefixLen int) (string, error) {
	if prefixLen > len(b) {
		return "", fmt.Errorf("%w: key shorter than its prefix", errBadKey)
	}
	k, rest, err := readEsc(b[prefixLen:])
	if err != nil {
		return "", err
	}
	if len(rest) != 0 {
		return "", fmt.Errorf("%w: %d trailing bytes", errBadKey, len(rest))
	}
	return k, nil
}
