package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/invalidation"
)

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
	lately := n.recentlyDead()
	names := make([]string, 0, len(lately))
	for name := range lately {
		names = append(names, name)
	}
	slices.Sort(names)
	b := invalidation.NewBroadcast(n.cfg.Name, others, names)
	for round, ok := b.Round(); ok; round, ok = b.Round() {
		for _, a := range n.fanout(ctx, r, lately, round, ev, payload) {
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
// still try it (see invalidation.Round).
const recentDeadFor = 10 * time.Second

// recentlyDead returns the members declared dead (not left) within
// recentDeadFor.
func (n *Node) recentlyDead() map[string]*remote {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]*remote)
	for name, m := range n.mu.members {
		if name != n.cfg.Name && m.State == StateDead && m.Peer != "" && time.Since(m.Since) < recentDeadFor {
			out[name] = &remote{n: n, name: name, addr: m.Peer}
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

// fanout sends one round of a broadcast to its members (r's peers, and
// lately's for those declared dead lately) at once and applies it here;
// it returns the answers of this node and of the members of round.To.
// The members declared dead lately are tried for at most twice the probe
// timeout each; fanout returns once they answered or that time passed.
func (n *Node) fanout(ctx context.Context, r *routing, lately map[string]*remote, round invalidation.Round, ev *invalidation.Event, payload []byte) []applied {
	op := opInvalidate
	if round.Owners {
		op = opInvalidateOwners
	}
	var dead []*remote
	for _, name := range round.Lately {
		if p, ok := lately[name]; ok {
			dead = append(dead, p)
		}
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
	out := make([]applied, 1, len(round.To))
	answers := make(chan applied, len(round.To))
	sent := 0
	for _, name := range round.To {
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
	k, err := n.applyEvent(ctx, ev, payload, round.Owners)
	out[0] = applied{n.cfg.Name, k, err}
	for range sent {
		out = append(out, <-answers)
	}
	return out
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
	start := s.t.Redeliver(id, payload, missed, n.cache.Clock().Now())
	s.mu.Unlock()
	if !start {
		return // the redelivery of id that runs takes them
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			t := n.cfg.Clock.NewTimer(redeliverPeriod)
			select {
			case <-n.done:
				t.Stop()
				return
			case <-t.Chan():
			}
			r := n.route.Load()
			s.mu.Lock()
			to, payload, ok := s.t.RedeliveryRound(id, n.cache.Clock().Now(), func(m string) bool {
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
