package worker

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestKeysOfFalsyArgumentsDiffer(t *testing.T) {
	sets := []Args{
		{},
		{"a": 0},
		{"a": ""},
		{"a": false},
		{"a": nil},
		{"a": []any{}},
		{"a": 0.0},
		{"a": []byte{}},
		{"a": "0"},
		{"a": 1},
		{"a": "1"},
		{"a": true},
		{"a": "true"},
		{"a": []any{0}},
		{"a": []any{""}},
		{"a": []any{[]any{}}},
		{"b": 0},
		{"a": 0, "b": 0},
	}
	seen := map[string]int{}
	for i, a := range sets {
		k, err := KeyOf("w", a)
		if err != nil {
			t.Fatal(err)
		}
		if j, dup := seen[k]; dup {
			t.Errorf("%v and %v share the key %q", sets[j], a, k)
		}
		seen[k] = i
	}
}

func TestKeyIgnoresArgumentAndListOrder(t *testing.T) {
	same := [][]Args{
		{
			{"attr1": 1, "attr2": "x", "z": []string{"b", "a"}},
			{"z": []any{"a", "b"}, "attr2": "x", "attr1": int64(1)},
			{"attr2": "x", "z": []any{"b", "a"}, "attr1": uint8(1)},
		},
		{{"f": float32(1.5)}, {"f": 1.5}},
		{{"n": []int{3, 1, 2}}, {"n": []any{int64(2), uint(3), 1}}},
		{{"neg": -0.0}, {"neg": 0.0}},
	}
	for _, group := range same {
		want, _ := KeyOf("w", group[0])
		for _, a := range group[1:] {
			if got, _ := KeyOf("w", a); got != want {
				t.Errorf("%v: %q, want %q", a, got, want)
			}
		}
	}
	// Build the same map in many insertion orders: Go randomises map
	// iteration, so an order-dependent key would show up here.
	names := []string{"a", "b", "c", "d", "e", "f"}
	want, _ := KeyOf("w", Args{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6})
	for i := range 50 {
		a := Args{}
		for j := range names {
			n := names[(i+j)%len(names)]
			a[n] = int(n[0]-'a') + 1
		}
		if got, _ := KeyOf("w", a); got != want {
			t.Fatalf("order changed the key: %q vs %q", got, want)
		}
	}
}

