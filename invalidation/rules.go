package invalidation

import (
	"fmt"
	"slices"
	"sync"
)

// Match is a set of attribute values: a cached variant matches it if, for
// every attribute, the variant's argument contains one of the values or
// the variant does not constrain that attribute. An empty Match means the
// whole label.
type Match map[string][]any

// Rule says which variants of one worker a change of a model affects.
// Either IsEmpty, or Args, or the getters; with none of them set, every
// change affects the whole label.
type Rule struct {
	// IsEmpty: any change of the model invalidates every key of the label.
	IsEmpty bool
	// Args names fields of the record that are the worker's arguments, for
	// declarative rules (the config file's `args: [attr1, attr2]`): the
	// instance getter is then {field: record[field]} for each field. A
	// field whose value is a list stands for each of its values (the
	// variants holding any of them are affected; an empty list is as if
	// the field were absent): a record may belong to several values of an
	// argument, and a client may send the several forms one value takes
	// in its arguments (the Python package sends 1 and 1.0 for a float).
	Args []string
	// Instance returns the variants a record belongs to, used on create
	// (with the new values) and delete (with the old ones). Nil: derived
	// from Args.
	Instance func(record map[string]any) Match
	// Outdated returns, on update, the variants the record belonged to
	// before the change. Nil: Instance of the old values.
	Outdated func(old, new map[string]any) Match
	// Newcomers returns, on update, the variants the record belongs to
	// after the change. Nil: Instance of the new values.
	Newcomers func(old, new map[string]any) Match
}

func (r Rule) instance(rec map[string]any) Match {
	if r.Instance != nil {
		return r.Instance(rec)
	}
	if len(r.Args) == 0 {
		return nil
	}
	m := make(Match, len(r.Args))
	for _, a := range r.Args {
		v, ok := rec[a]
		if !ok {
			continue
		}
		if l, isList := v.([]any); isList {
			if len(l) > 0 {
				m[a] = l
			}
			continue
		}
		m[a] = []any{v}
	}
	return m
}

// affected returns the matches one change produces for this rule; a nil
// element means the whole label.
func (r Rule) affected(c Change) []Match {
	if r.IsEmpty {
		return []Match{nil}
	}
	switch c.Op {
	case OpCreate:
		return []Match{r.instance(c.New)}
	case OpDelete:
		return []Match{r.instance(c.Old)}
	}
	var before, after Match
	if r.Outdated != nil {
		before = r.Outdated(c.Old, c.New)
	} else {
		before = r.instance(c.Old)
	}
	if r.Newcomers != nil {
		after = r.Newcomers(c.Old, c.New)
	} else {
		after = r.instance(c.New)
	}
	// The record left the old bucket and joined the new one: both are
	// affected.
	return []Match{before, after}
}

// Rules maps model names to the rules of each worker label. It is safe for
// concurrent use.
type Rules struct {
	mu     sync.RWMutex
	models map[string]map[string]Rule // guarded by mu
}

// NewRules returns an empty rule set.
func NewRules() *Rules { return &Rules{models: make(map[string]map[string]Rule)} }

// Add registers the rules of model, one per worker label, replacing any
// earlier rules of the model. known reports whether a label names a worker.
func (rs *Rules) Add(model string, rules map[string]Rule, known func(label string) bool) error {
	if model == "" {
		return fmt.Errorf("%w: model name is required", ErrBadRequest)
	}
	if len(rules) == 0 {
		return fmt.Errorf("%w: model %q: at least one worker rule is required", ErrBadRequest, model)
	}
	cp := make(map[string]Rule, len(rules))
	for label, r := range rules {
		if known != nil && !known(label) {
			return fmt.Errorf("%w: model %q: %q", ErrUnknownLabel, model, label)
		}
		if r.IsEmpty && (len(r.Args) > 0 || r.Instance != nil || r.Outdated != nil || r.Newcomers != nil) {
			return fmt.Errorf("%w: model %q, worker %q: is_empty excludes args and getters", ErrBadRequest, model, label)
		}
		r.Args = slices.Clone(r.Args)
		cp[label] = r
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.models[model] = cp
	return nil
}

// Models returns the names of the models with rules, sorted.
func (rs *Rules) Models() []string {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	out := make([]string, 0, len(rs.models))
	for m := range rs.models {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

func (rs *Rules) of(model string) (map[string]Rule, bool) {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	r, ok := rs.models[model]
	return r, ok
}
