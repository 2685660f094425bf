package worker

import "sync/atomic"

// Stats are the counters of one worker since it was registered.
type Stats struct {
	Hits          int64 `json:"hits"`
	Misses        int64 `json:"misses"`
	StaleHits     int64 `json:"stale"`
	Fills         int64 `json:"fills"`
	FillErrors    int64 `json:"fill_errors"`
	Fallbacks     int64 `json:"fallbacks"`
	PeerFetches   int64 `json:"peer_fetches"`
	Waits         int64 `json:"waits"`
	WaitTimeouts  int64 `json:"wait_timeouts"`
	Refreshes     int64 `json:"refreshes"`
	Invalidations int64 `json:"invalidations"`
	Discarded     int64 `json:"discarded"`
	// InvalidationRefreshed and InvalidationDropped split the owned
	// entries that invalidations acted on: rebuilt because they were read
	// recently, or dropped because nobody read them.
	InvalidationRefreshed int64 `json:"invalidation_refreshed"`
	InvalidationDropped   int64 `json:"invalidation_dropped"`
	// OriginBusy counts the fills answered ErrOriginBusy without reaching
	// the origin (their wait for a slot outlasted the budget, or the queue
	// was full); BackPressure the origin's answers asking to slow down.
	OriginBusy   int64 `json:"origin_busy"`
	BackPressure int64 `json:"back_pressure"`
}

// counters are the live Stats; each field is updated atomically.
type counters struct {
	hits, misses, staleHits, fills, fillErrors, fallbacks, peerFetches atomic.Int64
	waits, waitTimeouts, refreshes, invalidations, discarded           atomic.Int64
	invRefreshed, invDropped, originBusy, backPressure                 atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits:          c.hits.Load(),
		Misses:        c.misses.Load(),
		StaleHits:     c.staleHits.Load(),
		Fills:         c.fills.Load(),
		FillErrors:    c.fillErrors.Load(),
		Fallbacks:     c.fallbacks.Load(),
		PeerFetches:   c.peerFetches.Load(),
		Waits:         c.waits.Load(),
		WaitTimeouts:  c.waitTimeouts.Load(),
		Refreshes:     c.refreshes.Load(),
		Invalidations: c.invalidations.Load(),
		Discarded:     c.discarded.Load(),

		InvalidationRefreshed: c.invRefreshed.Load(),
		InvalidationDropped:   c.invDropped.Load(),
		OriginBusy:            c.originBusy.Load(),
		BackPressure:          c.backPressure.Load(),
	}
}
