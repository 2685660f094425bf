package worker

import (
	"reflect"

	"github.com/jonboulle/clockwork"
)

// Clock is the time source of a cache: entry deadlines, relevance, wait
// budgets, the sweep and the origin limiter's queue all read it. Tests
// inject a [clockwork.FakeClock] so that TTLs, ticks and budgets are
// exercised without sleeping, and wait with its BlockUntilContext until
// the goroutines they started are blocked on it.
type Clock = clockwork.Clock

// SystemClock returns the clock of the operating system.
func SystemClock() Clock { return clockwork.NewRealClock() }

// isSystemClock reports whether c is the operating system's clock.
func isSystemClock(c Clock) bool {
	return reflect.TypeOf(c) == reflect.TypeOf(clockwork.NewRealClock())
}
