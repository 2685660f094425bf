package worker

import (
	"errors"
	"fmt"
	"time"
)

// ErrConfig is wrapped by every configuration error; the message names the
// field at fault.
var ErrConfig = errors.New("worker: invalid config")

// Policy is a complete set of worker settings: the process-wide defaults a
// node sets, and what a call runs with once the worker's fields and the
// call's overrides were applied. Field names follow the original library.
type Policy struct {
	// Expires is the hard TTL: an entry is gone after it. Default 5m (the
	// original required it in practice; five minutes is a safe floor).
	Expires time.Duration
	// Tick and TickAmount bound how long a caller waits for a value that
	// someone else is computing: Tick × TickAmount. Defaults 100ms and 10.
	Tick       time.Duration
	TickAmount int
	// IsConcurrent enables that waiting. When false, a caller that finds a
	// computation running does not wait for it and computes the value itself.
	// Default true.
	IsConcurrent bool
	// RelevanceInvalidation enables the soft TTL: after RelevanceExpires the
	// value is stale and is rebuilt. Default false.
	RelevanceInvalidation bool
	// RelevanceExpires is the soft TTL. Default 60s.
	RelevanceExpires time.Duration
	// DelayInvalidation rebuilds in the background: a stale value is served
	// at once while one rebuild per key runs (stale-while-revalidate), and
	// invalidations are queued for DelayCountdown. Default false: the caller
	// waits for the rebuild.
	DelayInvalidation bool
	// DelayCountdown is how long a delayed invalidation waits before it is
	// applied (it lets database transactions commit). Default 5s.
	DelayCountdown time.Duration
	// DelayLogging writes the created-cache record in the background instead
	// of before the fill returns. Default false.
	DelayLogging bool
	// CachedEntity returns the whole entry (value and metadata) instead of
	// the value where an API has to choose (the HTTP API's default for
	// _entity). Default false.
	CachedEntity bool
}

// DefaultPolicy returns the defaults of the original library.
func DefaultPolicy() Policy {
	return Policy{
		Expires:          5 * time.Minute,
		Tick:             100 * time.Millisecond,
		TickAmount:       10,
		IsConcurrent:     true,
		RelevanceExpires: 60 * time.Second,
		DelayCountdown:   5 * time.Second,
	}
}

// Budget is the longest a caller waits for a computation of someone else:
// Tick × TickAmount.
func (p Policy) Budget() time.Duration { return p.Tick * time.Duration(p.TickAmount) }

// Validate reports the first field that is out of range.
func (p Policy) Validate() error {
	switch {
	case p.Expires <= 0:
		return fmt.Errorf("%w: expires must be > 0, got %v", ErrConfig, p.Expires)
	case p.Tick <= 0:
		return fmt.Errorf("%w: tick must be > 0, got %v", ErrConfig, p.Tick)
	case p.TickAmount < 0:
		return fmt.Errorf("%w: tick_amount must be >= 0, got %d", ErrConfig, p.TickAmount)
	case p.RelevanceExpires <= 0:
		return fmt.Errorf("%w: relevance_expires must be > 0, got %v", ErrConfig, p.RelevanceExpires)
	case p.DelayCountdown < 0:
		return fmt.Errorf("%w: delay_countdown must be >= 0, got %v", ErrConfig, p.DelayCountdown)
	}
	return nil
}

// With returns p with the fields that s sets replaced.
func (p Policy) With(s Settings) Policy {
	if s.Expires != 0 {
		p.Expires = s.Expires
	}
	if s.Tick != 0 {
		p.Tick = s.Tick
	}
	if s.TickAmount != nil {
		p.TickAmount = *s.TickAmount
	}
	setBool(&p.IsConcurrent, s.IsConcurrent)
	setBool(&p.RelevanceInvalidation, s.RelevanceInvalidation)
	if s.RelevanceExpires != 0 {
		p.RelevanceExpires = s.RelevanceExpires
	}
	setBool(&p.DelayInvalidation, s.DelayInvalidation)
	if s.DelayCountdown != nil {
		p.DelayCountdown = *s.DelayCountdown
	}
	setBool(&p.DelayLogging, s.DelayLogging)
	setBool(&p.CachedEntity, s.CachedEntity)
	return p
}

func setBool(dst *bool, v *bool) {
	if v != nil {
		*dst = *v
	}
}

// Settings is a partial [Policy]: the fields a worker or a call sets. A zero
// duration and a nil pointer mean "inherit". Per-call overrides may set every
// field but DelayLogging and CachedEntity, which belong to the worker.
type Settings struct {
	Expires               time.Duration
	Tick                  time.Duration
	TickAmount            *int
	IsConcurrent          *bool
	RelevanceInvalidation *bool
	RelevanceExpires      time.Duration
	DelayInvalidation     *bool
	DelayCountdown        *time.Duration
	DelayLogging          *bool
	CachedEntity          *bool
}

// Bool returns a pointer to b, for the optional fields of [Settings].
func Bool(b bool) *bool { return &b }

// Int returns a pointer to n, for the optional fields of [Settings].
func Int(n int) *int { return &n }

// Duration returns a pointer to d, for the optional fields of [Settings].
func Duration(d time.Duration) *time.Duration { return &d }

// IsZero reports whether s sets nothing.
func (s Settings) IsZero() bool { return s == Settings{} }

