package node

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

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
	// Trace is the W3C traceparent of the asker's span, "" when it does
	// not trace: then the field is not sent (older members skip it).
	Trace string `msgpack:"t,omitempty"`
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
	// Times holds, for each entry in order, its age and what is left of
	// its lifetimes, measured on the sender's clock as the request was
	// encoded. The receiver places the entries on its own clock with them
	// and ignores the entries' instants: no time of one machine is
	// compared with the clock of another.
	Times []handoffTimes `msgpack:"t"`
}

// handoffTimes are the durations of a handed-off entry, in nanoseconds.
type handoffTimes struct {
	Age       int64  `msgpack:"a"`           // since it was built
	Available int64  `msgpack:"x"`           // until it expires
	Relevance *int64 `msgpack:"r,omitempty"` // until it goes stale; nil: no relevance deadline
}

// timesOf returns the durations of e at now.
func timesOf(e *worker.Entry, now time.Time) handoffTimes {
	t := handoffTimes{Age: int64(now.Sub(e.CreatedAt)), Available: int64(e.AvailableTo.Sub(now))}
	if !e.RelevanceTo.IsZero() {
		r := int64(e.RelevanceTo.Sub(now))
		t.Relevance = &r
	}
	return t
}

// place sets e's instants from t, on the receiver's clock at now.
func (t handoffTimes) place(e *worker.Entry, now time.Time) {
	e.CreatedAt = now.Add(-time.Duration(t.Age))
	e.AvailableTo = now.Add(time.Duration(t.Available))
	e.RelevanceTo = time.Time{}
	if t.Relevance != nil {
		e.RelevanceTo = now.Add(time.Duration(*t.Relevance))
	}
}

type handoffResp struct {
	Kept int `msgpack:"k"`
}

// The messages of the Get path are encoded by hand, as msgpack arrays in a
// fixed field order: reflection over struct tags cost a sixth of a remote
// hit's CPU. Adding a field means appending it and accepting shorter arrays
// from older nodes.

const (
	wireEntryFields = 11
	fetchReqFields  = 4
)

var (
	_ msgpack.CustomEncoder = (*wireEntry)(nil)
	_ msgpack.CustomDecoder = (*wireEntry)(nil)
	_ msgpack.CustomEncoder = (*fetchReq)(nil)
	_ msgpack.CustomDecoder = (*fetchReq)(nil)
)

