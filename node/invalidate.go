package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/persist"
	"github.com/cachenode/cachenode/worker"
)

// Bounds of the invalidation machinery (the Tracker's are
// invalidation.DefaultLimits).
const (
	gossipMaxBytes  = 1200 // larger events are not gossiped
	redeliverPeriod = 200 * time.Millisecond
	outboxPoll      = 100 * time.Millisecond
	applyTimeout    = 30 * time.Second
)

// eventState is the node's shell around its invalidation.Tracker: the
// lock that guards it and a channel per claim the Tracker has not seen
// finished, which the deliveries that must wait for it block on. The
// Tracker is given the time of the cache's clock (Config.Clock).
type eventState struct {
	mu sync.Mutex
	t  *invalidation.Tracker // guarded by mu
	// done has a channel per pending claim of t, closed when the claim
	// finishes. Guarded by mu.
	done map[invalidation.Token]chan struct{}
}

func newEventState() eventState {
	return eventState{t: invalidation.NewTracker(invalidation.DefaultLimits()), done: make(map[invalidation.Token]chan struct{})}
}

// claim asks the Tracker what a delivery of ev applies; wait is the
// channel of the claim it must wait for, nil when there is none.
func (s *eventState) claim(ev *invalidation.Event, payload []byte, owners bool, now time.Time) (c invalidation.Claim, wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c = s.t.Claim(ev, payload, owners, now)
	if c.Token != 0 {
		s.done[c.Token] = make(chan struct{})
	}
	return c, s.waitLocked(c.Wait)
}

// waitLocked returns the channel of a pending claim, nil for none; s.mu
// is held.
func (s *eventState) waitLocked(tok invalidation.Token) chan struct{} {
	if tok == 0 {
		return nil
	}
	return s.done[tok]
}

// finish records that the claims toks are applied and wakes those
// waiting for them.
func (s *eventState) finish(toks ...invalidation.Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tok := range toks {
		s.t.Finish(tok)
		if d := s.done[tok]; d != nil {
			close(d)
			delete(s.done, tok)
		}
	}
}

// RegisterRules registers the automatic invalidation rules of a model, one
// per worker label; every label must name a registered worker. Rules given
// with Args only are the declarative form of the config file.
func (n *Node) RegisterRules(model string, rules map[string]invalidation.Rule) error {
	return n.rules.Add(model, rules, n.known)
}

// Rules returns the node's automatic invalidation rules.
func (n *Node) Rules() *invalidation.Rules { return n.rules }

func (n *Node) known(label string) bool {
	_, ok := n.cache.Worker(label)
	return ok
}

// Invalidate applies an invalidation request across the cluster: the
// event goes to every live member directly over the peer transport, each
// member refreshes the affected keys it owns and drops its near-cache
// copies, and Invalidate returns once every live member acknowledged (or
// ctx ended; Result.Missing names the members that did not answer; the
// event keeps being delivered to them in the background and by gossip).
// A delayed request (Request.Delay, or the workers' delay_invalidation) is
// written to the durable outbox and applied after its countdown, also if
// the node restarts in between; Result.Queued is then its ID. Errors wrap
// invalidation.ErrBadRequest, ErrUnknownLabel or ErrUnknownModel.
func (n *Node) Invalidate(ctx context.Context, req invalidation.Request) (invalidation.Result, error) {
	targets, err := invalidation.Resolve(&req, n.rules, n.known)
	if err != nil {
		return invalidation.Result{}, err
	}
	ev := invalidation.Event{ID: invalidation.NewID(), Origin: n.cfg.Name, Targets: targets}
	if delay, countdown := n.delayOf(&req, targets); delay {
		payload, err := msgpack.Marshal(&ev)
		if err != nil {
			return invalidation.Result{}, fmt.Errorf("node: encode event: %w", err)
		}
		// While the records are degraded the outbox cannot be written:
		// the error (persist.ErrUnavailable) is answered 503, never a
		// "durable" 202 that is not.
		id, err := n.enqueue(n.cache.Clock().Now().Add(countdown), payload)
		if err != nil {
			return invalidation.Result{}, fmt.Errorf("node: outbox: %w", err)
		}
		n.wakeOutbox()
		return invalidation.Result{Queued: id}, nil
	}
	return n.broadcast(ctx, &ev)
}

