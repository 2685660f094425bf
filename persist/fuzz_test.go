package persist

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"
)

func seedRecords() []Record {
	full := rec("L", "L@a=1", map[string][]string{"a": {"1", "\x00"}, "": {}})
	full.Args = map[string]any{"a": 1, "l": []any{"x", nil, true, 1.5, uint(3)}, "m": map[string]any{"t": t0}, "b": []byte{0, 1}}
	full.RelevanceTo = t0.Add(time.Minute)
	return []Record{full, {Label: "x", Key: "y"}, rec("L\x00", "k\x00", nil)}
}

// FuzzDecodeRecord: garbage gives an error, never a panic, and whatever
// decodes re-encodes to a record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range seedRecords() {
		enc, err := encodeRecord(&r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
		f.Add(enc[:len(enc)/2])
		f.Add(append(bytes.Clone(enc), 0xc0))
	}
	f.Add([]byte{})
	f.Add([]byte{recordVersion})
	f.Add([]byte{recordVersion, 0xdd, 0xff, 0xff, 0xff, 0xff})                             // array of 4G elements
	f.Add([]byte{recordVersion, 0x9a, 0xa1, 'l', 0xa1, 'k', 0xdf, 0xff, 0xff, 0xff, 0xff}) // map of 4G entries
	f.Add(append([]byte{recordVersion, 0x9a, 0xa1, 'l', 0xa1, 'k'}, bytes.Repeat([]byte{0x91}, 100)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		enc, err := encodeRecord(&r)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v (%+v)", err, r)
		}
		r2, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalizeNaN(r), normalizeNaN(r2)) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", r, r2)
		}
	})
}

// normalizeNaN makes records with NaN arguments comparable: NaN != NaN.
func normalizeNaN(r Record) Record {
	var fix func(v any) any
	fix = func(v any) any {
		switch x := v.(type) {
		case float64:
			if x != x {
				return "NaN"
			}
		case []any:
			out := make([]any, len(x))
			for i := range x {
				out[i] = fix(x[i])
			}
			return out
		case map[string]any:
			out := make(map[string]any, len(x))
			for k, e := range x {
				out[k] = fix(e)
			}
			return out
		}
		return v
	}
	if r.Args != nil {
		r.Args = fix(r.Args).(map[string]any)
	}
	return r
}

// encodeParsed rebuilds the key that parseKey decoded.
func encodeParsed(p parsedKey) []byte {
	b := []byte{p.Table}
	u := func(v uint64) { b = binary.BigEndian.AppendUint64(b, v) }
	switch p.Table {
	case prefixMeta:
		b = appendEsc(b, p.Name)
	case prefixRecord, prefixValue:
		b = appendEsc(b, p.Key)
	case prefixShape:
		b = appendEsc(shapePrefix(p.Label, encodeShape(p.Shape)), p.Key)
	case prefixMatch:
		b = appendEsc(b, p.Label)
		u(p.SID)
		b = appendEsc(appendEsc(appendEsc(b, p.Attr), p.Value), p.Key)
	case prefixRelevance, prefixExpiry, prefixValueExpiry:
		u(timeBits(p.Time))
		b = appendEsc(b, p.Key)
	case prefixOutbox:
		u(timeBits(p.Time))
		u(p.ID)
	case prefixOutboxID:
		u(p.ID)
	}
	return b
}

// FuzzParseKey: garbage gives an error, never a panic, and a key that
// parses has exactly one reading (rebuilding it gives the same bytes), so
// no two index entries can be confused.
func FuzzParseKey(f *testing.F) {
	r := seedRecords()[0]
	for _, k := range indexKeys(&r) {
		f.Add(k)
	}
	for _, k := range [][]byte{
		metaKey(metaFormat), recordKey("a\x00b"), outboxKey(t0, 7), outboxIDKey(7),
		valueKey("v"), timeKey(prefixValueExpiry, t0, "v"), {0x03, 0x00}, {0x04, 0x00, 0xff}, {0xff},
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseKey(b)
		if err != nil {
			return
		}
		if got := encodeParsed(p); !bytes.Equal(got, b) {
			t.Fatalf("key %q parses as %+v, which encodes as %q", b, p, got)
		}
	})
}

// FuzzEscape: escaping round-trips and keeps the order of strings, and an
// escaped component is never a prefix of another.
func FuzzEscape(f *testing.F) {
	f.Add("a", "ab")
	f.Add("a\x00", "a")
	f.Add("\x00\x01", "\x00")
	f.Add("", "\xff")
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := appendEsc(nil, a), appendEsc(nil, b)
		got, rest, err := readEsc(append(bytes.Clone(ea), 'z'))
		if err != nil || got != a || string(rest) != "z" {
			t.Fatalf("readEsc(esc(%q)) = %q, %q, %v", a, got, rest, err)
		}
		if c1, c2 := strings.Compare(a, b), bytes.Compare(ea, eb); c1 != c2 {
			t.Fatalf("order of %q, %q is %d, escaped %d", a, b, c1, c2)
		}
		if a != b && (bytes.HasPrefix(ea, eb) || bytes.HasPrefix(eb, ea)) {
			t.Fatalf("esc(%q) and esc(%q) are prefixes", a, b)
		}
	})
}

func TestTimeBitsOrder(t *testing.T) {
	times := []time.Time{minTime.Add(-time.Hour), minTime, time.Unix(-1, 0), time.Unix(0, 0), t0, maxTime, maxTime.Add(time.Hour)}
	for i := 1; i < len(times); i++ {
		if timeBits(times[i-1]) > timeBits(times[i]) {
			t.Errorf("timeBits(%v) > timeBits(%v)", times[i-1], times[i])
		}
	}
	if got := bitsTime(timeBits(t0)); !got.Equal(t0) {
		t.Errorf("bitsTime(timeBits(t0)) = %v", got)
	}
}
