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

// Bounds of the invalidation machinery.
const (
	seenCap         = 8192             // event IDs remembered for de-duplication
	eventLogCap     = 256              // recent events exchanged on push/pull
	eventLogAge     = 2 * time.Minute  // and how long they stay there
	eventLogBytes   = 256 << 10        // at most this much state per push/pull
	gossipMaxBytes  = 1200             // larger events are not gossiped
	redeliverFor    = 30 * time.Second // how long a missed member is retried
	redeliverPeriod = 200 * time.Millisecond
	outboxPoll      = 100 * time.Millisecond
	applyTimeout    = 30 * time.Second
)

// events is the node's invalidation state: which events it applied (so
// that each is applied once, whatever path brings it), the recent events
// it offers to members on push/pull (so that a member cut off during an
// invalidation gets it when it comes back), and the gossip queue.
type eventState struct {
	mu sync.Mutex
	// seen has, per event ID, a channel closed when the event was applied
	// here; ownersKey(ID) has the same for the owners' round of a
	// broadcast (the keys this node owns). Guarded by mu.
	seen  map[string]chan struct{}
	order []string      // FIFO of seen IDs; guarded by mu
	log   []loggedEvent // recent events, oldest first; guarded by mu
	// bg holds the events that came by gossip or push/pull and wait for
	// the background applier, which applies all that are waiting as one
	// (a node back from a partition gets many at once and must rebuild
	// each key once, not once per event); bgRunning says the applier
	// runs. Guarded by mu.
	bg        []queuedEvent
	bgRunning bool
}

type queuedEvent struct {
	ev      invalidation.Event
	payload []byte
}

// ownersKey is the key in eventState.seen of the owners' round of event id.
func ownersKey(id string) string { return "owners/" + id }