// EncodeMsgpack implements msgpack.CustomEncoder.
func (w *wireEntry) EncodeMsgpack(enc *msgpack.Encoder) error {
	return firstErr(
		enc.EncodeArrayLen(wireEntryFields),
		enc.EncodeString(w.Label),
		enc.EncodeString(w.Key),
		encodeArgs(enc, w.Args),
		enc.EncodeBytes(w.Value),
		enc.EncodeString(w.ContentType),
		enc.EncodeString(w.Owner),
		enc.EncodeInt(w.Created),
		enc.EncodeInt(w.Relevance),
		enc.EncodeInt(w.Available),
		enc.EncodeInt(w.FillNanos),
		enc.EncodeUint8(w.Status),
	)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (w *wireEntry) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < wireEntryFields {
		return fmt.Errorf("node: entry of %d fields, want %d", n, wireEntryFields)
	}
	if w.Label, err = dec.DecodeString(); err != nil {
		return err
	}
	if w.Key, err = dec.DecodeString(); err != nil {
		return err
	}
	if w.Args, err = decodeArgs(dec); err != nil {
		return err
	}
	if w.Value, err = dec.DecodeBytes(); err != nil {
		return err
	}
	if w.ContentType, err = dec.DecodeString(); err != nil {
		return err
	}
	if w.Owner, err = dec.DecodeString(); err != nil {
		return err
	}
	for _, p := range []*int64{&w.Created, &w.Relevance, &w.Available, &w.FillNanos} {
		if *p, err = dec.DecodeInt64(); err != nil {
			return err
		}
	}
	if w.Status, err = dec.DecodeUint8(); err != nil {
		return err
	}
	return skipFields(dec, n-wireEntryFields)
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (r *fetchReq) EncodeMsgpack(enc *msgpack.Encoder) error {
	var ov any
	if r.Ov != (wireSettings{}) {
		o := r.Ov // a copy: r itself does not escape
		ov = &o
	}
	n := fetchReqFields
	if r.Trace != "" {
		n++
	}
	err := firstErr(
		enc.EncodeArrayLen(n),
		enc.EncodeString(r.Label),
		enc.EncodeString(r.Key),
		encodeArgs(enc, r.Args),
		enc.Encode(ov),
	)
	if err == nil && r.Trace != "" {
		err = enc.EncodeString(r.Trace)
	}
	return err
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (r *fetchReq) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < fetchReqFields {
		return fmt.Errorf("node: fetch of %d fields, want %d", n, fetchReqFields)
	}
	if r.Label, err = dec.DecodeString(); err != nil {
		return err
	}
	if r.Key, err = dec.DecodeString(); err != nil {
		return err
	}
	if r.Args, err = decodeArgs(dec); err != nil {
		return err
	}
	if err = dec.Decode(&r.Ov); err != nil {
		return err
	}
	if n > fetchReqFields {
		if r.Trace, err = dec.DecodeString(); err != nil {
			return err
		}
		n--
	}
	return skipFields(dec, n-fetchReqFields)
}

// codecs are the msgpack encoders and decoders of the Get path, reused so
// that a remote Get allocates only what it returns.
var codecs = sync.Pool{New: func() any {
	c := &codec{}
	c.enc = msgpack.NewEncoder(&c.out)
	c.dec = msgpack.NewDecoder(&c.in)
	return c
}}

// codec is an encoder writing to out and a decoder reading from in.
type codec struct {
	enc *msgpack.Encoder
	out appendWriter
	dec *msgpack.Decoder
	in  bytes.Reader
}

func getCodec() *codec { return codecs.Get().(*codec) }

func (c *codec) put() {
	c.out.b = nil
	c.in.Reset(nil)
	codecs.Put(c)
}

// appendEntry and appendFetchReq append an encoded message to dst. They
// take the concrete types, not a msgpack.CustomEncoder, so that the message
// can stay on the caller's stack.
func appendEntry(dst []byte, we *wireEntry) ([]byte, error) {
	c := getCodec()
	defer c.put()
	c.out.b = dst
	err := we.EncodeMsgpack(c.enc)
	return c.out.b, err
}

func appendFetchReq(dst []byte, r *fetchReq) ([]byte, error) {
	c := getCodec()
	defer c.put()
	c.out.b = dst
	err := r.EncodeMsgpack(c.enc)
	return c.out.b, err
}

// decodeAnswer decodes b, the owner's answer to a fetch of label's key,
// into we, after the checks of unmarshal. It allocates only what differs
// from the request: the answer's label and key are the request's (not
// read), its value is a slice of b (which belongs to the caller), and an
// owner named owner is that string.
func decodeAnswer(b []byte, label, key, owner string, we *wireEntry) error {
	if err := checkMsgpack(b); err != nil {
		return fmt.Errorf("node: malformed message: %w", err)
	}
	c := getCodec()
	defer c.put()
	c.in.Reset(b)
	dec := c.dec
	// raw returns the bytes of the string or binary value that follows, in
	// b; nil for nil.
	raw := func() ([]byte, error) {
		n, err := dec.DecodeBytesLen()
		if err != nil || n < 0 {
			return nil, err
		}
		at := len(b) - c.in.Len()
		if n > c.in.Len() {
			return nil, fmt.Errorf("node: %d bytes announced, %d left", n, c.in.Len())
		}
		_, err = c.in.Seek(int64(n), io.SeekCurrent)
		return b[at : at+n : at+n], err
	}
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < wireEntryFields {
		return fmt.Errorf("node: entry of %d fields, want %d", n, wireEntryFields)
	}
	if err := firstErr(dec.Skip(), dec.Skip()); err != nil {
		return err
	}
	we.Label, we.Key = label, key
	if we.Args, err = decodeArgs(dec); err != nil {
		return err
	}
	if we.Value, err = raw(); err != nil {
		return err
	}
	if we.ContentType, err = dec.DecodeString(); err != nil {
		return err
	}
	o, err := raw()
	if err != nil {
		return err
	}
	if we.Owner = owner; string(o) != owner {
		we.Owner = string(o)
	}
	for _, p := range []*int64{&we.Created, &we.Relevance, &we.Available, &we.FillNanos} {
		if *p, err = dec.DecodeInt64(); err != nil {
			return err
		}
	}
	if we.Status, err = dec.DecodeUint8(); err != nil {
		return err
	}
	return skipFields(dec, n-wireEntryFields)
}

// fetchKey reads the label and key of an encoded fetchReq that carries no
// overrides, without decoding its arguments; ok is false for any other
// message. The message must have passed checkMsgpack.
func fetchKey(b []byte) (label, key string, ok bool) {
	c := getCodec()
	defer c.put()
	c.in.Reset(b)
	n, err := c.dec.DecodeArrayLen()
	// A fetch with a traceparent takes the usual path, which spans it.
	if err != nil || n != fetchReqFields {
		return "", "", false
	}
	if label, err = c.dec.DecodeString(); err != nil {
		return "", "", false
	}
	if key, err = c.dec.DecodeString(); err != nil {
		return "", "", false
	}
	if err = c.dec.Skip(); err != nil {
		return "", "", false
	}
	code, err := c.dec.PeekCode()
	if err != nil || code != msgpcode.Nil {
		return "", "", false
	}
	return label, key, true
}

// appendWriter is an io.Writer (and io.ByteWriter, which msgpack uses
// without a buffer in between) that appends to b.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

func (a *appendWriter) WriteByte(c byte) error {
	a.b = append(a.b, c)
	return nil
}

func encodeArgs(enc *msgpack.Encoder, a worker.Args) error {
	if a == nil {
		return enc.EncodeNil()
	}
	return enc.EncodeMap(a)
}

func decodeArgs(dec *msgpack.Decoder) (worker.Args, error) {
	m, err := dec.DecodeMap()
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, nil
	}
	return worker.Args(m), nil
}

