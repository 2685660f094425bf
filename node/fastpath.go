package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

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
// usual path, which reports the errors. The entry is looked up by the key
// the asker computed (the asker stores the answer under it), so that the
// arguments need not be decoded; a fetch with per-call overrides takes the
// usual path.
func (h peerHandler) HandlePeerFast(dst []byte, op byte, payload []byte) ([]byte, bool) {
	if op != opFetch && op != opFetchFinal || checkMsgpack(payload) != nil {
		return dst, false
	}
	label, key, ok := fetchKey(payload)
	// The key must be one of label's: "label@...".
	if !ok || len(key) <= len(label) || key[len(label)] != '@' || key[:len(label)] != label {
		return dst, false
	}
	w, ok := h.n.cache.Worker(label)
	if !ok {
		return dst, false
	}
	if h.n.noticePause() {
		return dst, false
	}
	var e worker.Entry
	if !w.PeekOwnedInto(key, worker.Settings{}, &e) {
		return dst, false
	}
	we := toWire(&e, worker.Hit)
	we.Args = nil // the caller has them
	dst, err := appendEntry(dst, &we)
	return dst, err == nil
}

// reqBufs holds the buffers of encoded fetch requests: Call does not keep
// the payload once it returns.
var reqBufs = sync.Pool{New: func() any { return new([]byte) }}

// Fetch asks the owner for a key. The owner's getter errors come back
// wrapping worker.ErrFill, so that the caller does not run the getter a
// second time; every other failure lets the caller fall back.
func (p *remote) Fetch(ctx context.Context, req worker.FetchRequest) (*worker.Entry, worker.Status, error) {
	buf := reqBufs.Get().(*[]byte)
	defer reqBufs.Put(buf)
	body, err := appendFetchReq((*buf)[:0], &fetchReq{Label: req.Label, Key: req.Key, Args: req.Args, Ov: toWireSettings(req.Overrides)})
	*buf = body[:0]
	if err != nil {
		return nil, 0, fmt.Errorf("node: encode fetch: %w", err)
	}
	resp, err := p.n.callBefore(ctx, req.Deadline, p, opFetch, body)
	if err != nil {
		var re *peer.RemoteError
		if errors.As(err, &re) && re.Code == codeFill {
			return nil, 0, fmt.Errorf("%w: owner %s: %s", worker.ErrFill, p.name, re.Message)
		}
		if errors.As(err, &re) && re.Code == codeOriginBusy {
			ms, _ := strconv.ParseInt(re.Message, 10, 64)
			return nil, 0, &worker.OriginBusyError{Origin: "owner " + p.name, RetryAfter: max(time.Duration(ms)*time.Millisecond, time.Second),
				Reason: "the owner's origin limit"}
		}
		return nil, 0, fmt.Errorf("node: fetch from %s: %w", p.name, err)
	}
	var we wireEntry
	if err := decodeAnswer(resp, req.Label, req.Key, p.name, &we); err != nil {
		return nil, 0, fmt.Errorf("node: fetch from %s: bad answer: %w", p.name, err)
	}
	e := we.entry()
	e.Args = req.Args // not sent back: the caller has them
	return e, worker.Status(we.Status), nil
}
