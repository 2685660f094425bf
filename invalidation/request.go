package invalidation

import (
	"errors"
	"fmt"

	"github.com/cachenode/cachenode/worker"
)

// Errors of this package.
var (
	// ErrBadRequest is wrapped by every validation error of a Request.
	ErrBadRequest = errors.New("invalidation: bad request")
	// ErrUnknownLabel is returned for a label no worker has. It is
	// worker.ErrUnknownLabel, the one sentinel of an unknown label for a
	// read and an invalidation alike.
	ErrUnknownLabel = worker.ErrUnknownLabel
	// ErrUnknownModel is returned for a model that has no rules.
	ErrUnknownModel = errors.New("invalidation: unknown model")
)

// Request is an invalidation as a client states it; its JSON form is the
// body of POST /v1/invalidate. Exactly one of these shapes:
//
//	{"label": L, "args": {...}}                       one key
//	{"label": L}                                      every key of L
//	{"label": L, "match": {"attr": [v, ...]}}         every variant of L that matches
//	{"model": M, "changes": [{"op": ..., "old": {...}, "new": {...}}]}   through the rules
//
// with optional "delay" and "countdown".
type Request struct {
	Label   string           `json:"label,omitempty"`
	Args    worker.Args      `json:"args,omitempty"`
	Match   map[string][]any `json:"match,omitempty"`
	Model   string           `json:"model,omitempty"`
	Changes []Change         `json:"changes,omitempty"`
	// Delay queues the invalidation in the durable outbox and applies it
	// after Countdown. Nil means the worker's delay_invalidation (for a
	// model, delayed if any affected worker delays).
	Delay *bool `json:"delay,omitempty"`
	// Countdown overrides delay_countdown: a Go duration ("5s") or seconds.
	Countdown Duration `json:"countdown,omitempty"`
}

// Change is one change of a record of the application's data.
type Change struct {
	// Op is "create", "update" or "delete".
	Op string `json:"op"`
	// Old holds the record's values before the change (update, delete).
	Old map[string]any `json:"old,omitempty"`
	// New holds the record's values after the change (create, update).
	New map[string]any `json:"new,omitempty"`
}

// Change operations.
const (
	OpCreate = "create"
	OpUpdate = "update"
	OpDelete = "delete"
)

// Duration is the countdown's type: a Go duration ("5s") or seconds (2.5,
// "2.5") in JSON, read by worker.ParseDuration like every duration of the
// config file and of the HTTP overrides.
type Duration = worker.ConfigDuration

// Validate checks the shape of r; errors wrap ErrBadRequest.
func (r *Request) Validate() error {
	switch {
	case r.Model != "" && r.Label != "":
		return fmt.Errorf("%w: give either label or model, not both", ErrBadRequest)
	case r.Model == "" && r.Label == "":
		return fmt.Errorf("%w: label or model is required", ErrBadRequest)
	case r.Model != "":
		if len(r.Changes) == 0 {
			return fmt.Errorf("%w: changes: at least one change is required for a model", ErrBadRequest)
		}
		if r.Args != nil || r.Match != nil {
			return fmt.Errorf("%w: args and match go with a label, not a model", ErrBadRequest)
		}
		for i, c := range r.Changes {
			if err := c.validate(); err != nil {
				return fmt.Errorf("%w: changes[%d]: %v", ErrBadRequest, i, err)
			}
		}
	default:
		if r.Args != nil && r.Match != nil {
			return fmt.Errorf("%w: give either args or match, not both", ErrBadRequest)
		}
		if r.Changes != nil {
			return fmt.Errorf("%w: changes go with a model, not a label", ErrBadRequest)
		}
		if err := worker.ValidLabel(r.Label); err != nil {
			return fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		for a, vs := range r.Match {
			if len(vs) == 0 {
				return fmt.Errorf("%w: match.%s: at least one value is required", ErrBadRequest, a)
			}
			for _, v := range vs {
				if _, err := worker.MatchToken(v); err != nil {
					return fmt.Errorf("%w: match.%s: %v", ErrBadRequest, a, err)
				}
			}
		}
		if r.Args != nil {
			if _, err := worker.KeyOf(r.Label, r.Args); err != nil {
				return fmt.Errorf("%w: args: %v", ErrBadRequest, err)
			}
		}
	}
	return nil
}

func (c Change) validate() error {
	switch c.Op {
	case OpCreate:
		if c.New == nil {
			return errors.New("create needs new")
		}
	case OpDelete:
		if c.Old == nil {
			return errors.New("delete needs old")
		}
	case OpUpdate:
		if c.Old == nil || c.New == nil {
			return errors.New("update needs old and new")
		}
	default:
		return fmt.Errorf("op must be create, update or delete, got %q", c.Op)
	}
	return nil
}

// Result is the answer of a synchronous invalidation.
type Result struct {
	// Keys is the number of cached keys that were refreshed or dropped,
	// over all members.
	Keys int `json:"keys"`
	// Nodes is the number of members that applied the invalidation.
	Nodes int `json:"nodes"`
	// Missing names the live members that did not acknowledge it in time;
	// the invalidation keeps being delivered to them in the background.
	Missing []string `json:"missing,omitempty"`
	// Queued is the outbox ID of a delayed invalidation (0 when it was
	// applied at once).
	Queued uint64 `json:"queued,omitempty"`
}