type loggedEvent struct {
	At      int64              `msgpack:"at"`
	Payload msgpack.RawMessage `msgpack:"ev"`
	id      string
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
	var res invalidation.Result
	failed := make(map[string]bool)
	dead := n.recentlyDead()
	owners := n.fanout(ctx, r, dead, ev, payload, true)
	for _, a := range owners {
		res.Keys += a.keys
		if a.err != nil && a.name != n.cfg.Name {
			n.log.Warn("invalidation (owners' round) not acknowledged", "member", a.name, "event", ev.ID, "err", a.err)
			failed[a.name] = true
		}
	}
	var missed []*remote
	var localErr error
	for _, a := range n.fanout(ctx, r, dead, ev, payload, false) {
		switch {
		case a.name == n.cfg.Name:
			localErr = errors.Join(owners[0].err, a.err)
			if localErr == nil {
				res.Nodes++
			}
		case a.err != nil:
			n.log.Warn("invalidation not acknowledged", "member", a.name, "event", ev.ID, "err", a.err)
			failed[a.name] = true
			missed = append(missed, r.peers[a.name])
		case !failed[a.name]:
			res.Nodes++
		}
		res.Keys += a.keys
	}
	// A member that missed the owners' round but took the second one
	// applied the whole event, but maybe after another member let a
	// reader fetch its old value: it is missing too.
	for name := range failed {
		res.Missing = append(res.Missing, name)
	}
	slices.Sort(res.Missing)
	if len(missed) > 0 {
		n.redeliver(ev.ID, payload, missed)
	}
	// On the minority side of a partition the members held for dead may
	// well be alive and serving: the invalidation did not reach them, and
	// the caller must hear it (they get the event on push/pull at the heal).
	n.mu.Lock()
	if n.mu.isolated {
		for name, m := range n.mu.members {
			if m.State == StateDead {
				res.Missing = append(res.Missing, name)
			}
		}
	}
	n.mu.Unlock()
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

// fanout sends one round of a broadcast to every member of r at once and
// applies it here; it returns every answer, this node's first.
//
// The members in dead were declared dead lately: they get the round too,
// best effort, each for at most twice the probe timeout, and their answers
// count for nothing. A member can be declared dead while it is alive and
// serving (a stall just long enough, a suspicion it refuted too late), and
// until it learns so it must not keep serving what this event invalidates.
func (n *Node) fanout(ctx context.Context, r *routing, dead []*remote, ev *invalidation.Event, payload []byte, owners bool) []applied {
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
	out := make([]applied, 1, len(r.peers)+1)
	answers := make(chan applied, len(r.peers))
	for _, p := range r.peers {
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
	for range len(r.peers) {
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
	scope, done, wait := n.claimEvent(ev, payload, owners)
	if done == nil {
		select {
		case <-wait:
			return 0, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	defer close(done)
	k, err := invalidation.ApplyScope(ctx, ev, n, scope)
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

// claimEvent marks ev (only its owners' part, with owners) as being
// applied here, and returns the scope left to apply and the channel to
// close when it is applied. done is nil when nothing is left: wait is then
// closed when the delivery that claimed it is done. When the owners' part
// is being applied by another delivery, wait is that delivery's channel.
func (n *Node) claimEvent(ev *invalidation.Event, payload []byte, owners bool) (scope worker.Scope, done, wait chan struct{}) {
	s := &n.events
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, dup := s.seen[ev.ID]; dup {
		return 0, nil, d
	}
	ownKey := ownersKey(ev.ID)
	ownersDone, ownersSeen := s.seen[ownKey]
	if owners && ownersSeen {
		return 0, nil, ownersDone
	}
	done = make(chan struct{})
	scope = worker.ScopeAll
	switch {
	case owners:
		scope = worker.ScopeOwned
		s.remember(ownKey, done)
	case ownersSeen:
		scope, wait = worker.ScopeNear, ownersDone
		s.remember(ev.ID, done)
	default:
		s.remember(ownKey, done)
		s.remember(ev.ID, done)
	}
	if !ownersSeen {
		// The first delivery of this event here.
		now := time.Now()
		for _, t := range ev.Targets {
			n.lastInvalidation.Store(t.Label, now)
		}
	}
	if !owners {
		// Offered to the members on push/pull only now: an event still in
		// its owners' round would make them drop their near-cache copies
		// before every owner rebuilt its keys.
		s.log = append(s.log, loggedEvent{At: time.Now().UnixNano(), Payload: payload, id: ev.ID})
		if len(s.log) > eventLogCap {
			s.log = s.log[1:]
		}
	}
	return scope, done, wait
}

// remember records key in seen; s.mu is held.
func (s *eventState) remember(key string, done chan struct{}) {
	s.seen[key] = done
	s.order = append(s.order, key)
	if len(s.order) > seenCap {
		delete(s.seen, s.order[0])
		s.order = s.order[1:]
	}
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
// they acknowledge, leave the ring, or redeliverFor passes; small events are
// also handed to gossip.
func (n *Node) redeliver(id string, payload []byte, missed []*remote) {
	if len(payload) <= gossipMaxBytes && n.bcast != nil {
		n.bcast.QueueBroadcast(eventBroadcast{id: id, msg: payload})
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		deadline := time.Now().Add(redeliverFor)
		for len(missed) > 0 && time.Now().Before(deadline) {
			t := time.NewTimer(redeliverPeriod)
			select {
			case <-n.done:
				t.Stop()
				return
			case <-t.C:
			}
			r := n.route.Load()
			left := missed[:0]
			for _, p := range missed {
				cur, alive := r.peers[p.name]
				if !alive {
					continue // it left or died: it drops its near cache when it comes back
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := n.call(ctx, cur, opInvalidate, payload)
				cancel()
				if err != nil {
					left = append(left, cur)
				}
			}
			missed = left
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
	evs := make([]queuedEvent, 0, len(payloads))
	for _, payload := range payloads {
		var ev invalidation.Event
		if err := unmarshal(payload, &ev); err != nil || ev.ID == "" {
			n.log.Warn("dropping a malformed gossiped event", "err", err)
			continue
		}
		evs = append(evs, queuedEvent{ev: ev, payload: payload})
	}
	s := &n.events
	s.mu.Lock()
	defer s.mu.Unlock()
	queued := len(s.bg)
next:
	for _, q := range evs {
		if _, dup := s.seen[q.ev.ID]; dup {
			continue
		}
		for _, o := range s.bg {
			if o.ev.ID == q.ev.ID {
				continue next
			}
		}
		s.bg = append(s.bg, q)
	}
	if s.bgRunning || len(s.bg) == queued {
		return
	}
	n.mu.Lock()
	closed := n.mu.closed
	if !closed {
		n.wg.Add(1)
	}
	n.mu.Unlock()
	if closed {
		s.bg = nil
		return
	}
	s.bgRunning = true
	go n.backgroundApplier()
}

// backgroundApplier applies the queued events until none is left: all
// those waiting at once, merged into one event per scope, so that a key
// that several of them name is rebuilt once.
func (n *Node) backgroundApplier() {
	defer n.wg.Done()
	s := &n.events
	for {
		s.mu.Lock()
		batch := s.bg
		s.bg = nil
		if len(batch) == 0 {
			s.bgRunning = false
		}
		s.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		n.noticePause() // as in applyEvent
		var all, near invalidation.Event
		var dones, waits []chan struct{}
		for _, q := range batch {
			scope, done, wait := n.claimEvent(&q.ev, q.payload, false)
			switch {
			case done == nil:
				continue // applied meanwhile, directly
			case scope == worker.ScopeNear:
				near.Targets = append(near.Targets, q.ev.Targets...)
				waits = append(waits, wait)
			default:
				all.Targets = append(all.Targets, q.ev.Targets...)
			}
			dones = append(dones, done)
		}
		ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
		for _, m := range []struct {
			ev    *invalidation.Event
			scope worker.Scope
		}{{&all, worker.ScopeAll}, {&near, worker.ScopeNear}} {
			if len(m.ev.Targets) == 0 {
				continue
			}
			if _, err := invalidation.ApplyScope(ctx, m.ev, n, m.scope); err != nil {
				n.log.Warn("gossiped invalidation failed", "events", len(batch), "err", err)
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
		for _, d := range dones {
			close(d)
		}
	}
}

// localState returns the recent events for a push/pull exchange.
func (n *Node) localState() []byte {
	s := &n.events
	cutoff := time.Now().Add(-eventLogAge).UnixNano()
	s.mu.Lock()
	var out []loggedEvent
	size := 0
	for i := len(s.log) - 1; i >= 0 && size < eventLogBytes; i-- {
		if s.log[i].At < cutoff {
			break
		}
		out = append(out, s.log[i])
		size += len(s.log[i].Payload)
	}
	s.mu.Unlock()
	if len(out) == 0 {
		return nil
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