func skipFields(dec *msgpack.Decoder, n int) error {
	for range n {
		if err := dec.Skip(); err != nil {
			return err
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// maxNesting bounds the depth of arrays and maps in a message from a peer.
const maxNesting = 64

// unmarshal decodes a message that came from another node (peer
// transport, gossip, push/pull state). It first walks the msgpack
// structure and checks every declared length against the bytes that are
// really there, and the nesting depth: the msgpack library allocates what a
// header declares before reading, so four bytes of garbage could otherwise
// make it allocate gigabytes, and deep nesting could exhaust the stack.
func unmarshal(b []byte, v any) error {
	if err := checkMsgpack(b); err != nil {
		return fmt.Errorf("node: malformed message: %w", err)
	}
	return msgpack.Unmarshal(b, v)
}

// checkMsgpack verifies that b is one well-formed msgpack value whose
// declared lengths fit in b and whose nesting is at most maxNesting.
//
// It is one function of about a hundred lines on purpose: its switch is
// the table of msgpack's type codes, read against the specification as a
// whole, and it runs on the fast path of every peer fetch.
func checkMsgpack(b []byte) error {
	var stack [16]int
	pending := append(stack[:0], 1) // values still to read at each open level
	i := 0
	need := func(n int) error {
		if n < 0 || n > len(b)-i {
			return fmt.Errorf("length %d at offset %d exceeds the %d bytes left", n, i, len(b)-i)
		}
		return nil
	}
	readLen := func(size int) (int, error) {
		if err := need(size); err != nil {
			return 0, err
		}
		n := 0
		for _, c := range b[i : i+size] {
			n = n<<8 | int(c)
			if n > len(b) {
				n = len(b) + 1 // keep the value from overflowing; need() refuses it
			}
		}
		i += size
		return n, nil
	}
	for len(pending) > 0 {
		if pending[len(pending)-1] == 0 {
			pending = pending[:len(pending)-1]
			continue
		}
		pending[len(pending)-1]--
		if i >= len(b) {
			return fmt.Errorf("truncated at offset %d", i)
		}
		c := b[i]
		i++
		var skip, items int
		var err error
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			items = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			items = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			skip, err = readLen(1)
		case c == 0xc5 || c == 0xda:
			skip, err = readLen(2)
		case c == 0xc6 || c == 0xdb:
			skip, err = readLen(4)
		case c == 0xc7:
			skip, err = readLen(1)
			skip++
		case c == 0xc8:
			skip, err = readLen(2)
			skip++
		case c == 0xc9:
			skip, err = readLen(4)
			skip++
		case c == 0xca:
			skip = 4
		case c == 0xcb:
			skip = 8
		case c >= 0xcc && c <= 0xcf:
			skip = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3:
			skip = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8:
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			items, err = readLen(2)
		case c == 0xdd:
			items, err = readLen(4)
		case c == 0xde:
			items, err = readLen(2)
			items *= 2
		case c == 0xdf:
			items, err = readLen(4)
			items *= 2
		default:
			return fmt.Errorf("invalid code 0x%02x at offset %d", c, i-1)
		}
		if err != nil {
			return err
		}
		if err := need(skip); err != nil {
			return err
		}
		i += skip
		if items > 0 {
			// Every item takes at least one byte.
			if err := need(items); err != nil {
				return err
			}
			if len(pending) >= maxNesting {
				return fmt.Errorf("nested deeper than %d", maxNesting)
			}
			pending = append(pending, items)
		}
	}
	if i != len(b) {
		return fmt.Errorf("%d bytes after the value", len(b)-i)
	}
	return nil
}
