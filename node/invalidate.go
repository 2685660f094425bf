package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
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
// finished, which the deliveries that must wait for it block on.
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
func (s *eventState) claim(ev *invalidation.Event, payload []byte, owners bool) (c invalidation.Claim, wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c = s.t.Claim(ev, payload, owners, time.Now())
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

// loggedEvent is an event offered on push/pull, as it crosses the wire.
type loggedEvent struct {
	At      int64              `msgpack:"at"`
	Payload msgpack.RawMessage `msgpack:"ev"`
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

type invalidateResp struct {
	Keys int `msgpack:"k"`
}

// broadcast applies ev here and on every live member, in two rounds: the
// keys each member owns first, then, once every owner acknowledged, the
// near-cache copies. A non-owner that dropped its copy fetches the key again
// from its owner, which by then has rebuilt it: with one round a non-owner
// reached before the owner could fetch the old value and keep it.
func (n *Node) broadcast(ctx context.Context, ev *invalidation.Event) (invalidation.Result, error) {
	payload, err := msgpack.Marshal(ev)
	if err != nil {
		return invalidation.Result{}, fmt.Errorf("node: encode event: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, applyTimeout)
		defer cancel()
	}
	r := n.route.Load()
	others := make([]string, 0, len(r.peers))
	for name := range r.peers {
		others = append(others, name)
	}
	slices.Sort(others)
	b := invalidation.NewBroadcast(n.cfg.Name, others)
	dead := n.recentlyDead()
	for round, ok := b.Round(); ok; round, ok = b.Round() {
		for _, a := range n.fanout(ctx, r, round.To, dead, ev, payload, round.Owners) {
			if a.err != nil && a.name != n.cfg.Name {
				if round.Owners {
					n.log.Warn("invalidation (owners' round) not acknowledged", "member", a.name, "event", ev.ID, "err", a.err)
				} else {
					n.log.Warn("invalidation not acknowledged", "member", a.name, "event", ev.ID, "err", a.err)
				}
			}
			b.Answer(a.name, a.keys, a.err)
		}
	}
	var deadNames []string
	n.mu.Lock()
	isolated := n.mu.isolated
	for name, m := range n.mu.members {
		if m.State == StateDead {
			deadNames = append(deadNames, name)
		}
	}
	n.mu.Unlock()
	res, missed, localErr := b.Result(isolated, deadNames)
	if len(missed) > 0 {
		n.redeliver(ev.ID, payload, missed)
	}
	if localErr != nil {
		return res, fmt.Errorf("node: invalidation here: %w", localErr)
	}
	return res, nil
}

// recentDeadFor is how long after a member was declared dead broadcasts
// still try it (see fanout).
const recentDeadFor = 10 * time.Second

// recentlyDead returns the members declared dead (not left) within
// recentDeadFor.
func (n *Node) recentlyDead() []*remote {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*remote
	for name, m := range n.mu.members {
		if name != n.cfg.Name && m.State == StateDead && m.Peer != "" && time.Since(m.Since) < recentDeadFor {
			out = append(out, &remote{n: n, name: name, addr: m.Peer})
		}
	}
	return out
}

// applied is one member's answer to a round of a broadcast.
type applied struct {
	name string
	keys int
	err  error
}

// fanout sends one round of a broadcast to the members to of r at once
// and applies it here (this node is among to); it returns every answer.
//
// The members in dead were declared dead lately: they get the round too,
// best effort, each for at most twice the probe timeout, and their answers
// count for nothing. A member can be declared dead while it is alive and
// serving (a stall just long enough, a suspicion it refuted too late), and
// until it learns so it must not keep serving what this event invalidates.
func (n *Node) fanout(ctx context.Context, r *routing, to []string, dead []*remote, ev *invalidation.Event, payload []byte, owners bool) []applied {
	op := opInvalidate
	if owners {
		op = opInvalidateOwners
	}
	tried := make(chan struct{}, len(dead))
	for _, p := range dead {
		go func() {
			dctx, cancel := context.WithTimeout(ctx, 2*n.cfg.Membership.ProbeTimeout)
			defer cancel()
			if _, err := n.call(dctx, p, op, payload); err == nil {
				n.log.Debug("invalidation reached a member held for dead", "member", p.name, "event", ev.ID)
			}
			tried <- struct{}{}
		}()
	}
	defer func() {
		for range dead {
			<-tried
		}
	}()
	out := make([]applied, 1, len(to))
	answers := make(chan applied, len(to))
	sent := 0
	for _, name := range to {
		p, ok := r.peers[name]
		if !ok {
			continue // this node
		}
		sent++
		go func() {
			resp, err := n.call(ctx, p, op, payload)
			var ir invalidateResp
			if err == nil {
				err = unmarshal(resp, &ir)
			}
			answers <- applied{p.name, ir.Keys, err}
		}()
	}
	k, err := n.applyEvent(ctx, ev, payload, owners)
	out[0] = applied{n.cfg.Name, k, err}
	for range sent {
		out = append(out, <-answers)
	}
	return out
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
	c, wait := n.events.claim(ev, payload, owners)
	if c.First {
		now := time.Now()
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
	k, err := invalidation.ApplyScope(ctx, ev, n, c.Scope)
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

// OwnedRecordKeys implements invalidation.Host with the records index.
// While the records are degraded it returns no keys and no error: the
// in-memory entries, which invalidation.ApplyScope matches too, are then
// the whole truth (every key this node can serve is among them, those
// filled while degraded included).
func (n *Node) OwnedRecordKeys(label string, match map[string][]string) ([]string, error) {
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

// Worker implements invalidation.Host.
func (n *Node) Worker(label string) (*worker.Worker, bool) { return n.cache.Worker(label) }

var _ invalidation.Host = (*Node)(nil)

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

// redeliver keeps sending an event to the members that missed it, until
// they acknowledge, leave the ring, or the Tracker's RedeliverFor passes;
// small events are also handed to gossip.
func (n *Node) redeliver(id string, payload []byte, missed []string) {
	if len(payload) <= gossipMaxBytes && n.bcast != nil {
		n.bcast.QueueBroadcast(eventBroadcast{id: id, msg: payload})
	}
	s := &n.events
	s.mu.Lock()
	start := s.t.Redeliver(id, payload, missed, time.Now())
	s.mu.Unlock()
	if !start {
		return // the redelivery of id that runs takes them
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			t := time.NewTimer(redeliverPeriod)
			select {
			case <-n.done:
				t.Stop()
				return
			case <-t.C:
			}
			r := n.route.Load()
			s.mu.Lock()
			to, payload, ok := s.t.RedeliveryRound(id, time.Now(), func(m string) bool {
				_, alive := r.peers[m]
				return alive // one that left or died drops its near cache when it comes back
			})
			s.mu.Unlock()
			if !ok {
				return
			}
			for _, name := range to {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := n.call(ctx, r.peers[name], opInvalidate, payload)
				cancel()
				if err == nil {
					s.mu.Lock()
					s.t.Redelivered(id, name)
					s.mu.Unlock()
				}
			}
		}
	}()
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
func (b eventBroadcast) Finished()       {}

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
		b, ok := s.t.NextBatch(time.Now())
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
			now := time.Now()
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
			if _, err := invalidation.ApplyScope(ctx, m.ev, n, m.scope); err != nil {
				n.log.Warn("gossiped invalidation failed", "events", b.Events, "err", err)
			}
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
	offer := s.t.Offer(time.Now())
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

// outboxLoop applies delayed invalidations when they are due, also those
// queued before a restart, and removes each only after it was applied.
func (n *Node) outboxLoop() {
	defer n.wg.Done()
	for {
		t := time.NewTimer(outboxPoll)
		select {
		case <-n.done:
			t.Stop()
			return
		case <-n.outboxWake:
			t.Stop()
		case <-t.C:
		}
		if !n.Ready() {
			continue
		}
		items, err := n.store.DueItems(n.cache.Clock().Now(), 64)
		if err != nil {
			// Degraded: the items wait on disk for the reopen (the store
			// logged the fault).
			if !errors.Is(err, errClosedStore) && !errors.Is(err, persist.ErrUnavailable) {
				n.log.Error("outbox", "err", err)
			}
			continue
		}
		for _, it := range items {
			var ev invalidation.Event
			if err := unmarshal(it.Payload, &ev); err != nil {
				n.log.Error("outbox: dropping an undecodable item", "id", it.ID, "err", err)
				n.ack(it)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
			res, err := n.broadcast(ctx, &ev)
			cancel()
			if err != nil {
				n.log.Warn("delayed invalidation failed, will retry", "id", it.ID, "err", err)
				continue
			}
			n.log.Debug("delayed invalidation applied", "id", it.ID, "keys", res.Keys, "nodes", res.Nodes)
			if err := n.ack(it); err != nil {
				n.log.Error("outbox ack", "id", it.ID, "err", err)
			}
		}
	}
}

func (n *Node) wakeOutbox() {
	select {
	case n.outboxWake <- struct{}{}:
	default:
	}
}

type enqueueReq struct {
	Due     int64  `msgpack:"d"`
	Payload []byte `msgpack:"p"`
}

// handOverOutbox gives the delayed invalidations this node still holds to
// another member before it leaves, so that they are applied at their due
// time although this node is gone. An item is acknowledged here only after
// the other member stored it durably; items no member took stay in the
// outbox and are applied when this node starts again.
func (n *Node) handOverOutbox() {
	items, err := n.store.Pending()
	if err != nil || len(items) == 0 {
		return
	}
	r := n.route.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, it := range items {
		body, err := msgpack.Marshal(enqueueReq{Due: it.Due.UnixNano(), Payload: it.Payload})
		if err != nil {
			continue
		}
		for _, p := range r.peers {
			if _, err := n.call(ctx, p, opEnqueue, body); err == nil {
				n.ack(it)
				n.log.Info("delayed invalidation handed over", "id", it.ID, "to", p.name)
				break
			}
		}
	}
}

func (n *Node) handleEnqueue(payload []byte) ([]byte, error) {
	var req enqueueReq
	if err := unmarshal(payload, &req); err != nil {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: err.Error()}
	}
	if err := n.authorizeEnqueue(&req); err != nil {
		return nil, err
	}
	var ev invalidation.Event
	if err := unmarshal(req.Payload, &ev); err != nil || ev.ID == "" {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: "bad event"}
	}
	if _, err := n.enqueue(time.Unix(0, req.Due), req.Payload); err != nil {
		return nil, err
	}
	n.wakeOutbox()
	return nil, nil
}
