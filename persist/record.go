package persist

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Record is the created-cache record of one live key: what was cached, from
// which arguments, by whom and until when. It is the index that automatic
// invalidation, rebuilds, the relevance sweep and the admin query.
type Record struct {
	// Label is the worker's label.
	Label string
	// Key is the full cache key (it already includes the label). It is the
	// record's identity: a new record of the same key replaces the old one.
	Key string
	// Args are the worker's arguments as given. They are stored with
	// msgpack and come back as nil, bool, int64, uint64, float64, string,
	// []byte, time.Time, []any and map[string]any: enough to call the
	// getter again. Other types (structs, channels, maps with non-string
	// keys) make Put fail. The store keeps a reference to the maps: do not
	// modify Args or Match after passing a record to Put or PutAsync.
	Args map[string]any
	// Match is, per argument, the normalized values it constrains, for
	// matching change events (computed by the caller). An argument absent
	// from Match does not constrain that attribute; one present with an
	// empty list constrains it to nothing, so no event on that attribute
	// matches it.
	Match map[string][]string
	// Owner is the name of the node that owns the key.
	Owner string
	// CreatedAt is when the fill finished.
	CreatedAt time.Time
	// RelevanceTo is the soft deadline; zero means no soft TTL.
	RelevanceTo time.Time
	// AvailableTo is the hard deadline, after which the record is removed;
	// zero means the record does not expire.
	AvailableTo time.Time
	// FillDuration is how long the getter ran.
	FillDuration time.Duration
	// Size is the value's size in bytes.
	Size int64
}

// recordVersion is the first byte of every stored record. Version 1 is a
// msgpack array of exactly recordFields elements, in the order of
// encodeRecord; another layout gets another version byte, and a reader
// refuses versions it does not know.
const (
	recordVersion = 1
	recordFields  = 10
	maxArgDepth   = 32
)

// errBadRecord is wrapped by every record decoding error.
var errBadRecord = fmt.Errorf("%w: bad record", ErrCorrupt)

type encodeBuf struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encPool = sync.Pool{New: func() any {
	e := &encodeBuf{}
	e.enc = msgpack.NewEncoder(&e.buf)
	return e
}}

// encodeRecord returns the stored form of rec.
func encodeRecord(rec *Record) ([]byte, error) {
	return appendRecord(nil, rec)
}

