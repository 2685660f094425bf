package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func wideArgs(n, valueLen int) Args {
	a := Args{}
	for i := range n {
		a[fmt.Sprintf("a%d", i)] = strings.Repeat("v", valueLen)
	}
	return a
}

func TestLimitsCheck(t *testing.T) {
	var def Limits // zero: the defaults, 64 arguments and 8 KiB
	cases := []struct {
		name string
		l    Limits
		args Args
		want error
	}{
		{"64 arguments", def, wideArgs(64, 1), nil},
		{"65 arguments", def, wideArgs(65, 1), ErrTooManyArgs},
		{"3000 arguments", def, wideArgs(3000, 4), ErrTooManyArgs},
		{"8 KiB", def, Args{"a": strings.Repeat("x", 8<<10-1)}, nil},
		{"over 8 KiB", def, Args{"a": strings.Repeat("x", 8<<10)}, ErrArgsTooLarge},
		{"long list", def, Args{"a": make([]any, 2000)}, ErrArgsTooLarge}, // nil elements count 8 bytes
		{"list of empty strings", def, Args{"a": make([]string, 9000)}, ErrArgsTooLarge},
		{"nested lists", def, Args{"a": []any{[]any{strings.Repeat("x", 9000)}}}, ErrArgsTooLarge},
		{"bytes", def, Args{"a": make([]byte, 9000)}, ErrArgsTooLarge},
		{"typed slice", def, Args{"a": make([]int32, 2000)}, ErrArgsTooLarge},
		{"own bounds", Limits{MaxArgs: 2, MaxArgBytes: 10}, Args{"a": "1", "b": "2"}, nil},
		{"own count", Limits{MaxArgs: 2}, wideArgs(3, 1), ErrTooManyArgs},
		{"own bytes", Limits{MaxArgBytes: 10}, Args{"abc": "12345678"}, ErrArgsTooLarge},
	}
	for _, c := range cases {
		err := c.l.Check(c.args)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: Check = %v, want %v", c.name, err, c.want)
		}
		if err != nil && !errors.Is(err, ErrBadArgs) {
			t.Errorf("%s: %v does not wrap ErrBadArgs", c.name, err)
		}
	}
	deep := any("x")
	for range maxDepth + 2 {
		deep = []any{deep}
	}
	if err := def.Check(Args{"a": deep}); !errors.Is(err, ErrBadArgs) {
		t.Errorf("lists nested %d deep: %v", maxDepth+2, err)
	}
	if err := (Limits{MaxArgs: -1}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("Validate(max_args -1) = %v", err)
	}
}

// TestWeigherCountsArgs: an entry's weight includes the arguments it keeps,
// so that the memory bound holds for entries of large arguments and small
// values.
func TestWeigherCountsArgs(t *testing.T) {
	c, _ := newTestCache(t, CacheConfig{})
	w := register(t, c, Config{Label: "w", Getter: GetterFunc(func(ctx context.Context, a Args) (Value, error) {
		return Value{Data: []byte("v")}, nil
	})})
	ctx := context.Background()
	if _, _, err := w.Get(ctx, Args{"id": "1"}, Settings{}); err != nil {
		t.Fatal(err)
	}
	// The store applies weights in the background.
	waitFor(t, "the first entry to be weighed", func() bool { return c.Bytes() > 0 })
	small := c.Bytes()
	if _, _, err := w.Get(ctx, wideArgs(64, 100), Settings{}); err != nil {
		t.Fatal(err)
	}
	// The key of the wide read is hashed to MaxKeyLen; its 64 × 100 bytes
	// of arguments must weigh.
	waitFor(t, "an entry of 64 arguments of 100 bytes to weigh 6400 bytes more", func() bool {
		return c.Bytes() >= small+64*100
	})
}

// FuzzLimitsCheck: Check never panics, and its verdict agrees with a
// direct count of the arguments an HTTP query makes (text values and lists
// of text).
func FuzzLimitsCheck(f *testing.F) {
	f.Add(3, 5, "a=1&b=x&b=y", 64, 8192)
	f.Add(70, 1, "", 64, 8192)
	f.Add(1, 9000, "a", 64, 8192)
	f.Fuzz(func(t *testing.T, n, valueLen int, extra string, maxArgs, maxBytes int) {
		if n < 0 || n > 500 || valueLen < 0 || valueLen > 10000 || maxArgs < 0 || maxBytes < 0 {
			return
		}
		args := wideArgs(n, valueLen)
		parts := strings.Split(extra, "&")
		if len(parts) > 1 {
			l := make([]any, len(parts))
			for i, p := range parts {
				l[i] = p
			}
			args["extra"] = l
		} else {
			args["extra"] = extra
		}
		l := Limits{MaxArgs: maxArgs, MaxArgBytes: maxBytes}
		err := l.Check(args)
		l = l.WithDefaults()
		bytes := 0
		for name, v := range args {
			bytes += len(name)
			switch x := v.(type) {
			case string:
				bytes += max(len(x), 1)
			case []any:
				for _, e := range x {
					bytes += max(len(e.(string)), 1)
				}
			}
		}
		var want error
		switch {
		case len(args) > l.MaxArgs:
			want = ErrTooManyArgs
		case bytes > l.MaxArgBytes:
			want = ErrArgsTooLarge
		}
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("%d arguments, %d bytes, limits %+v: Check = %v, want %v", len(args), bytes, l, err, want)
		}
	})
}
