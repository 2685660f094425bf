package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Args are the named arguments of a worker call: what the getter receives and
// what the key is made of. Values may be nil, bool, any integer or float type,
// string, []byte, or a slice of these (lists may nest). Lists are sets for the
// key: their order does not matter.
type Args map[string]any

// ErrBadArgs is returned when an argument has a type that cannot be part of a
// key.
var ErrBadArgs = errors.New("worker: bad arguments")

// MaxKeyLen is the longest key kept verbatim. Longer keys are shortened to a
// prefix and a SHA-256 of the whole key (see [KeyOf]).
const MaxKeyLen = 250

// KeyGen turns a call's arguments into the part of the key after "label@".
// It must give equal strings for equal argument sets and different strings
// for different ones; the default is the canonical encoding of [KeyOf].
type KeyGen func(args Args) (string, error)

// KeyOf returns the canonical key of label and args:
//
//	label@name1=value1&name2=value2
//
// Names are sorted and escaped; values are typed (i42, f1.5, s"x", T, F, N,
// x<hex> for bytes, [..] for lists with their elements sorted), so 1 and "1"
// differ, 0, "", false and empty lists are real arguments, and two different
// argument sets never give one key. Integers of every width are one type, and
// so are float32 and float64: a value keeps its key across a msgpack round
// trip. A key longer than [MaxKeyLen] is cut and ends with "#" + the hex
// SHA-256 of the full key + "#"; a canonical key never ends with "#", so a
// shortened key cannot equal a verbatim one.
func KeyOf(label string, args Args) (string, error) {
	var b strings.Builder
	b.Grow(len(label) + 1 + 16*len(args))
	b.WriteString(label)
	b.WriteByte('@')
	if err := appendArgs(&b, args); err != nil {
		return "", err
	}
	return shorten(b.String()), nil
}

func appendArgs(b *strings.Builder, args Args) error {
	names := make([]string, 0, len(args))
	for k := range args {
		names = append(names, k)
	}
	slices.Sort(names)
	for i, name := range names {
		if i > 0 {
			b.WriteByte('&')
		}
		escapeName(b, name)
		b.WriteByte('=')
		if err := appendValue(b, args[name], 0); err != nil {
			return fmt.Errorf("%w: argument %q: %v", ErrBadArgs, name, err)
		}
	}
	return nil
}

// shorten keeps keys up to MaxKeyLen and replaces the tail of longer ones by
// a hash of the whole key.
func shorten(key string) string {
	if len(key) <= MaxKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	const tail = 1 + 2*sha256.Size + 1
	return key[:MaxKeyLen-tail] + "#" + hex.EncodeToString(sum[:]) + "#"
}

// escapeName writes an argument name with the key's separators escaped.
func escapeName(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '=', '&', '#':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
}

func appendQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
}

const maxDepth = 32

func appendValue(b *strings.Builder, v any, depth int) error {
	if depth > maxDepth {
		return errors.New("lists nested too deeply")
	}
	switch x := v.(type) {
	case nil:
		b.WriteByte('N')
	case bool:
		if x {
			b.WriteByte('T')
		} else {
			b.WriteByte('F')
		}
	case string:
		b.WriteByte('s')
		appendQuoted(b, x)
	case int:
		appendInt(b, int64(x))
	case int8:
		appendInt(b, int64(x))
	case int16:
		appendInt(b, int64(x))
	case int32:
		appendInt(b, int64(x))
	case int64:
		appendInt(b, x)
	case uint:
		appendUint(b, uint64(x))
	case uint8:
		appendUint(b, uint64(x))
	case uint16:
		appendUint(b, uint64(x))
	case uint32:
		appendUint(b, uint64(x))
	case uint64:
		appendUint(b, x)
	case float32:
		appendFloat(b, float64(x))
	case float64:
		appendFloat(b, x)
	case []byte:
		b.WriteByte('x')
		b.WriteString(hex.EncodeToString(x))
	case []any:
		return appendList(b, len(x), func(i int) any { return x[i] }, depth)
	case []string:
		return appendList(b, len(x), func(i int) any { return x[i] }, depth)
	case []int:
		return appendList(b, len(x), func(i int) any { return x[i] }, depth)
	case []int64:
		return appendList(b, len(x), func(i int) any { return x[i] }, depth)
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
			return appendList(b, rv.Len(), func(i int) any { return rv.Index(i).Interface() }, depth)
		}
		return fmt.Errorf("unsupported type %T", v)
	}
	return nil
}

func appendInt(b *strings.Builder, v int64) {
	b.WriteByte('i')
	var buf [24]byte
	b.Write(strconv.AppendInt(buf[:0], v, 10))
}

func appendUint(b *strings.Builder, v uint64) {
	b.WriteByte('i')
	var buf [24]byte
	b.Write(strconv.AppendUint(buf[:0], v, 10))
}

func appendFloat(b *strings.Builder, v float64) {
	b.WriteByte('f')
	if v == 0 {
		v = 0 // -0 and 0 are one argument
	}
	if math.IsNaN(v) {
		b.WriteString("NaN")
		return
	}
	var buf [32]byte
	b.Write(strconv.AppendFloat(buf[:0], v, 'g', -1, 64))
}

// appendList encodes the elements, sorts their encodings and writes them
// between brackets: lists are sets for the key, as in the original.
func appendList(b *strings.Builder, n int, at func(int) any, depth int) error {
	elems := make([]string, n)
	for i := range n {
		var eb strings.Builder
		if err := appendValue(&eb, at(i), depth+1); err != nil {
			return err
		}
		elems[i] = eb.String()
	}
	slices.Sort(elems)
	b.WriteByte('[')
	for i, e := range elems {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e)
	}
	b.WriteByte(']')
	return nil
}

// MatchValues returns, per argument, the values it constrains, as the tokens
// that invalidation events are matched against (see [MatchToken]). A list
// argument constrains every value in it (nested lists are flattened); an
// argument that is absent does not constrain its attribute at all.
func MatchValues(args Args) (map[string][]string, error) {
	out := make(map[string][]string, len(args))
	for name, v := range args {
		var toks []string
		if err := appendTokens(&toks, v, 0); err != nil {
			return nil, fmt.Errorf("%w: argument %q: %v", ErrBadArgs, name, err)
		}
		slices.Sort(toks)
		out[name] = slices.Compact(toks)
	}
	return out, nil
}

func appendTokens(toks *[]string, v any, depth int) error {
	if depth > maxDepth {
		return errors.New("lists nested too deeply")
	}
	if _, isBytes := v.([]byte); !isBytes && v != nil {
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Slice || rv.Kind() == reflect.Array {
			for i := range rv.Len() {
				if err := appendTokens(toks, rv.Index(i).Interface(), depth+1); err != nil {
					return err
				}
			}
			return nil
		}
	}
	t, err := MatchToken(v)
	if err != nil {
		return err
	}
	*toks = append(*toks, t)
	return nil
}

// MatchToken is the form in which a scalar is compared when an invalidation
// event is matched against cached arguments. Unlike keys, matching is loose
// about types, because events arrive as JSON and query arguments as strings:
// the integer 1, the float 1.0 and the string "1" are one token; true and
// "true" are one token; nil is "null".
func MatchToken(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "null", nil
	case bool:
		return strconv.FormatBool(x), nil
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case float32:
		return floatToken(float64(x)), nil
	case float64:
		return floatToken(x), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10), nil
	}
	return "", fmt.Errorf("unsupported type %T", v)
}

func floatToken(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
