package invalidation

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/cachenode/cachenode/worker"
)

// Kind is what a Target covers.
type Kind uint8

// Target kinds.
const (
	// KindKey is one key, given by its arguments.
	KindKey Kind = iota + 1
	// KindAll is every key of a label.
	KindAll
	// KindMatch is every variant of a label that matches attribute values.
	KindMatch
)

// Target is one set of cached variants of one worker.
type Target struct {
	Label string      `msgpack:"l"`
	Kind  Kind        `msgpack:"k"`
	Args  worker.Args `msgpack:"a,omitempty"` // KindKey
	// Match holds, per attribute, the match tokens (worker.MatchToken) of
	// the values; KindMatch.
	Match map[string][]string `msgpack:"m,omitempty"`
}

// Event is an invalidation as it travels between members: the resolved
// targets, with an ID so that a member applies it once.
type Event struct {
	ID      string   `msgpack:"id"`
	Origin  string   `msgpack:"o"`
	Targets []Target `msgpack:"t"`
}

// NewID returns a random event ID.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Resolve turns a validated request into targets: explicit keys, labels and
// matches as given, model changes through rules. known reports whether a
// label names a worker. Targets are de-duplicated, and a whole-label target
// absorbs every other target of its label.
func Resolve(r *Request, rules *Rules, known func(label string) bool) ([]Target, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	var ts []Target
	if r.Model == "" {
		if !known(r.Label) {
			return nil, fmt.Errorf("%w: %q", ErrUnknownLabel, r.Label)
		}
		switch {
		case r.Args != nil:
			ts = append(ts, Target{Label: r.Label, Kind: KindKey, Args: r.Args})
		case r.Match != nil:
			t, err := matchTarget(r.Label, Match(r.Match))
			if err != nil {
				return nil, err
			}
			ts = append(ts, t)
		default:
			ts = append(ts, Target{Label: r.Label, Kind: KindAll})
		}
		return ts, nil
	}
	rs, ok := rules.of(r.Model)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownModel, r.Model)
	}
	labels := make([]string, 0, len(rs))
	for l := range rs {
		labels = append(labels, l)
	}
	slices.Sort(labels)
	for _, c := range r.Changes {
		for _, label := range labels {
			for _, m := range rs[label].affected(c) {
				t, err := matchTarget(label, m)
				if err != nil {
					return nil, fmt.Errorf("model %q, worker %q: %w", r.Model, label, err)
				}
				ts = append(ts, t)
			}
		}
	}
	return Dedup(ts), nil
}

// matchTarget builds the target of a match; an empty match is the whole
// label.
func matchTarget(label string, m Match) (Target, error) {
	if len(m) == 0 {
		return Target{Label: label, Kind: KindAll}, nil
	}
	toks := make(map[string][]string, len(m))
	for a, vs := range m {
		ts := make([]string, 0, len(vs))
		for _, v := range vs {
			t, err := worker.MatchToken(v)
			if err != nil {
				return Target{}, fmt.Errorf("%w: match.%s: %v", ErrBadRequest, a, err)
			}
			ts = append(ts, t)
		}
		slices.Sort(ts)
		toks[a] = slices.Compact(ts)
	}
	return Target{Label: label, Kind: KindMatch, Match: toks}, nil
}

// Dedup removes duplicate targets; a whole-label target absorbs the other
// targets of its label. The order is deterministic.
func Dedup(ts []Target) []Target {
	all := map[string]bool{}
	for _, t := range ts {
		if t.Kind == KindAll {
			all[t.Label] = true
		}
	}
	seen := map[string]bool{}
	out := ts[:0:0]
	for _, t := range ts {
		if all[t.Label] && t.Kind != KindAll {
			continue
		}
		id := t.signature()
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, t)
	}
	return out
}

func (t Target) signature() string {
	var b strings.Builder
	b.WriteString(t.Label)
	b.WriteByte(byte('0' + t.Kind))
	switch t.Kind {
	case KindKey:
		k, _ := worker.KeyOf(t.Label, t.Args)
		b.WriteString(k)
	case KindMatch:
		attrs := make([]string, 0, len(t.Match))
		for a := range t.Match {
			attrs = append(attrs, a)
		}
		slices.Sort(attrs)
		for _, a := range attrs {
			fmt.Fprintf(&b, "%q=%q;", a, t.Match[a])
		}
	}
	return b.String()
}

// Matches is the matching rule of the original: a variant whose arguments
// constrain attributes as in args (per attribute, its match tokens; see
// worker.MatchValues) matches spec if, for every attribute of spec, the
// variant contains one of the spec's values or does not constrain the
// attribute at all.
func Matches(args map[string][]string, spec map[string][]string) bool {
	for a, want := range spec {
		have, constrained := args[a]
		if !constrained {
			continue
		}
		if !intersects(have, want) {
			return false
		}
	}
	return true
}

func intersects(a, b []string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
