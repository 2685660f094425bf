package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachenode/cachenode/node/peer"
)

// Codes of the peer requests this node refuses although the sender proved
// the cluster's key: authenticated is not authorised. Each is counted (see
// PeerRefusals).
const (
	// codeNotMember: a handoff whose sender is not a member this node
	// holds alive.
	codeNotMember = "not_member"
	// codeWrongOwner: a handed-off entry whose Owner is not its sender.
	codeWrongOwner = "wrong_owner"
	// codeNotOwned: a handed-off entry of a key this node does not own,
	// with the sender in its ring or without it.
	codeNotOwned = "not_owned"
	// codeExpiresTooFar: a handed-off entry available beyond now plus its
	// worker's expires.
	codeExpiresTooFar = "expires_too_far"
	// codeItemTooLarge: a handed-over delayed invalidation above
	// PeerLimits.MaxEnqueueItem.
	codeItemTooLarge = "item_too_large"
	// codeOutboxFull: a handed-over delayed invalidation that would bring
	// the outbox above PeerLimits.MaxEnqueueBytes.
	codeOutboxFull = "outbox_full"
	// codeCountdownTooLong: a handed-over delayed invalidation due beyond
	// now plus PeerLimits.MaxEnqueueCountdown.
	codeCountdownTooLong = "countdown_too_long"
)

// refusals counts the refused peer requests by operation and code.
type refusals struct {
	m sync.Map // refusalKey → *atomic.Uint64
}

type refusalKey struct{ op, code string }

// refuse counts a refusal and returns its error frame.
func (n *Node) refuse(op byte, code, format string, args ...any) error {
	k := refusalKey{opNames[op], code}
	c, _ := n.refused.m.LoadOrStore(k, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
	msg := fmt.Sprintf(format, args...)
	n.log.Debug("peer request refused", "op", k.op, "code", code, "reason", msg)
	return &peer.RemoteError{Code: code, Message: msg}
}

// PeerRefusal is the count of one kind of peer request this node refused.
type PeerRefusal struct {
	Op, Code string
	Count    uint64
}

// PeerRefusals returns how many peer requests this node refused since it
// started, by operation and code.
func (n *Node) PeerRefusals() []PeerRefusal {
	var out []PeerRefusal
	n.refused.m.Range(func(k, v any) bool {
		rk := k.(refusalKey)
		out = append(out, PeerRefusal{Op: rk.op, Code: rk.code, Count: v.(*atomic.Uint64).Load()})
		return true
	})
	return out
}

// PeerServerStats returns the counters of the node's peer port (zero
// before Start).
func (n *Node) PeerServerStats() peer.ServerStats {
	if n.server == nil {
		return peer.ServerStats{}
	}
	return n.server.Stats()
}

// authorizeHandoff checks a handoff as a whole before any entry is kept:
// it comes from a member this node holds alive, and each entry is of a
// registered worker, owned by its sender, of a key this node owns (in its
// ring, or in its ring without the leaving sender), with its age and
// lifetimes, and available no longer than its worker's expires. A handoff that fails any check is
// refused whole: a member that sends one is broken or not what it claims.
func (n *Node) authorizeHandoff(req *handoffReq) error {
	n.mu.Lock()
	m := n.mu.members[req.From]
	alive := m != nil && m.State == StateAlive && req.From != n.cfg.Name
	n.mu.Unlock()
	if !alive {
		return n.refuse(opHandoff, codeNotMember, "handoff from %q, not a member this node holds alive", req.From)
	}
	r := n.route.Load()
	if r == nil {
		return n.refuse(opHandoff, codeNotOwned, "this node has no ring yet")
	}
	without := r.ring
	if r.ring.Has(req.From) {
		if w, err := r.ring.Without(req.From); err == nil {
			without = w
		}
	}
	for i := range req.Entries {
		e := &req.Entries[i]
		w, ok := n.cache.Worker(e.Label)
		if !ok {
			return n.refuse(opHandoff, codeUnknownWorker, "entry %q: no worker %q here", e.Key, e.Label)
		}
		if e.Owner != req.From {
			return n.refuse(opHandoff, codeWrongOwner, "entry %q: owner %q is not the sender %q", e.Key, e.Owner, req.From)
		}
		if !n.ownsIn(r.ring, e.Key) && !n.ownsIn(without, e.Key) {
			return n.refuse(opHandoff, codeNotOwned, "entry %q: this node does not own the key", e.Key)
		}
		if i >= len(req.Times) {
			return n.refuse(opHandoff, codeBadRequest, "entry %q: no age and lifetime (a member of an older version)", e.Key)
		}
		// A read over HTTP may ask up to the worker's max_expires.
		expires := max(w.Policy().Expires, w.Config().MaxExpires)
		if left := time.Duration(req.Times[i].Available); left > expires {
			return n.refuse(opHandoff, codeExpiresTooFar, "entry %q: available for %v more, beyond its worker's expires (%v)",
				e.Key, left, expires)
		}
	}
	return nil
}

func (n *Node) ownsIn(r interface{ Owner(string) (string, bool) }, key string) bool {
	o, ok := r.Owner(key)
	return ok && o == n.cfg.Name
}

// authorizeEnqueue checks a delayed invalidation handed over by a leaving
// member against PeerLimits before it is stored.
func (n *Node) authorizeEnqueue(req *enqueueReq) error {
	lim := n.cfg.PeerLimits
	if len(req.Payload) > lim.MaxEnqueueItem {
		return n.refuse(opEnqueue, codeItemTooLarge, "item of %d bytes, the limit is %d", len(req.Payload), lim.MaxEnqueueItem)
	}
	now := n.cache.Clock().Now()
	if due := time.Unix(0, req.Due); due.After(now.Add(lim.MaxEnqueueCountdown)) {
		return n.refuse(opEnqueue, codeCountdownTooLong, "due at %v, beyond now + %v", due.UTC(), lim.MaxEnqueueCountdown)
	}
	if held := n.outbox.bytes.Load(); held+int64(len(req.Payload)) > lim.MaxEnqueueBytes {
		return n.refuse(opEnqueue, codeOutboxFull, "the outbox holds %d bytes, the limit is %d", held, lim.MaxEnqueueBytes)
	}
	return nil
}
