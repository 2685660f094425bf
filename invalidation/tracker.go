package invalidation

import (
	"slices"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// Limits bound a [Tracker]'s memory. Zero fields take the defaults of
// [DefaultLimits].
type Limits struct {
	// Seen is how many event IDs (and owners' rounds) are remembered for
	// de-duplication; the oldest is forgotten first. Default 8192.
	Seen int
	// Log is how many recent events are kept to offer on push/pull.
	// Default 256.
	Log int
	// LogAge is how long an event stays on offer. Default 2 minutes.
	LogAge time.Duration
	// LogBytes bounds the payloads of one offer. Default 256 KiB.
	LogBytes int
	// RedeliverFor is how long a member that missed an event is retried.
	// Default 30 seconds.
	RedeliverFor time.Duration
}

// DefaultLimits returns the limits a node runs with.
func DefaultLimits() Limits {
	return Limits{Seen: 8192, Log: 256, LogAge: 2 * time.Minute, LogBytes: 256 << 10, RedeliverFor: 30 * time.Second}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.Seen <= 0 {
		l.Seen = d.Seen
	}
	if l.Log <= 0 {
		l.Log = d.Log
	}
	if l.LogAge <= 0 {
		l.LogAge = d.LogAge
	}
	if l.LogBytes <= 0 {
		l.LogBytes = d.LogBytes
	}
	if l.RedeliverFor <= 0 {
		l.RedeliverFor = d.RedeliverFor
	}
	return l
}

// Token names one delivery of an event that claimed work (see
// [Tracker.Claim]); the zero Token names none.
type Token uint64

// Claim is the Tracker's decision on one delivery of an event.
type Claim struct {
	// Token is the delivery's claim, to [Tracker.Finish] once its scope is
	// applied; 0 when nothing is left for this delivery to apply.
	Token Token
	// Scope is what this delivery applies (when Token is not 0).
	Scope worker.Scope
	// Wait is a delivery still applying that this one must wait for
	// before it answers: the one that applied the event (Token 0), or the
	// owners' round still running when this delivery applies the rest.
	// 0 when there is nothing to wait for.
	Wait Token
	// First says this is the first delivery of the event here: the node
	// notes the time of the last invalidation of its labels.
	First bool
}

// Logged is an event on offer for push/pull.
type Logged struct {
	At      time.Time
	ID      string
	Payload []byte
}

// Queued is an event that came by gossip or push/pull, waiting for the
// background applier.
type Queued struct {
	Event   Event
	Payload []byte
}

// Batch is what the background applier applies at once: every queued
// event not applied meanwhile, merged into one event per scope so that a
// key that several of them name is rebuilt once (chaos K4).
type Batch struct {
	// All holds the targets of the events applied whole; Near those of
	// the events whose owners' round runs here (only the near-cache
	// copies are left to drop).
	All, Near Event
	// Tokens are the claims to finish once both are applied and Waits
	// are done.
	Tokens []Token
	// Waits are the owners' rounds to wait for before finishing.
	Waits []Token
	// Events is how many queued events the batch took.
	Events int
}

// Tracker is a node's invalidation state and its rules of order: which
// events were applied here (so that each is applied once, whatever path
// brings it), which recent events are offered to members on push/pull (so
// that a member cut off during an invalidation gets it when it comes
// back), the events waiting for the background applier, and the members
// an event is redelivered to. It does no I/O and reads no clock: the
// caller passes the time, carries out the decisions and reports back.
//
// A Tracker is not safe for concurrent use: its owner holds a lock around
// every call (and never across the I/O the decisions lead to).
type Tracker struct {
	limits Limits
	// seen maps an event ID, and ownersKey(ID) for the owners' round of a
	// broadcast (the keys this node owns), to the delivery that claimed it.
	seen    map[string]Token
	order   []string       // FIFO of the keys of seen
	pending map[Token]bool // claims not finished yet
	last    Token          // the last token handed out
	log     []Logged       // events on offer, oldest first
	bg      []Queued       // events waiting for the background applier
	running bool           // the background applier runs
	redo    map[string]*redelivery
}

type redelivery struct {
	payload  []byte
	missed   []string
	deadline time.Time
}

// NewTracker returns an empty Tracker.
func NewTracker(l Limits) *Tracker {
	return &Tracker{limits: l.withDefaults(), seen: make(map[string]Token), pending: make(map[Token]bool),
		redo: make(map[string]*redelivery)}
}

// ownersKey is the key in seen of the owners' round of event id.
func ownersKey(id string) string { return "owners/" + id }

// Claim decides what one delivery of ev applies here (owners: the first
// round of a broadcast, the keys this node owns). A second delivery
// (direct, redelivered, gossiped or merged on push/pull) applies nothing
// and waits for the first; a whole delivery after the owners' round
// applies the near-cache copies, once that round is done.
func (t *Tracker) Claim(ev *Event, payload []byte, owners bool, now time.Time) Claim {
	if d, dup := t.seen[ev.ID]; dup {
		return Claim{Wait: t.ifPending(d)}
	}
	ownKey := ownersKey(ev.ID)
	ownersTok, ownersSeen := t.seen[ownKey]
	if owners && ownersSeen {
		return Claim{Wait: t.ifPending(ownersTok)}
	}
	t.last++
	c := Claim{Token: t.last, Scope: worker.ScopeAll, First: !ownersSeen}
	t.pending[c.Token] = true
	switch {
	case owners:
		c.Scope = worker.ScopeOwned
		t.remember(ownKey, c.Token)
	case ownersSeen:
		c.Scope, c.Wait = worker.ScopeNear, t.ifPending(ownersTok)
		t.remember(ev.ID, c.Token)
	default:
		t.remember(ownKey, c.Token)
		t.remember(ev.ID, c.Token)
	}
	if !owners {
		// Offered to the members on push/pull only now: an event still in
		// its owners' round would make them drop their near-cache copies
		// before every owner rebuilt its keys.
		t.log = append(t.log, Logged{At: now, ID: ev.ID, Payload: payload})
		if len(t.log) > t.limits.Log {
			t.log = t.log[1:]
		}
	}
	return c
}

func (t *Tracker) ifPending(tok Token) Token {
	if t.pending[tok] {
		return tok
	}
	return 0
}

// Finish records that the delivery tok has applied its scope.
func (t *Tracker) Finish(tok Token) { delete(t.pending, tok) }

// Pending reports whether tok is a claim not finished yet.
func (t *Tracker) Pending(tok Token) bool { return t.pending[tok] }

// remember records key in seen and forgets the oldest beyond the limit.
func (t *Tracker) remember(key string, tok Token) {
	t.seen[key] = tok
	t.order = append(t.order, key)
	if len(t.order) > t.limits.Seen {
		delete(t.seen, t.order[0])
		t.order = t.order[1:]
	}
}

// Offer returns the events to offer on a push/pull exchange at now: the
// newest first, none older than Limits.LogAge, at most about
// Limits.LogBytes of payload.
func (t *Tracker) Offer(now time.Time) []Logged {
	cutoff := now.Add(-t.limits.LogAge)
	var out []Logged
	size := 0
	for i := len(t.log) - 1; i >= 0 && size < t.limits.LogBytes; i-- {
		if t.log[i].At.Before(cutoff) {
			break
		}
		out = append(out, t.log[i])
		size += len(t.log[i].Payload)
	}
	return out
}

// Logged reports how many events are on offer (or were, before they aged).
func (t *Tracker) Logged() int { return len(t.log) }

// Queue adds the events that came by gossip or push/pull to the
// background applier's queue, but those applied or queued already. It
// reports whether the caller must start the applier (it did not run and
// something was queued); the applier then calls [Tracker.NextBatch] until
// it reports nothing left. The events of one push/pull are queued in one
// call, so that they are applied as one.
func (t *Tracker) Queue(evs []Queued) (start bool) {
	queued := len(t.bg)
next:
	for _, q := range evs {
		if _, dup := t.seen[q.Event.ID]; dup {
			continue
		}
		for _, o := range t.bg {
			if o.Event.ID == q.Event.ID {
				continue next
			}
		}
		t.bg = append(t.bg, q)
	}
	if t.running || len(t.bg) == queued {
		return false
	}
	t.running = true
	return true
}

// StopApplier drops the queue and records that no applier runs: the node
// could not start one (it is closing).
func (t *Tracker) StopApplier() {
	t.bg = nil
	t.running = false
}

// Running reports whether the background applier runs.
func (t *Tracker) Running() bool { return t.running }

// NextBatch takes every queued event and claims it, merged into one
// [Batch]. ok is false when the queue was empty: the applier stops (and
// the next [Tracker.Queue] starts another).
func (t *Tracker) NextBatch(now time.Time) (b Batch, ok bool) {
	batch := t.bg
	t.bg = nil
	if len(batch) == 0 {
		t.running = false
		return Batch{}, false
	}
	b.Events = len(batch)
	for i := range batch {
		q := &batch[i]
		c := t.Claim(&q.Event, q.Payload, false, now)
		switch {
		case c.Token == 0:
			continue // applied meanwhile, directly
		case c.Scope == worker.ScopeNear:
			b.Near.Targets = append(b.Near.Targets, q.Event.Targets...)
			if c.Wait != 0 {
				b.Waits = append(b.Waits, c.Wait)
			}
		default:
			b.All.Targets = append(b.All.Targets, q.Event.Targets...)
		}
		b.Tokens = append(b.Tokens, c.Token)
	}
	return b, true
}

// Redeliver records that the members missed took no delivery of event id
// (a broadcast's second round failed there): [Tracker.RedeliveryRound]
// then names them until they acknowledge, leave the ring, or
// Limits.RedeliverFor passes. It reports whether the caller must start
// the redelivery of id (none runs yet; one that runs takes the new members).
func (t *Tracker) Redeliver(id string, payload []byte, missed []string, now time.Time) (start bool) {
	r := t.redo[id]
	if r == nil {
		r = &redelivery{payload: payload}
		t.redo[id] = r
		start = true
	}
	r.deadline = now.Add(t.limits.RedeliverFor)
	for _, m := range missed {
		if !slices.Contains(r.missed, m) {
			r.missed = append(r.missed, m)
		}
	}
	return start
}

// RedeliveryRound returns the members to send event id to again at now,
// and its payload: those still missing it that alive says are in the
// ring (one that left or died drops its near cache when it comes back and
// is forgotten here). ok is false, and the event forgotten, when no one
// is left or its time is up.
func (t *Tracker) RedeliveryRound(id string, now time.Time, alive func(member string) bool) (to []string, payload []byte, ok bool) {
	r := t.redo[id]
	if r == nil {
		return nil, nil, false
	}
	r.missed = slices.DeleteFunc(r.missed, func(m string) bool { return !alive(m) })
	if len(r.missed) == 0 || !now.Before(r.deadline) {
		delete(t.redo, id)
		return nil, nil, false
	}
	return slices.Clone(r.missed), r.payload, true
}

// Redelivered records that member acknowledged event id.
func (t *Tracker) Redelivered(id, member string) {
	if r := t.redo[id]; r != nil {
		r.missed = slices.DeleteFunc(r.missed, func(m string) bool { return m == member })
	}
}
