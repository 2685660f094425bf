package worker

import (
	"fmt"
	"reflect"
)

// Errors of [Limits.Check]. Both wrap [ErrBadArgs].
var (
	ErrTooManyArgs  = fmt.Errorf("%w: too many arguments", ErrBadArgs)
	ErrArgsTooLarge = fmt.Errorf("%w: arguments too large", ErrBadArgs)
)

// Default bounds of [Limits].
const (
	DefaultMaxArgs     = 64
	DefaultMaxArgBytes = 8 << 10
)

// Limits bound the arguments of one read that comes from outside the
// process (an HTTP query, a peer's fetch). Every argument of a read ends up
// in its key, its created-cache record and the record's index entries, and
// in the memory the entry holds: the bounds keep all of these small whatever
// a client sends. The zero value means the defaults.
type Limits struct {
	// MaxArgs bounds the number of arguments (names) of one read. Default
	// DefaultMaxArgs (64).
	MaxArgs int
	// MaxArgBytes bounds the bytes of one read's arguments: the bytes of
	// every name, plus those of every value (a list counts each element;
	// text and bytes count their length but at least 1, every other scalar
	// 8). Default DefaultMaxArgBytes (8 KiB).
	MaxArgBytes int
}

// DefaultLimits returns the default bounds.
func DefaultLimits() Limits {
	return Limits{MaxArgs: DefaultMaxArgs, MaxArgBytes: DefaultMaxArgBytes}
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxArgs == 0 {
		l.MaxArgs = DefaultMaxArgs
	}
	if l.MaxArgBytes == 0 {
		l.MaxArgBytes = DefaultMaxArgBytes
	}
	return l
}

// Validate reports a bound that is out of range.
func (l Limits) Validate() error {
	switch {
	case l.MaxArgs < 0:
		return fmt.Errorf("%w: limits.max_args must be > 0, got %d", ErrConfig, l.MaxArgs)
	case l.MaxArgBytes < 0:
		return fmt.Errorf("%w: limits.max_arg_bytes must be > 0, got %d", ErrConfig, l.MaxArgBytes)
	}
	return nil
}

// Check returns an error wrapping [ErrTooManyArgs] or [ErrArgsTooLarge]
// when args are over the bounds of l (zero fields: the defaults). It walks
// the arguments once and stops as soon as a bound is crossed, so that a
// huge request costs no more than the bound to refuse.
func (l Limits) Check(args Args) error {
	l = l.WithDefaults()
	if len(args) > l.MaxArgs {
		return fmt.Errorf("%w: %d arguments, at most %d", ErrTooManyArgs, len(args), l.MaxArgs)
	}
	var sz argSize
	for name, v := range args {
		sz.bytes += len(name)
		if err := sz.add(v, 0, l.MaxArgBytes); err != nil {
			return err
		}
		if sz.bytes > l.MaxArgBytes {
			return fmt.Errorf("%w: over %d bytes", ErrArgsTooLarge, l.MaxArgBytes)
		}
	}
	return nil
}

// argSize counts the values and payload bytes of arguments.
type argSize struct {
	values int
	bytes  int
}

// add counts v; it returns an error wrapping ErrArgsTooLarge as soon as the
// bytes exceed bound (bound <= 0: no bound), and ErrBadArgs for lists
// nested too deeply.
func (s *argSize) add(v any, depth, bound int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: lists nested too deeply", ErrBadArgs)
	}
	switch x := v.(type) {
	case string:
		s.values++
		s.bytes += max(len(x), 1)
	case []byte:
		s.values++
		s.bytes += max(len(x), 1)
	case []any:
		for _, e := range x {
			if err := s.add(e, depth+1, bound); err != nil {
				return err
			}
		}
	case []string:
		for _, e := range x {
			s.values++
			s.bytes += max(len(e), 1)
			if bound > 0 && s.bytes > bound {
				break
			}
		}
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		s.values++
		s.bytes += 8
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			s.values++
			s.bytes += 8
			break
		}
		for i := range rv.Len() {
			if err := s.add(rv.Index(i).Interface(), depth+1, bound); err != nil {
				return err
			}
			if bound > 0 && s.bytes > bound {
				break
			}
		}
	}
	if bound > 0 && s.bytes > bound {
		return fmt.Errorf("%w: over %d bytes", ErrArgsTooLarge, bound)
	}
	return nil
}

// argsWeight approximates the memory an entry's arguments hold: their
// payload bytes plus the map slot and header of each name, and the
// interface and header of each value.
func argsWeight(args Args) int {
	const perName, perValue = 48, 32
	var sz argSize
	for name, v := range args {
		sz.bytes += len(name)
		_ = sz.add(v, 0, 0) // only too-deep lists fail, and they were refused before an entry was made
	}
	return sz.bytes + perName*len(args) + perValue*sz.values
}
