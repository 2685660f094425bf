package node

import (
	"context"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/worker"
)

func (n *Node) handleHandoff(payload []byte) ([]byte, error) {
	var req handoffReq
	if err := unmarshal(payload, &req); err != nil {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: err.Error()}
	}
	if err := n.authorizeHandoff(&req); err != nil {
		return nil, err
	}
	kept := 0
	now := n.cache.Clock().Now()
	for i := range req.Entries {
		e := req.Entries[i].entry()
		w, ok := n.cache.Worker(e.Label)
		if !ok {
			continue
		}
		e.Owner = n.cfg.Name
		req.Times[i].place(e, now) // authorizeHandoff checked there is one per entry
		// The entry's age was measured before the request left, so it
		// was built up to handoffTimeout earlier than its CreatedAt here.
		if t, ok := n.lastInvalidation.Load(e.Label); ok && e.CreatedAt.Add(-handoffTimeout).Before(t.(time.Time)) {
			// An invalidation of this worker was applied here after the
			// entry was built: it may be one of the values it invalidated.
			continue
		}
		if w.Put(e) {
			kept++
			n.record(e, w.Policy())
		}
	}
	n.log.Debug("handoff received", "from", req.From, "entries", len(req.Entries), "kept", kept)
	return msgpack.Marshal(handoffResp{Kept: kept})
}

// handoffTimeout bounds the handoff of a leaving node, from the moment it
// measures the entries' ages to the last answer.
const handoffTimeout = 5 * time.Second

// handoff sends this node's hottest owned entries to the members that own
// them once this node is gone, so that a rolling restart does not refill
// every key.
func (n *Node) handoff() {
	if n.cfg.HandoffEntries < 0 {
		return
	}
	r := n.route.Load()
	if r == nil || r.ring.Len() < 2 {
		return
	}
	next, err := r.ring.Without(n.cfg.Name)
	if err != nil {
		return
	}
	batches := make(map[string][]*worker.Entry)
	count, bytes := 0, int64(0)
	now := n.cache.Clock().Now()
	// The store's iteration in eviction order holds the store's policy
	// lock, which a worker holding its own lock may be waiting for (an
	// invalidation removing an entry): take the candidates first, and ask
	// the workers about them after.
	var hot []*worker.Entry
	for e := range n.cache.Hottest() {
		if count >= n.cfg.HandoffEntries || bytes >= n.cfg.HandoffBytes {
			break
		}
		if e.Owner != n.cfg.Name || e.Expired(now) {
			continue
		}
		hot = append(hot, e)
		count++
		bytes += int64(len(e.Value))
	}
	for _, e := range hot {
		if w, ok := n.cache.Worker(e.Label); !ok || w.Busy(e.Key) {
			// Being filled or rebuilt after an invalidation: the entry in
			// place may be the invalidated value. Its new owner fills it.
			continue
		}
		owner, ok := next.Owner(e.Key)
		if !ok {
			continue
		}
		batches[owner] = append(batches[owner], e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), handoffTimeout)
	defer cancel()
	for owner, entries := range batches {
		p, ok := r.peers[owner]
		if !ok {
			continue
		}
		sendHandoff(ctx, n, p, entries)
	}
}

// sendHandoff sends entries in chunks that stay well under the frame limit.
// The entries' durations are measured as each chunk is encoded, within
// handoffTimeout of its answer.
func sendHandoff(ctx context.Context, n *Node, p *remote, entries []*worker.Entry) {
	const chunkBytes = 4 << 20
	for len(entries) > 0 {
		size, i := 0, 0
		for i < len(entries) && (i == 0 || size+len(entries[i].Value) < chunkBytes) {
			size += len(entries[i].Value) + len(entries[i].Key) + 64
			i++
		}
		req := handoffReq{From: n.cfg.Name, Entries: make([]wireEntry, i), Times: make([]handoffTimes, i)}
		now := n.cache.Clock().Now()
		for j, e := range entries[:i] {
			req.Entries[j] = toWire(e, worker.Hit)
			req.Times[j] = timesOf(e, now)
		}
		body, err := msgpack.Marshal(req)
		entries = entries[i:]
		if err != nil {
			n.log.Error("handoff encode", "err", err)
			continue
		}
		if _, err := n.call(ctx, p, opHandoff, body); err != nil {
			n.log.Warn("handoff failed", "to", p.name, "err", err)
			return
		}
	}
}