// delayOf decides whether a request is delayed, and for how long: as the
// request says, else as the affected workers' delay_invalidation and
// delay_countdown say (delayed if any is, for the longest countdown).
func (n *Node) delayOf(req *invalidation.Request, targets []invalidation.Target) (bool, time.Duration) {
	delay, countdown := false, time.Duration(0)
	for _, t := range targets {
		if w, ok := n.cache.Worker(t.Label); ok {
			p := w.Policy()
			delay = delay || p.DelayInvalidation
			countdown = max(countdown, p.DelayCountdown)
		}
	}
	if req.Delay != nil {
		delay = *req.Delay
	}
	if req.Countdown > 0 {
		countdown = time.Duration(req.Countdown)
	}
	return delay, countdown
}

// applyEvent applies an event once (with owners, only to the keys this
// node owns: the first round of a broadcast). A second delivery (direct,
// redelivered, gossiped or merged on push/pull) waits for the first to
// finish and acts on nothing; a whole delivery after the owners' round
// applies the rest.
func (n *Node) applyEvent(ctx context.Context, ev *invalidation.Event, payload []byte, owners bool) (int, error) {
	// Back from a pause, the cache goes before anything is rebuilt in it:
	// rebuilding entries that the drop then throws away fills them twice.
	n.noticePause()
	c, wait := n.events.claim(ev, payload, owners, n.cache.Clock().Now())
	if c.First {
		now := n.cache.Clock().Now()
		for _, t := range ev.Targets {
			n.lastInvalidation.Store(t.Label, now)
		}
	}
	if c.Token == 0 {
		if wait == nil {
			return 0, nil
		}
		select {
		case <-wait:
			return 0, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	defer n.events.finish(c.Token)
	k, err := invalidation.ApplyScope(ctx, ev, host{n}, c.Scope)
	n.notifyDropped(Dropped{Targets: ev.Targets}) // see OnDropped
	if wait != nil {
		// The owners' round is running here: this delivery is applied
		// once it is done too.
		select {
		case <-wait:
		case <-ctx.Done():
			return k, ctx.Err()
		}
	}
	return k, err
}

// host is the node as the invalidation.Host of the events it applies: its
// workers and the records of the keys it owns.
type host struct{ n *Node }

var _ invalidation.Host = host{}

// Worker implements invalidation.Host.
func (h host) Worker(label string) (*worker.Worker, bool) { return h.n.cache.Worker(label) }

// OwnedRecordKeys implements invalidation.Host with the records index.
// While the records are degraded it returns no keys and no error: the
// in-memory entries, which invalidation.ApplyScope matches too, are then
// the whole truth (every key this node can serve is among them, those
// filled while degraded included).
func (h host) OwnedRecordKeys(label string, match map[string][]string) ([]string, error) {
	n := h.n
	recs, err := n.store.Match(label, match)
	if errors.Is(err, persist.ErrUnavailable) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(recs))
	for _, r := range recs {
		if n.Owner(r.Key) == n.cfg.Name {
			keys = append(keys, r.Key)
		}
	}
	return keys, nil
}

func (n *Node) handleInvalidate(ctx context.Context, payload []byte, owners bool) ([]byte, error) {
	var ev invalidation.Event
	if err := unmarshal(payload, &ev); err != nil || ev.ID == "" {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: fmt.Sprintf("bad event: %v", err)}
	}
	k, err := n.applyEvent(ctx, &ev, payload, owners)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(invalidateResp{Keys: k})
}