func (s Settings) validate() error {
	switch {
	case s.Expires < 0:
		return fmt.Errorf("%w: expires must be > 0, got %v", ErrConfig, s.Expires)
	case s.Tick < 0:
		return fmt.Errorf("%w: tick must be > 0, got %v", ErrConfig, s.Tick)
	case s.TickAmount != nil && *s.TickAmount < 0:
		return fmt.Errorf("%w: tick_amount must be >= 0, got %d", ErrConfig, *s.TickAmount)
	case s.RelevanceExpires < 0:
		return fmt.Errorf("%w: relevance_expires must be > 0, got %v", ErrConfig, s.RelevanceExpires)
	case s.DelayCountdown != nil && *s.DelayCountdown < 0:
		return fmt.Errorf("%w: delay_countdown must be >= 0, got %v", ErrConfig, *s.DelayCountdown)
	}
	return nil
}

// validateOverride checks the per-call overrides: the fields the original
// allowed per call, with the ranges of [Policy.Validate].
func (s Settings) validateOverride() error {
	if s.DelayLogging != nil {
		return fmt.Errorf("%w: delay_logging cannot be overridden per call", ErrConfig)
	}
	if s.CachedEntity != nil {
		return fmt.Errorf("%w: cached_entity cannot be overridden per call", ErrConfig)
	}
	return s.validate()
}

// Action is what an invalidation does to an affected entry.
type Action uint8

const (
	// Refresh rebuilds the entry from its stored arguments; readers see the
	// old value until the new one is in place, never a miss. The default.
	Refresh Action = iota
	// Drop removes the entry; the next reader fills it.
	Drop
)

// String returns "refresh" or "drop".
func (a Action) String() string {
	if a == Drop {
		return "drop"
	}
	return "refresh"
}

// Config defines a worker.
type Config struct {
	// Label is the worker's unique name; every key of the worker starts with
	// "label@". Required: letters, digits and "_-.:" only, at most 128 bytes.
	Label string
	// Getter builds the value from the call's arguments. Required.
	Getter Getter
	// KeyGen replaces the canonical key encoding of [KeyOf]. Default nil.
	KeyGen KeyGen
	// Settings are the worker's own values of the policy fields; unset fields
	// inherit the cache's defaults.
	Settings
	// Action is what an invalidation does to an entry. Default Refresh.
	Action Action
	// Sweep rebuilds stale entries (past relevance_to) that nobody reads,
	// every SweepInterval. Only meaningful with relevance_invalidation.
	// Default false.
	Sweep bool
	// SweepInterval is the period of the sweep. Default 1s.
	SweepInterval time.Duration
	// EarlyRefresh enables probabilistic refresh before the hard TTL
	// (XFetch): a hit at time t starts a background rebuild when
	// t - FillDuration × EarlyRefresh × ln(rand) ≥ available_to. Typical
	// value 1; 0 (the default) disables it.
	EarlyRefresh float64
	// FillTimeout bounds one run of the getter. Default 0: a run is only
	// stopped by the cache's Close.
	FillTimeout time.Duration
	// MaxExpires bounds the expires that a read from the network (the HTTP
	// API's _expires) may ask for. The worker does not apply it: Get takes
	// whatever Settings a Go caller gives. Default 0: the worker's own
	// expires.
	MaxExpires time.Duration
	// OpenOverrides lets any client of the HTTP API send the per-call
	// overrides that change how much work a read costs the origin
	// (_is_concurrent=false, _delay_invalidation, _delay_countdown); without
	// it they need the admin token. Not applied by the worker either.
	// Default false.
	OpenOverrides bool
	// Limiter bounds the getter runs of this worker together with those of
	// every other worker given the same Limiter (the workers of one origin
	// host). Default nil: the worker gets a limiter of its own, of
	// MaxConcurrentFills.
	Limiter *Limiter
	// MaxConcurrentFills bounds the getter runs in flight when Limiter is
	// nil. Default 64; negative: no limit.
	MaxConcurrentFills int
	// RefreshIfReadWithin is the refresh-or-drop rule of invalidations: an
	// owned entry read since it was built and within this window is
	// rebuilt, the others are dropped and fill on their next read.
	// Default 5m; negative: every entry is rebuilt.
	RefreshIfReadWithin time.Duration
}

const maxLabelLen = 128

// ValidLabel reports whether label can name a worker.
func ValidLabel(label string) error {
	if label == "" {
		return fmt.Errorf("%w: label is required", ErrConfig)
	}
	if len(label) > maxLabelLen {
		return fmt.Errorf("%w: label is longer than %d bytes", ErrConfig, maxLabelLen)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' || c == ':'
		if !ok {
			return fmt.Errorf("%w: label %q: character %q not allowed (letters, digits, _-.: only)", ErrConfig, label, c)
		}
	}
	return nil
}

func (c Config) validate() error {
	if err := ValidLabel(c.Label); err != nil {
		return err
	}
	if c.Getter == nil {
		return fmt.Errorf("%w: worker %q: getter is required", ErrConfig, c.Label)
	}
	if err := c.Settings.validate(); err != nil {
		return fmt.Errorf("worker %q: %w", c.Label, err)
	}
	switch {
	case c.Action > Drop:
		return fmt.Errorf("%w: worker %q: action %d unknown", ErrConfig, c.Label, c.Action)
	case c.SweepInterval < 0:
		return fmt.Errorf("%w: worker %q: sweep_interval must be >= 0", ErrConfig, c.Label)
	case c.EarlyRefresh < 0:
		return fmt.Errorf("%w: worker %q: early_refresh must be >= 0", ErrConfig, c.Label)
	case c.FillTimeout < 0:
		return fmt.Errorf("%w: worker %q: fill_timeout must be >= 0", ErrConfig, c.Label)
	case c.MaxExpires < 0:
		return fmt.Errorf("%w: worker %q: max_expires must be >= 0", ErrConfig, c.Label)
	case c.Limiter != nil && c.MaxConcurrentFills != 0:
		return fmt.Errorf("%w: worker %q: max_concurrent_fills and a shared limiter are exclusive", ErrConfig, c.Label)
	}
	return nil
}
