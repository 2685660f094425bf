package worker

import (
	"context"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ContentTypeMsgpack is the content type of values encoded by a [Typed]
// worker.
const ContentTypeMsgpack = "application/msgpack"

// Typed is a worker whose values are of the Go type T: getters return T and
// Gets return T, with no casts. Values are stored msgpack-encoded, so they
// can cross the wire to other nodes; an entry filled in this process also
// keeps the Go value, so local hits do not decode. Values returned by Get are
// shared between callers: treat them as read-only.
type Typed[T any] struct {
	w *Worker
}

// Register adds a worker of type T to c. cfg.Getter must be nil: get is the
// getter. Errors are those of [Cache.Register].
func Register[T any](c *Cache, cfg Config, get func(ctx context.Context, args Args) (T, error)) (*Typed[T], error) {
	if cfg.Getter != nil {
		return nil, fmt.Errorf("%w: worker %q: getter is set by Register, leave Config.Getter nil", ErrConfig, cfg.Label)
	}
	if get == nil {
		return nil, fmt.Errorf("%w: worker %q: getter is required", ErrConfig, cfg.Label)
	}
	cfg.Getter = TypedGetter(get)
	w, err := c.Register(cfg)
	if err != nil {
		return nil, err
	}
	return &Typed[T]{w: w}, nil
}

// TypedGetter adapts a getter of T to [Getter]: its value is msgpack-encoded
// and the Go value is kept for local hits. The node uses it to register
// typed workers of its own.
func TypedGetter[T any](get func(ctx context.Context, args Args) (T, error)) Getter {
	return GetterFunc(func(ctx context.Context, args Args) (Value, error) {
		v, err := get(ctx, args)
		if err != nil {
			return Value{}, err
		}
		data, err := msgpack.Marshal(v)
		if err != nil {
			return Value{}, fmt.Errorf("encode %T: %w", v, err)
		}
		return Value{Data: data, ContentType: ContentTypeMsgpack, decoded: v}, nil
	})
}

// NewTyped wraps a worker whose getter was made with [TypedGetter] for T.
func NewTyped[T any](w *Worker) *Typed[T] { return &Typed[T]{w: w} }

// Worker returns the untyped worker underneath.
func (t *Typed[T]) Worker() *Worker { return t.w }

// Get returns the value of args.
func (t *Typed[T]) Get(ctx context.Context, args Args) (T, error) {
	return t.getValue(ctx, args, Settings{})
}

// GetWith returns the value of args with per-call overrides.
func (t *Typed[T]) GetWith(ctx context.Context, args Args, ov Settings) (T, error) {
	return t.getValue(ctx, args, ov)
}

// GetEntry returns the value of args with its whole entry (the
// cached_entity form) and how it was answered.
func (t *Typed[T]) GetEntry(ctx context.Context, args Args, ov Settings) (T, *Entry, Status, error) {
	var zero T
	e, st, err := t.w.Get(ctx, args, ov)
	if err != nil {
		return zero, nil, 0, err
	}
	v, err := Decode[T](e)
	if err != nil {
		return zero, nil, 0, err
	}
	return v, e, st, nil
}

// getValue is GetEntry for the callers that want the value only: the
// entry is built on the stack.
func (t *Typed[T]) getValue(ctx context.Context, args Args, ov Settings) (T, error) {
	var zero T
	var e Entry
	if _, err := t.w.GetInto(ctx, args, ov, &e); err != nil {
		return zero, err
	}
	return Decode[T](&e)
}

// Decode returns the value of e as T: the Go value kept by a local fill, or
// the msgpack decoding of its bytes.
func Decode[T any](e *Entry) (T, error) {
	if v, ok := e.decoded.(T); ok {
		return v, nil
	}
	var v T
	if err := msgpack.Unmarshal(e.Value, &v); err != nil {
		return v, fmt.Errorf("worker: decode %s as %T: %w", e.Key, v, err)
	}
	return v, nil
}
