package node

import (
	"context"

	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/worker"
)

// peerHandler is the peer.FastHandler of a node.
type peerHandler struct{ n *Node }

var _ peer.FastHandler = peerHandler{}

func (h peerHandler) HandlePeer(ctx context.Context, op byte, payload []byte) ([]byte, error) {
	return h.n.handlePeer(ctx, op, payload)
}

// HandlePeerFast answers a fetch of a fresh entry held here from the read
// loop of the connection; everything else, and every failure, takes the
// usual path, which reports the errors.
func (h peerHandler) HandlePeerFast(dst []byte, op byte, payload []byte) ([]byte, bool) {
	if op != opFetch {
		return dst, false
	}
	var req fetchReq
	if err := unmarshal(payload, &req); err != nil {
		return dst, false
	}
	w, ok := h.n.cache.Worker(req.Label)
	if !ok {
		return dst, false
	}
	if h.n.noticePause() {
		return dst, false
	}
	e, ok := w.PeekOwned(req.Args, req.Ov.settings())
	if !ok {
		return dst, false
	}
	we := toWire(e, worker.Hit)
	we.Args = nil // the caller has them
	dst, err := appendMsgpack(dst, &we)
	return dst, err == nil
}
