package node

import (
	"time"

	"github.com/cachenode/cachenode/worker"
)

// protoVersion is the peer protocol version carried in member metadata. A
// node refuses fills from members of another major version.
const protoVersion = 1

// Operations of the peer transport.
const (
	opFetch      byte = 1 // fetchReq → wireEntry: answer for a key this node owns
	opHandoff    byte = 2 // handoffReq → handoffResp: entries of a leaving node
	opInvalidate byte = 3 // invalidation event → applied count
	opLeaving    byte = 4 // node name → nothing: the sender is about to leave gracefully
	opEnqueue    byte = 5 // enqueueReq → nothing: a delayed invalidation handed over by a leaving node
	// opInvalidateOwners is the first round of a broadcast: invalidation
	// event → applied count, for the keys the receiver owns only. The
	// second round, opInvalidate, applies the rest (near-cache copies).
	opInvalidateOwners byte = 6
	// opFetchFinal is opFetch forwarded once by a member whose ring gives
	// the key to another: the receiver answers as the owner whatever its
	// own ring says (no second forward, so no loops).
	opFetchFinal byte = 7
)

// Error codes carried in peer.RemoteError.
const (
	codeUnknownWorker = "unknown_worker"
	codeFill          = "fill_error"
	// detailTimeout, the Detail of a codeFill, says that the owner's
	// getter ran past its deadline (worker.ErrFillTimeout).
	detailTimeout  = "timeout"
	codeBadRequest = "bad_request"
	// codeOriginBusy: the owner's origin limiter turned the fill away; the
	// message is the Retry-After in milliseconds. The asker does not fill
	// the key itself, which would go around the owner's limit.
	codeOriginBusy = "origin_busy"
)

// Error codes of a fetch over the node's limits (Config.Limits), the
// codes of the HTTP API's 400 answers.
const (
	codeTooManyArgs  = "too_many_args"
	codeArgsTooLarge = "args_too_large"
)

// meta is what a member publishes in its memberlist metadata (at most 512
// bytes).
type meta struct {
	Proto int    `msgpack:"v"`
	Peer  string `msgpack:"p"`
	HTTP  string `msgpack:"h"`
	// Leaving is set by a node that is about to leave gracefully, so that
	// the others record "left" rather than "dead" (memberlist's NotifyLeave
	// does not say which).
	Leaving bool `msgpack:"l,omitempty"`
}

type fetchReq struct {
	Label string       `msgpack:"l"`
	Key   string       `msgpack:"k"`
	Args  worker.Args  `msgpack:"a"`
	Ov    wireSettings `msgpack:"o,omitempty"`
}

// wireSettings are per-call overrides on the wire: zero means unset, and
// pointer fields are encoded as tri-states.
type wireSettings struct {
	Expires               time.Duration  `msgpack:"e,omitempty"`
	Tick                  time.Duration  `msgpack:"t,omitempty"`
	TickAmount            *int           `msgpack:"ta,omitempty"`
	IsConcurrent          *bool          `msgpack:"c,omitempty"`
	RelevanceInvalidation *bool          `msgpack:"ri,omitempty"`
	RelevanceExpires      time.Duration  `msgpack:"re,omitempty"`
	DelayInvalidation     *bool          `msgpack:"di,omitempty"`
	DelayCountdown        *time.Duration `msgpack:"dc,omitempty"`
}

func toWireSettings(s worker.Settings) wireSettings {
	return wireSettings{
		Expires: s.Expires, Tick: s.Tick, TickAmount: s.TickAmount, IsConcurrent: s.IsConcurrent,
		RelevanceInvalidation: s.RelevanceInvalidation, RelevanceExpires: s.RelevanceExpires,
		DelayInvalidation: s.DelayInvalidation, DelayCountdown: s.DelayCountdown,
	}
}

func (w wireSettings) settings() worker.Settings {
	return worker.Settings{
		Expires: w.Expires, Tick: w.Tick, TickAmount: w.TickAmount, IsConcurrent: w.IsConcurrent,
		RelevanceInvalidation: w.RelevanceInvalidation, RelevanceExpires: w.RelevanceExpires,
		DelayInvalidation: w.DelayInvalidation, DelayCountdown: w.DelayCountdown,
	}
}

// wireEntry is an entry on the wire; times are Unix nanoseconds so that
// they survive encoding exactly.
type wireEntry struct {
	Label       string      `msgpack:"l"`
	Key         string      `msgpack:"k"`
	Args        worker.Args `msgpack:"a"`
	Value       []byte      `msgpack:"v"`
	ContentType string      `msgpack:"ct,omitempty"`
	Owner       string      `msgpack:"o"`
	Created     int64       `msgpack:"c"`
	Relevance   int64       `msgpack:"r,omitempty"`
	Available   int64       `msgpack:"x"`
	FillNanos   int64       `msgpack:"f,omitempty"`
	Status      uint8       `msgpack:"s,omitempty"`
}

func toWire(e *worker.Entry, st worker.Status) wireEntry {
	w := wireEntry{
		Label: e.Label, Key: e.Key, Args: e.Args, Value: e.Value, ContentType: e.ContentType, Owner: e.Owner,
		Created: e.CreatedAt.UnixNano(), Available: e.AvailableTo.UnixNano(), FillNanos: int64(e.FillDuration),
		Status: uint8(st),
	}
	if !e.RelevanceTo.IsZero() {
		w.Relevance = e.RelevanceTo.UnixNano()
	}
	return w
}

func (w *wireEntry) entry() *worker.Entry {
	e := &worker.Entry{
		Label: w.Label, Key: w.Key, Args: w.Args, Value: w.Value, ContentType: w.ContentType, Owner: w.Owner,
		CreatedAt: time.Unix(0, w.Created), AvailableTo: time.Unix(0, w.Available), FillDuration: time.Duration(w.FillNanos),
	}
	if w.Relevance != 0 {
		e.RelevanceTo = time.Unix(0, w.Relevance)
	}
	return e
}

type handoffReq struct {
	From    string      `msgpack:"f"`
	Entries []wireEntry `msgpack:"e"`
}

type handoffResp struct {
	Kept int `msgpack:"k"`
}
