package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/worker"
)

// remote is another member, as a worker.Peer.
type remote struct {
	n    *Node
	name string
	addr string
}

var _ worker.Peer = (*remote)(nil)

func (p *remote) Name() string { return p.name }

// handlePeer answers the peer transport's requests.
func (n *Node) handlePeer(ctx context.Context, op byte, payload []byte) ([]byte, error) {
	switch op {
	case opFetch, opFetchFinal:
		return n.handleFetch(ctx, payload, op == opFetchFinal)
	case opHandoff:
		return n.handleHandoff(payload)
	case opInvalidate, opInvalidateOwners:
		return n.handleInvalidate(ctx, payload, op == opInvalidateOwners)
	case opLeaving:
		n.markLeaving(string(payload))
		return nil, nil
	case opEnqueue:
		return n.handleEnqueue(payload)
	}
	return nil, &peer.RemoteError{Code: codeBadRequest, Message: fmt.Sprintf("unknown op %d", op)}
}

// handleFetch answers a member that asks this node, as the owner of a key,
// for its entry. When this node's ring gives the key to another member (the
// rings disagree for a moment around a membership change), the request is
// forwarded to that member once, as final, rather than filled here: a fill
// here would be a second fill of the key for the cluster, kept by a node
// that does not own it.
func (n *Node) handleFetch(ctx context.Context, payload []byte, final bool) ([]byte, error) {
	var req fetchReq
	if err := unmarshal(payload, &req); err != nil {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: err.Error()}
	}
	w, ok := n.cache.Worker(req.Label)
	if !ok {
		return nil, &peer.RemoteError{Code: codeUnknownWorker, Message: req.Label}
	}
	// The same bounds as a read over HTTP: a member's fetch must not make
	// this node fill, record or hold what a client could not ask for.
	if err := n.cfg.Limits.Check(req.Args); err != nil {
		return nil, &peer.RemoteError{Code: limitCode(err), Message: err.Error()}
	}
	n.noticePause()
	if !final {
		if resp, done, err := n.forwardFetch(ctx, req.Key, payload); done {
			return resp, err
		}
	}
	// Answer as the owner whatever our ring says: a forwarded request is
	// never forwarded again.
	e, st, err := w.GetOwned(ctx, req.Args, req.Ov.settings())
	if err != nil {
		var busy *worker.OriginBusyError
		switch {
		case errors.As(err, &busy):
			return nil, &peer.RemoteError{Code: codeOriginBusy, Message: strconv.FormatInt(busy.RetryAfter.Milliseconds(), 10)}
		case errors.Is(err, worker.ErrFill):
			re := &peer.RemoteError{Code: codeFill, Message: err.Error()}
			if errors.Is(err, worker.ErrFillTimeout) {
				re.Detail = detailTimeout
			}
			return nil, re
		case errors.Is(err, worker.ErrBadArgs), errors.Is(err, worker.ErrConfig):
			return nil, &peer.RemoteError{Code: codeBadRequest, Message: err.Error()}
		}
		return nil, err
	}
	we := toWire(e, st)
	we.Args = nil // the caller has them
	return msgpack.Marshal(&we)
}

// limitCode is the peer error code of an error of worker.Limits.Check.
func limitCode(err error) string {
	if errors.Is(err, worker.ErrTooManyArgs) {
		return codeTooManyArgs
	}
	if errors.Is(err, worker.ErrArgsTooLarge) {
		return codeArgsTooLarge
	}
	return codeBadRequest
}

// forwardFetch passes a fetch of key to the member that owns it in this
// node's ring, if that is not this node, and returns its answer; done is
// false when this node should answer itself: it owns the key, or the owner
// lacks the worker. An owner that cannot be reached is an error: the
// asker falls back to computing the value without keeping it.
func (n *Node) forwardFetch(ctx context.Context, key string, payload []byte) (resp []byte, done bool, err error) {
	p, elsewhere := n.PickPeer(key)
	if !elsewhere {
		return nil, false, nil
	}
	owner := p.(*remote)
	resp, err = n.call(ctx, owner, opFetchFinal, payload)
	var re *peer.RemoteError
	switch {
	case err == nil:
		return resp, true, nil
	case errors.As(err, &re) && re.Code == codeUnknownWorker:
		return nil, false, nil
	case errors.As(err, &re):
		return nil, true, re
	}
	return nil, true, fmt.Errorf("node: forwarding to the owner %s: %w", owner.name, err)
}

func (n *Node) handleHandoff(payload []byte) ([]byte, error) {
	var req handoffReq
	if err := unmarshal(payload, &req); err != nil {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: err.Error()}
	}
	if err := n.authorizeHandoff(&req); err != nil {
		return nil, err
	}
	kept := 0
	for i := range req.Entries {
		e := req.Entries[i].entry()
		w, ok := n.cache.Worker(e.Label)
		if !ok {
			continue
		}
		e.Owner = n.cfg.Name
		if t, ok := n.lastInvalidation.Load(e.Label); ok && e.CreatedAt.Before(t.(time.Time)) {
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
	batches := make(map[string][]wireEntry)
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
		batches[owner] = append(batches[owner], toWire(e, worker.Hit))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
func sendHandoff(ctx context.Context, n *Node, p *remote, entries []wireEntry) {
	const chunkBytes = 4 << 20
	for len(entries) > 0 {
		size, i := 0, 0
		for i < len(entries) && (i == 0 || size+len(entries[i].Value) < chunkBytes) {
			size += len(entries[i].Value) + len(entries[i].Key) + 64
			i++
		}
		body, err := msgpack.Marshal(handoffReq{From: n.cfg.Name, Entries: entries[:i]})
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

var opNames = map[byte]string{opFetch: "fetch", opHandoff: "handoff", opInvalidate: "invalidate", opLeaving: "leaving", opEnqueue: "enqueue", opInvalidateOwners: "invalidate-owners", opFetchFinal: "fetch-final"}

// markLeaving records that a member announced a graceful leave, so that its
// departure is recorded as "left", not "dead".
func (n *Node) markLeaving(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m, ok := n.mu.members[name]; ok {
		m.leaving = true
	}
}

// announceLeave tells every member directly that this node is leaving, and
// publishes it in the metadata for members the direct message missed.
func (n *Node) announceLeave() {
	n.leaving.Store(true)
	r := n.route.Load()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Membership.LeaveTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range r.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.call(ctx, p, opLeaving, []byte(n.cfg.Name))
		}()
	}
	wg.Wait()
	if err := n.ml.UpdateNode(n.cfg.Membership.LeaveTimeout); err != nil {
		n.log.Debug("leave announcement", "err", err)
	}
}

// call makes a peer call and reports it to Config.OnPeerCall.
func (n *Node) call(ctx context.Context, p *remote, op byte, body []byte) ([]byte, error) {
	return n.callBefore(ctx, time.Time{}, p, op, body)
}

// callBefore is call with a deadline besides ctx's (none when zero).
func (n *Node) callBefore(ctx context.Context, deadline time.Time, p *remote, op byte, body []byte) ([]byte, error) {
	if n.cfg.OnPeerCall == nil {
		return n.client.CallBefore(ctx, deadline, p.addr, op, body)
	}
	start := time.Now()
	resp, err := n.client.CallBefore(ctx, deadline, p.addr, op, body)
	n.cfg.OnPeerCall(opNames[op], p.name, time.Since(start), err)
	return resp, err
}
