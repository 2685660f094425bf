package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/node/peer"
	"github.com/cachenode/cachenode/worker"
)

// This file is the get path across members: asking the owner of a key
// (Get, the picker, remote.Fetch) and answering as the owner (the peer
// handler, its fast path, handleFetch); wire.go holds what crosses.

// Get returns the entry of label for args and how it was answered; see the
// package documentation for the path it takes. Errors:
// worker.ErrUnknownLabel, worker.ErrBadArgs, worker.ErrTooManyArgs and
// worker.ErrArgsTooLarge (over Config.Limits, checked before anything else),
// worker.ErrConfig (overrides),
// errors wrapping worker.ErrFill, the context's error.
func (n *Node) Get(ctx context.Context, label string, args worker.Args, ov worker.Settings) (*worker.Entry, worker.Status, error) {
	w, ok := n.cache.Worker(label)
	if !ok {
		return nil, 0, fmt.Errorf("%w: %q", worker.ErrUnknownLabel, label)
	}
	if err := n.cfg.Limits.Check(args); err != nil {
		return nil, 0, err
	}
	n.noticePause()
	return w.Get(ctx, args, ov)
}

// GetInto is Get writing the entry into *dst: a hit allocates no Entry
// (see worker.Worker.GetInto).
func (n *Node) GetInto(ctx context.Context, label string, args worker.Args, ov worker.Settings, dst *worker.Entry) (worker.Status, error) {
	w, ok := n.cache.Worker(label)
	if !ok {
		return 0, fmt.Errorf("%w: %q", worker.ErrUnknownLabel, label)
	}
	if err := n.cfg.Limits.Check(args); err != nil {
		return 0, err
	}
	n.noticePause()
	return w.GetInto(ctx, args, ov, dst)
}

// Owner returns the name of the member that owns key in this node's ring.
func (n *Node) Owner(key string) string {
	r := n.route.Load()
	if r == nil {
		return n.cfg.Name
	}
	o, _ := r.ring.Owner(key)
	return o
}

// picker is the node as its workers' worker.PeerPicker: the owner of a
// key in the current ring, when that is another member.
type picker struct{ n *Node }

// PickPeer implements worker.PeerPicker with the current ring.
func (p picker) PickPeer(key string) (worker.Peer, bool) {
	n := p.n
	r := n.route.Load()
	if r == nil {
		return nil, false
	}
	owner, ok := r.ring.Owner(key)
	if !ok || owner == n.cfg.Name {
		return nil, false
	}
	rp, ok := r.peers[owner]
	if !ok {
		return nil, false
	}
	return rp, true
}

var _ worker.PeerPicker = picker{}

// remote is another member, as a worker.Peer.
type remote struct {
	n    *Node
	name string
	addr string
}

var _ worker.Peer = (*remote)(nil)

func (p *remote) Name() string { return p.name }

var opNames = map[byte]string{opFetch: "fetch", opHandoff: "handoff", opInvalidate: "invalidate", opLeaving: "leaving", opEnqueue: "enqueue", opInvalidateOwners: "invalidate-owners", opFetchFinal: "fetch-final"}

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

// reqBufs holds the buffers of encoded fetch requests: Call does not keep
// the payload once it returns.
var reqBufs = sync.Pool{New: func() any { return new([]byte) }}

// Fetch asks the owner for a key. The owner's getter errors come back
// wrapping worker.ErrFill, so that the caller does not run the getter a
// second time; every other failure lets the caller fall back.
func (p *remote) Fetch(ctx context.Context, req worker.FetchRequest) (e *worker.Entry, st worker.Status, err error) {
	if p.n.tracer != nil {
		var end func(error)
		ctx, end = p.n.startSpan(ctx, "cachenode.peer.fetch", trace.SpanKindClient,
			attribute.String("cachenode.peer", p.name), attribute.String("cachenode.label", req.Label), attribute.String("cachenode.key", req.Key))
		defer func() { end(err) }()
	}
	buf := reqBufs.Get().(*[]byte)
	defer reqBufs.Put(buf)
	body, err := appendFetchReq((*buf)[:0], &fetchReq{Label: req.Label, Key: req.Key, Args: req.Args, Ov: toWireSettings(req.Overrides),
		Trace: p.n.traceparent(ctx)})
	*buf = body[:0]
	if err != nil {
		return nil, 0, fmt.Errorf("node: encode fetch: %w", err)
	}
	resp, err := p.n.callBefore(ctx, req.Deadline, p, opFetch, body)
	if err != nil {
		var re *peer.RemoteError
		if errors.As(err, &re) && re.Code == codeFill {
			sentinel := worker.ErrFill
			if re.Detail == detailTimeout {
				sentinel = worker.ErrFillTimeout
			}
			return nil, 0, fmt.Errorf("%w: owner %s: %s", sentinel, p.name, re.Message)
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
	e = we.entry()
	e.Args = req.Args // not sent back: the caller has them
	return e, worker.Status(we.Status), nil
}

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
func (n *Node) handleFetch(ctx context.Context, payload []byte, final bool) (resp []byte, err error) {
	var req fetchReq
	if err := unmarshal(payload, &req); err != nil {
		return nil, &peer.RemoteError{Code: codeBadRequest, Message: err.Error()}
	}
	if req.Trace != "" && n.tracer != nil {
		var end func(error)
		ctx, end = n.startSpan(withTraceparent(ctx, req.Trace), "cachenode.peer.serve", trace.SpanKindServer,
			attribute.String("cachenode.label", req.Label), attribute.String("cachenode.key", req.Key))
		defer func() { end(err) }()
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
	p, elsewhere := picker{n}.PickPeer(key)
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
