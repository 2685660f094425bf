package node

import (
	"context"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/worker"
)

// loggedEvent is an event offered on push/pull, as it crosses the wire.
type loggedEvent struct {
	At      int64              `msgpack:"at"`
	Payload msgpack.RawMessage `msgpack:"ev"`
}

// eventBroadcast is an event in memberlist's gossip queue.
type eventBroadcast struct {
	id  string
	msg []byte
}

func (b eventBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(eventBroadcast)
	return ok && o.id == b.id
}

func (b eventBroadcast) Message() []byte { return b.msg }

func (b eventBroadcast) Finished() {}

// applyBackground applies events that arrived by gossip or push/pull: it
// queues them for the background applier, which applies every queued event
// together. The events of one push/pull are queued at once, so that they
// are applied as one.
func (n *Node) applyBackground(payloads ...[]byte) {
	evs := make([]invalidation.Queued, 0, len(payloads))
	for _, payload := range payloads {
		var ev invalidation.Event
		if err := unmarshal(payload, &ev); err != nil || ev.ID == "" {
			n.log.Warn("dropping a malformed gossiped event", "err", err)
			continue
		}
		evs = append(evs, invalidation.Queued{Event: ev, Payload: payload})
	}
	s := &n.events
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.t.Queue(evs) {
		return
	}
	n.mu.Lock()
	closed := n.mu.closed
	if !closed {
		n.wg.Add(1)
	}
	n.mu.Unlock()
	if closed {
		s.t.StopApplier()
		return
	}
	go n.backgroundApplier()
}

// backgroundApplier applies the queued events until none is left: all
// those waiting at once, merged by the Tracker into one event per scope,
// so that a key that several of them name is rebuilt once.
func (n *Node) backgroundApplier() {
	defer n.wg.Done()
	s := &n.events
	for {
		n.noticePause() // as in applyEvent
		s.mu.Lock()
		b, ok := s.t.NextBatch(n.cache.Clock().Now())
		waits := make([]chan struct{}, 0, len(b.Waits))
		for _, w := range b.Waits {
			if c := s.waitLocked(w); c != nil {
				waits = append(waits, c)
			}
		}
		for _, tok := range b.Tokens {
			s.done[tok] = make(chan struct{})
		}
		s.mu.Unlock()
		if !ok {
			return
		}
		if len(b.All.Targets) > 0 {
			// The first delivery of these events here (those of b.Near
			// had their owners' round here).
			now := n.cache.Clock().Now()
			for _, t := range b.All.Targets {
				n.lastInvalidation.Store(t.Label, now)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
		for _, m := range []struct {
			ev    *invalidation.Event
			scope worker.Scope
		}{{&b.All, worker.ScopeAll}, {&b.Near, worker.ScopeNear}} {
			if len(m.ev.Targets) == 0 {
				continue
			}
			if _, err := invalidation.ApplyScope(ctx, m.ev, host{n}, m.scope); err != nil {
				n.log.Warn("gossiped invalidation failed", "events", b.Events, "err", err)
			}
			n.notifyDropped(Dropped{Targets: m.ev.Targets}) // see OnDropped
		}
		for _, w := range waits {
			select {
			case <-w:
			case <-ctx.Done():
			}
		}
		cancel()
		n.events.finish(b.Tokens...)
	}
}

// localState returns the recent events for a push/pull exchange.
func (n *Node) localState() []byte {
	s := &n.events
	s.mu.Lock()
	offer := s.t.Offer(n.cache.Clock().Now())
	s.mu.Unlock()
	if len(offer) == 0 {
		return nil
	}
	out := make([]loggedEvent, len(offer))
	for i, e := range offer {
		out[i] = loggedEvent{At: e.At.UnixNano(), Payload: e.Payload}
	}
	b, err := msgpack.Marshal(out)
	if err != nil {
		return nil
	}
	return b
}

// mergeState applies the events of a member's push/pull state that this
// node has not applied: the way a member that was cut off learns what it
// missed.
func (n *Node) mergeState(buf []byte) {
	if len(buf) == 0 {
		return
	}
	var in []loggedEvent
	if err := unmarshal(buf, &in); err != nil {
		n.log.Warn("bad push/pull state", "err", err)
		return
	}
	payloads := make([][]byte, len(in))
	for i, e := range in {
		payloads[i] = e.Payload
	}
	n.applyBackground(payloads...)
}
