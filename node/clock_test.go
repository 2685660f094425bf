package node

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/worker"
)

// TestDelayedInvalidationIsDueOnTheNodesClock: the outbox reads
// Config.Clock, so a delayed invalidation of two minutes is applied when
// the clock is moved on two minutes, not when two minutes have passed.
func TestDelayedInvalidationIsDueOnTheNodesClock(t *testing.T) {
	db := newFooDB()
	clock := clockwork.NewFakeClock()
	// Suspicions that take longer than the countdown: the clock's jump is
	// not taken for a pause (which would drop the key, leaving the
	// invalidation nothing to rebuild).
	m := steadyMembership()
	m.SuspicionMult = 1000
	c := startCluster(&cluster{t: t, setup: db.register, membership: m,
		configure: func(cfg *Config) { cfg.Clock = clock; cfg.Data = t.TempDir() }}, 1)
	n := c.nodes[0]
	v := worker.Args{"attr1": 1, "attr2": "a"}
	get(t, n, "filtered_foos", v)
	const countdown = 2 * time.Minute // within the entry's TTL of 5 min
	res, err := n.Invalidate(context.Background(), invalidation.Request{
		Label: "filtered_foos", Args: v, Delay: worker.Bool(true), Countdown: invalidation.Duration(countdown)})
	if err != nil || res.Queued == 0 {
		t.Fatalf("not queued: %+v %v", res, err)
	}
	pending := func() int {
		items, err := n.Store().Pending()
		if err != nil {
			t.Fatal(err)
		}
		return len(items)
	}
	// On the system clock, the item would wait its two minutes and this
	// wait run out.
	clock.Advance(countdown)
	advanceUntil(t, clock, outboxPoll, 10*time.Second, "the outbox to apply the item", func() bool { return pending() == 0 })
	waitFor(t, 10*time.Second, "the rebuild", func() bool { return db.count("filtered_foos", v) == 2 })
}
