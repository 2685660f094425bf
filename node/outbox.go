package node

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/persist"
)

// outboxLoop applies delayed invalidations when they are due, also those
// queued before a restart, and removes each only after it was applied.
func (n *Node) outboxLoop() {
	defer n.wg.Done()
	for {
		t := n.cfg.Clock.NewTimer(outboxPoll)
		select {
		case <-n.done:
			t.Stop()
			return
		case <-n.outboxWake:
			t.Stop()
		case <-t.Chan():
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

// outboxBytes tracks the payload bytes of the delayed invalidations in the
// store's outbox, which bounds what handed-over ones may add.
type outboxBytes struct {
	bytes atomic.Int64
}

// enqueue writes a delayed invalidation to the outbox and counts its bytes.
func (n *Node) enqueue(due time.Time, payload []byte) (uint64, error) {
	id, err := n.store.Enqueue(due, payload)
	if err == nil {
		n.outbox.bytes.Add(int64(len(payload)))
	}
	return id, err
}

// ack removes an applied or handed-over item from the outbox.
func (n *Node) ack(it persist.OutboxItem) error {
	err := n.store.Ack(it.ID)
	if err == nil {
		n.outbox.bytes.Add(-int64(len(it.Payload)))
	}
	return err
}

// countOutbox sets the outbox's byte count from what the store holds, at
// start (items queued before a restart).
func (n *Node) countOutbox() error {
	items, err := n.store.Pending()
	if err != nil {
		return err
	}
	var b int64
	for _, it := range items {
		b += int64(len(it.Payload))
	}
	n.outbox.bytes.Store(b)
	return nil
}