// appendRecord appends the stored form of rec to dst.
func appendRecord(dst []byte, rec *Record) ([]byte, error) {
	eb := encPool.Get().(*encodeBuf)
	defer encPool.Put(eb)
	eb.buf.Reset()
	eb.buf.WriteByte(recordVersion)
	e := eb.enc
	err := e.EncodeArrayLen(recordFields)
	put := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	put(func() error { return e.EncodeString(rec.Label) })
	put(func() error { return e.EncodeString(rec.Key) })
	put(func() error {
		if rec.Args == nil {
			return e.EncodeNil()
		}
		return encodeAny(e, rec.Args, 0)
	})
	put(func() error {
		if rec.Match == nil {
			return e.EncodeNil()
		}
		if err := e.EncodeMapLen(len(rec.Match)); err != nil {
			return err
		}
		var attrBuf [8]string
		for _, a := range appendShape(attrBuf[:0], rec.Match) {
			if err := e.EncodeString(a); err != nil {
				return err
			}
			vs := rec.Match[a]
			if err := e.EncodeArrayLen(len(vs)); err != nil {
				return err
			}
			for _, v := range vs {
				if err := e.EncodeString(v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	put(func() error { return e.EncodeString(rec.Owner) })
	for _, t := range []time.Time{rec.CreatedAt, rec.RelevanceTo, rec.AvailableTo} {
		put(func() error {
			if t.IsZero() {
				return e.EncodeNil()
			}
			return e.EncodeTime(t)
		})
	}
	put(func() error { return e.EncodeInt(int64(rec.FillDuration)) })
	put(func() error { return e.EncodeInt(rec.Size) })
	if err != nil {
		return dst, fmt.Errorf("persist: encode record %q: %w", rec.Key, err)
	}
	return append(dst, eb.buf.Bytes()...), nil
}

var timeType = reflect.TypeFor[time.Time]()

// encodeAny encodes one argument value: the common types directly, the
// rest through encodeValue's reflection.
func encodeAny(e *msgpack.Encoder, v any, depth int) error {
	if depth > maxArgDepth {
		return fmt.Errorf("argument nested deeper than %d", maxArgDepth)
	}
	switch x := v.(type) {
	case nil:
		return e.EncodeNil()
	case string:
		return e.EncodeString(x)
	case int:
		return e.EncodeInt64(int64(x))
	case int64:
		return e.EncodeInt64(x)
	case float64:
		return e.EncodeFloat64(x)
	case bool:
		return e.EncodeBool(x)
	case []string:
		if x == nil {
			return e.EncodeNil()
		}
		if err := e.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, s := range x {
			if err := e.EncodeString(s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		if x == nil {
			return e.EncodeNil()
		}
		if err := e.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, el := range x {
			if err := encodeAny(e, el, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if x == nil {
			return e.EncodeNil()
		}
		var buf [16]string
		keys := buf[:0]
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if err := e.EncodeMapLen(len(keys)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := e.EncodeString(k); err != nil {
				return err
			}
			if err := encodeAny(e, x[k], depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return encodeValue(e, reflect.ValueOf(v), depth)
}

// encodeValue encodes one argument value. It accepts what decodeValue gives
// back (nil, booleans, numbers, strings, []byte, time.Time, slices, arrays,
// maps with string keys, and pointers to those) and rejects the rest
// (structs, channels, functions, maps with other keys, cycles), so that a
// record that was written can always be read.
func encodeValue(e *msgpack.Encoder, v reflect.Value, depth int) error {
	if depth > maxArgDepth {
		return fmt.Errorf("argument nested deeper than %d", maxArgDepth)
	}
	if !v.IsValid() {
		return e.EncodeNil()
	}
	if v.Type() == timeType {
		return e.EncodeTime(v.Interface().(time.Time))
	}
	switch v.Kind() {
	case reflect.Bool:
		return e.EncodeBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return e.EncodeInt64(v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return e.EncodeUint64(v.Uint())
	case reflect.Float32, reflect.Float64:
		return e.EncodeFloat64(v.Float())
	case reflect.String:
		return e.EncodeString(v.String())
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return e.EncodeNil()
		}
		return encodeValue(e, v.Elem(), depth+1)
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return e.EncodeNil()
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if v.Kind() == reflect.Slice {
				return e.EncodeBytes(v.Bytes())
			}
			b := make([]byte, v.Len())
			reflect.Copy(reflect.ValueOf(b), v)
			return e.EncodeBytes(b)
		}
		if err := e.EncodeArrayLen(v.Len()); err != nil {
			return err
		}
		for i := range v.Len() {
			if err := encodeValue(e, v.Index(i), depth+1); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("unsupported argument type %s: map keys must be strings", v.Type())
		}
		if v.IsNil() {
			return e.EncodeNil()
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		if err := e.EncodeMapLen(len(keys)); err != nil {
			return err
		}
		for _, k := range keys {
			if err := e.EncodeString(k.String()); err != nil {
				return err
			}
			if err := encodeValue(e, v.MapIndex(k), depth+1); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("unsupported argument type %s", v.Type())
	}
}

type decodeBuf struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

var decPool = sync.Pool{New: func() any {
	d := &decodeBuf{}
	d.dec = msgpack.NewDecoder(&d.r)
	return d
}}

// decodeRecord decodes a stored record. Any input that is not a complete
// record gives an error wrapping ErrCorrupt; it never panics.
func decodeRecord(b []byte) (Record, error) {
	if len(b) == 0 {
		return Record{}, fmt.Errorf("%w: empty", errBadRecord)
	}
	if b[0] != recordVersion {
		return Record{}, fmt.Errorf("%w: unknown version %d", errBadRecord, b[0])
	}
	db := decPool.Get().(*decodeBuf)
	db.r.Reset(b[1:])
	db.dec.Reset(&db.r)
	rec, err := decodeRecordFields(db.dec, &db.r)
	if err == nil && db.r.Len() != 0 {
		err = fmt.Errorf("%d trailing bytes", db.r.Len())
	}
	if err != nil {
		return Record{}, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	decPool.Put(db) // only after a clean decode: an error may leave state behind
	return rec, nil
}

func decodeRecordFields(d *msgpack.Decoder, r *bytes.Reader) (Record, error) {
	var rec Record
	n, err := d.DecodeArrayLen()
	if err != nil {
		return rec, err
	}
	if n != recordFields {
		return rec, fmt.Errorf("%d fields", n)
	}
	if rec.Label, err = decodeStr(d, r); err != nil {
		return rec, fmt.Errorf("label: %w", err)
	}
	if rec.Key, err = decodeStr(d, r); err != nil {
		return rec, fmt.Errorf("key: %w", err)
	}
	if rec.Key == "" {
		return rec, fmt.Errorf("empty key")
	}
	args, err := decodeValue(d, r, 0)
	if err != nil {
		return rec, fmt.Errorf("args: %w", err)
	}
	if args != nil {
		m, ok := args.(map[string]any)
		if !ok {
			return rec, fmt.Errorf("args: %T, want a map with string keys", args)
		}
		rec.Args = m
	}
	if rec.Match, err = decodeMatch(d, r); err != nil {
		return rec, fmt.Errorf("match: %w", err)
	}
	if rec.Owner, err = decodeStr(d, r); err != nil {
		return rec, fmt.Errorf("owner: %w", err)
	}
	for _, t := range []*time.Time{&rec.CreatedAt, &rec.RelevanceTo, &rec.AvailableTo} {
		if *t, err = decodeTime(d); err != nil {
			return rec, fmt.Errorf("time: %w", err)
		}
	}
	fill, err := d.DecodeInt64()
	if err != nil {
		return rec, fmt.Errorf("fill duration: %w", err)
	}
	rec.FillDuration = time.Duration(fill)
	if rec.Size, err = d.DecodeInt64(); err != nil {
		return rec, fmt.Errorf("size: %w", err)
	}
	return rec, nil
}

func decodeMatch(d *msgpack.Decoder, r *bytes.Reader) (map[string][]string, error) {
	n, err := d.DecodeMapLen()
	if err != nil || n == -1 {
		return nil, err
	}
	if n > r.Len() {
		return nil, fmt.Errorf("%d entries", n)
	}
	m := make(map[string][]string, n)
	for range n {
		a, err := decodeStr(d, r)
		if err != nil {
			return nil, err
		}
		k, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if k > r.Len() {
			return nil, fmt.Errorf("%d values", k)
		}
		vs := make([]string, 0, max(k, 0))
		for range k {
			v, err := decodeStr(d, r)
			if err != nil {
				return nil, err
			}
			vs = append(vs, v)
		}
		m[a] = vs
	}
	return m, nil
}

func decodeTime(d *msgpack.Decoder) (time.Time, error) {
	c, err := d.PeekCode()
	if err != nil {
		return time.Time{}, err
	}
	if c == msgpcode.Nil {
		return time.Time{}, d.DecodeNil()
	}
	// The three encodings of a time: 4, 8 or 12 bytes. Checking the code
	// first keeps a garbage extension length from reaching the decoder,
	// which would allocate it.
	if c != msgpcode.FixExt4 && c != msgpcode.FixExt8 && c != msgpcode.Ext8 {
		return time.Time{}, fmt.Errorf("code 0x%02x is not a time", c)
	}
	t, err := d.DecodeTime()
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// decodeStr decodes a string (nil decodes as ""). It reads the bytes from
// r itself: the decoder's own string reading grows a buffer it keeps to
// the declared length, chunk by chunk, even when the input is shorter.
func decodeStr(d *msgpack.Decoder, r *bytes.Reader) (string, error) {
	c, err := d.PeekCode()
	if err != nil {
		return "", err
	}
	if c != msgpcode.Nil && !msgpcode.IsString(c) {
		return "", fmt.Errorf("code 0x%02x is not a string", c)
	}
	n, err := d.DecodeBytesLen()
	if err != nil || n <= 0 {
		return "", err
	}
	if n > r.Len() {
		return "", fmt.Errorf("string of %d with %d bytes left", n, r.Len())
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// decodeValue decodes one argument value (see Record.Args). Declared
// lengths are checked against the bytes left, so garbage cannot make it
// allocate more than the input's size, and nesting is bounded.
func decodeValue(d *msgpack.Decoder, r *bytes.Reader, depth int) (any, error) {
	if depth > maxArgDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxArgDepth)
	}
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, d.DecodeNil()
	case c == msgpcode.False || c == msgpcode.True:
		return d.DecodeBool()
	case msgpcode.IsFixedNum(c), c >= msgpcode.Int8 && c <= msgpcode.Int64:
		return d.DecodeInt64()
	case c >= msgpcode.Uint8 && c <= msgpcode.Uint64:
		return d.DecodeUint64()
	case c == msgpcode.Float || c == msgpcode.Double:
		return d.DecodeFloat64()
	case msgpcode.IsString(c):
		return decodeStr(d, r)
	case msgpcode.IsBin(c):
		// Not d.DecodeBytes: it allocates the declared length before
		// reading, and garbage can declare 4 GiB.
		n, err := d.DecodeBytesLen()
		if err != nil {
			return nil, err
		}
		if n > r.Len() {
			return nil, fmt.Errorf("bytes of %d with %d bytes left", n, r.Len())
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		return b, nil
	case msgpcode.IsExt(c):
		return decodeTime(d)
	case msgpcode.IsFixedArray(c), c == msgpcode.Array16, c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if n > r.Len() {
			return nil, fmt.Errorf("array of %d with %d bytes left", n, r.Len())
		}
		out := make([]any, 0, n)
		for range n {
			v, err := decodeValue(d, r, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case msgpcode.IsFixedMap(c), c == msgpcode.Map16, c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		if n > r.Len() {
			return nil, fmt.Errorf("map of %d with %d bytes left", n, r.Len())
		}
		out := make(map[string]any, n)
		for range n {
			kc, err := d.PeekCode()
			if err != nil {
				return nil, err
			}
			if !msgpcode.IsString(kc) {
				return nil, fmt.Errorf("map key code 0x%02x is not a string", kc)
			}
			k, err := decodeStr(d, r)
			if err != nil {
				return nil, err
			}
			v, err := decodeValue(d, r, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unsupported code 0x%02x", c)
	}
}