func TestKeySeparatorsAreEscaped(t *testing.T) {
	pairs := [][2]Args{
		{{"a": "x&b=sy"}, {"a": "x", "b": "y"}},
		{{"a=b": "c"}, {"a": "b=c"}},
		{{"a": []any{"x,y"}}, {"a": []any{"x", "y"}}},
		{{"a": `x"`}, {"a": `x\`}},
		{{"a": `\"`}, {"a": `"`}},
		{{"a&b": 1}, {"a": 1, "b": 1}},
	}
	for _, p := range pairs {
		k1, _ := KeyOf("w", p[0])
		k2, _ := KeyOf("w", p[1])
		if k1 == k2 {
			t.Errorf("%v and %v share %q", p[0], p[1], k1)
		}
	}
}

func TestLongKeysAreShortened(t *testing.T) {
	long1, _ := KeyOf("w", Args{"q": strings.Repeat("x", 1000)})
	long2, _ := KeyOf("w", Args{"q": strings.Repeat("x", 999) + "y"})
	if len(long1) > MaxKeyLen || len(long2) > MaxKeyLen {
		t.Fatalf("lengths %d %d", len(long1), len(long2))
	}
	if long1 == long2 {
		t.Fatal("two long keys that differ at the end were shortened to one")
	}
	if !strings.HasPrefix(long1, "w@q=") || !strings.HasSuffix(long1, "#") {
		t.Fatalf("shortened key %q", long1)
	}
	short, _ := KeyOf("w", Args{"q": "x"})
	if short != `w@q=s"x"` {
		t.Fatalf("short key %q", short)
	}
}

func TestKeyRejectsUnsupportedTypes(t *testing.T) {
	for _, v := range []any{struct{}{}, map[string]int{}, make(chan int), []any{func() {}}} {
		if _, err := KeyOf("w", Args{"v": v}); err == nil {
			t.Errorf("%T accepted", v)
		}
	}
}

func TestCustomKeyGen(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	w := register(t, c, Config{Label: "custom", Getter: GetterFunc(nil),
		KeyGen: func(a Args) (string, error) { return fmt.Sprint(a["id"]), nil }})
	if k := mustKey(t, w, Args{"id": 42, "ignored": true}); k != "custom@42" {
		t.Fatalf("key %q", k)
	}
}

func TestMatchValues(t *testing.T) {
	got, err := MatchValues(Args{"a": 1, "b": []any{"x", 2.0, []int{3}}, "c": true, "d": nil, "e": 1.5})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"a": {"1"}, "b": {"2", "3", "x"}, "c": {"true"}, "d": {"null"}, "e": {"1.5"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// FuzzKeyUnique checks that two argument sets share a key only if they are
// the same set, as judged by a reference comparison that knows nothing of
// the encoding.
func FuzzKeyUnique(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{1, 2, 3})
	f.Add([]byte{0, 5, 7, 1}, []byte{0, 5, 7, 2})
	f.Add([]byte{3, 1, 200, 4}, []byte{3, 1, 201, 4})
	f.Add([]byte("a=b&c"), []byte("a=b&"))
	f.Fuzz(func(t *testing.T, x, y []byte) {
		a, b := argsFrom(x), argsFrom(y)
		ka, err := KeyOf("w", a)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := KeyOf("w", b)
		if err != nil {
			t.Fatal(err)
		}
		if (ka == kb) != sameArgs(a, b) {
			t.Fatalf("%#v and %#v: keys %q and %q, same sets: %v", a, b, ka, kb, sameArgs(a, b))
		}
	})
}

// argsFrom decodes fuzz bytes into a small argument set over a tiny
// alphabet full of separators, so that equal and nearly equal sets are
// frequent.
func argsFrom(data []byte) Args {
	r := &byteReader{data: data}
	a := Args{}
	names := []string{"a", "b", "a=", "&", `\`, "#", ""}
	for n := r.next() % 4; n > 0; n-- {
		a[names[int(r.next())%len(names)]] = r.value(0)
	}
	return a
}

type byteReader struct {
	data []byte
	i    int
}

func (r *byteReader) next() byte {
	if r.i >= len(r.data) {
		return 0
	}
	b := r.data[r.i]
	r.i++
	return b
}

func (r *byteReader) value(depth int) any {
	alphabet := []string{"", "x", "&", "=", ",", `"`, `\`, "[", "]", "#", "1", "s\"x\""}
	switch k := r.next() % 12; k {
	case 0:
		return nil
	case 1:
		return r.next()%2 == 0
	case 2:
		return int(int8(r.next()))
	case 3:
		return uint64(r.next())
	case 4:
		return float64(int8(r.next())) / 4
	case 5:
		return int64(int8(r.next()))
	case 6, 7:
		var s strings.Builder
		for n := r.next() % 4; n > 0; n-- {
			s.WriteString(alphabet[int(r.next())%len(alphabet)])
		}
		return s.String()
	case 8:
		return []byte{r.next() % 3}
	case 9:
		// a long string, to exercise shortening
		return strings.Repeat("y", 200+int(r.next())) + alphabet[int(r.next())%len(alphabet)]
	default:
		if depth >= 2 {
			return "leaf"
		}
		n := int(r.next() % 4)
		l := make([]any, n)
		for i := range l {
			l[i] = r.value(depth + 1)
		}
		return l
	}
}

func sameArgs(a, b Args) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !sameValue(va, vb) {
			return false
		}
	}
	return true
}

// sameValue is the reference equality: integers of every width are one
// type, floats one other, -0 equals 0, NaN equals NaN, lists are multisets.
func sameValue(a, b any) bool {
	ka, kb := kindOf(a), kindOf(b)
	if ka != kb {
		return false
	}
	switch ka {
	case "nil":
		return true
	case "int":
		return intString(a) == intString(b)
	case "float":
		fa, fb := reflect.ValueOf(a).Float(), reflect.ValueOf(b).Float()
		return fa == fb || math.IsNaN(fa) && math.IsNaN(fb)
	case "bytes":
		return string(a.([]byte)) == string(b.([]byte))
	case "list":
		la, lb := reflect.ValueOf(a), reflect.ValueOf(b)
		if la.Len() != lb.Len() {
			return false
		}
		used := make([]bool, lb.Len())
	next:
		for i := range la.Len() {
			for j := range lb.Len() {
				if !used[j] && sameValue(la.Index(i).Interface(), lb.Index(j).Interface()) {
					used[j] = true
					continue next
				}
			}
			return false
		}
		return true
	default:
		return a == b
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case bool:
		return "bool"
	case string:
		return "string"
	case []byte:
		return "bytes"
	case float32, float64:
		return "float"
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Slice:
		return "list"
	}
	return fmt.Sprintf("%T", v)
}

func intString(v any) string {
	rv := reflect.ValueOf(v)
	if rv.CanInt() {
		return strconv.FormatInt(rv.Int(), 10)
	}
	return strconv.FormatUint(rv.Uint(), 10)
}
