package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The key space: every worker has a few hot keys that most reads go to.
var keySpace = map[string]struct{ size, hot int }{
	"item":  {200, 10},
	"group": {20, 3},
	"all":   {2, 2},
	"tag":   {10, 2},
}

// pickKey draws a key: half the reads go to items, and within a label 80%
// go to its hot set.
func pickKey(rng *rand.Rand) keyRef {
	var label string
	switch r := rng.Float64(); {
	case r < 0.5:
		label = "item"
	case r < 0.75:
		label = "group"
	case r < 0.85:
		label = "all"
	default:
		label = "tag"
	}
	ks := keySpace[label]
	if rng.Float64() < 0.8 {
		return keyRef{label, rng.IntN(ks.hot)}
	}
	return keyRef{label, rng.IntN(ks.size)}
}

// obs is one read as a client saw it.
type obs struct {
	Start, End time.Time
	Node       string
	Key        keyRef
	Code       int    // HTTP status; 0 when the request failed
	Cache      string // X-Cache
	Owner      string // X-Cache-Owner
	CKey       string // X-Cache-Key
	Version    int    // the version in the value; 0 when there was none
	Err        string
	WrongKey   bool // the value was another key's
}

func (o *obs) ok() bool { return o.Code == http.StatusOK && o.Version > 0 && !o.WrongKey }

// reader sends reads over HTTP.
type reader struct {
	hc *http.Client
}

func newReader() *reader {
	return &reader{hc: &http.Client{
		Timeout:   6 * time.Second, // above a node's own read deadline (2 × budget + fill)
		Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true},
	}}
}

func (r *reader) read(ctx context.Context, n *node, k keyRef) obs {
	o := obs{Start: time.Now(), Node: n.Name, Key: k}
	url := fmt.Sprintf("%s/v1/cache/%s?%s=%d", n.URL(), k.Label, argOf[k.Label], k.Val)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := r.hc.Do(req)
	if err != nil {
		o.End, o.Err = time.Now(), shortErr(err)
		return o
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	o.End, o.Code = time.Now(), resp.StatusCode
	o.Cache, o.Owner, o.CKey = resp.Header.Get("X-Cache"), resp.Header.Get("X-Cache-Owner"), resp.Header.Get("X-Cache-Key")
	if err != nil {
		o.Code, o.Err = 0, shortErr(err)
		return o
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code string `json:"code"`
		}
		json.Unmarshal(body, &e)
		o.Err = strconv.Itoa(resp.StatusCode) + " " + e.Code
		return o
	}
	var v value
	if err := json.Unmarshal(body, &v); err != nil || v.V < 1 {
		o.Err = "unreadable value " + strconv.Quote(string(body))
		return o
	}
	o.Version, o.WrongKey = v.V, v.K != k.String()
	return o
}

func shortErr(err error) string {
	var ue interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ue) && ue.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// clients runs readers until ctx ends and collects what they saw. Each
// read goes to a random node among those clients may use, so that every
// node, joined ones included, gets reads.
type clients struct {
	mu  sync.Mutex
	obs []obs
	wg  sync.WaitGroup
}

func startClients(ctx context.Context, c *cluster, r *reader, seed uint64, count int, pause time.Duration, ak *acks) *clients {
	cl := &clients{}
	for i := range count {
		rng := rand.New(rand.NewPCG(seed, uint64(1000+i)))
		cl.wg.Go(func() {
			var mine []obs
			defer func() {
				cl.mu.Lock()
				cl.obs = append(cl.obs, mine...)
				cl.mu.Unlock()
			}()
			for ctx.Err() == nil {
				n := c.pick(rng, nil)
				if n == nil {
					sleepCtx(ctx, 20*time.Millisecond)
					continue
				}
				o := r.read(ctx, n, pickKey(rng))
				if o.Err == "canceled" && ctx.Err() != nil {
					return
				}
				if o.ok() && o.Cache == "miss" && o.Owner != "" {
					// The owner wrote the record before it answered.
					ak.add(o.Owner, o.CKey, o.End)
				}
				mine = append(mine, o)
				sleepCtx(ctx, pause/2+time.Duration(rng.Int64N(int64(pause))))
			}
		})
	}
	return cl
}

func (cl *clients) wait() []obs {
	cl.wg.Wait()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := slices.Clone(cl.obs)
	slices.SortFunc(out, func(a, b obs) int { return a.Start.Compare(b.Start) })
	return out
}

// writeOp is one change of the origin's data and the invalidation that
// goes with it.
type writeOp struct {
	Kind     string // key, match, model, key-delayed, model-delayed
	Keys     []keyRef
	Versions map[string]int // the versions the change made current
	Bumped   time.Time      // when the origin started serving them
	Delayed  bool
	Due      time.Time // delayed: when the invalidation is due
	Attempts int       // POSTs sent (each may have been applied)
	Acked    bool      // 200 (sync) or 202 (delayed) received
	AckAt    time.Time
	Via      []string // nodes the POSTs went to
	LastErr  string
}

// writer changes origin data and sends the matching invalidations.
type writer struct {
	c   *cluster
	o   *origin
	hc  *http.Client
	rng *rand.Rand

	itemGroup map[int]int          // the origin's data: each item's group
	pending   map[string]time.Time // keys with a delayed invalidation in flight, until
	ops       []*writeOp
}

// delayed invalidations wait this long; a key they cover is left alone
// until countdown + pendingGrace, so that a delayed refresh never lands on
// a newer version than the one it was sent for.
const (
	countdown    = time.Second
	pendingGrace = 15 * time.Second
)

func newWriter(c *cluster, o *origin, seed uint64) *writer {
	w := &writer{c: c, o: o, rng: rand.New(rand.NewPCG(seed, 7)), itemGroup: map[int]int{}, pending: map[string]time.Time{},
		hc: c.adminClient(&http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}, 0)}
	for id := range keySpace["item"].size {
		w.itemGroup[id] = id % keySpace["group"].size
	}
	return w
}

// run writes until ctx ends, one change every 150-400 ms.
func (w *writer) run(ctx context.Context) {
	for ctx.Err() == nil {
		if !sleepCtx(ctx, 150*time.Millisecond+time.Duration(w.rng.Int64N(int64(250*time.Millisecond)))) {
			return
		}
		op, body := w.next()
		if op == nil {
			continue
		}
		op.Versions = w.o.bump(op.Keys)
		op.Bumped = time.Now()
		if op.Delayed {
			op.Due = op.Bumped.Add(countdown)
			for _, k := range op.Keys {
				w.pending[k.String()] = op.Due.Add(pendingGrace)
			}
		}
		w.ops = append(w.ops, op)
		// The invalidation of a change that was made is always sent to
		// the end, also when the scenario is stopping.
		w.send(op, body)
	}
}

func (w *writer) item() int {
	if w.rng.Float64() < 0.7 {
		return w.rng.IntN(keySpace["item"].hot)
	}
	return w.rng.IntN(keySpace["item"].size)
}

// next draws the next change; nil when it drew keys a delayed
// invalidation still covers.
func (w *writer) next() (*writeOp, map[string]any) {
	str := strconv.Itoa
	var op *writeOp
	var body map[string]any
	switch r := w.rng.Float64(); {
	case r < 0.30:
		id := w.item()
		op = &writeOp{Kind: "key", Keys: []keyRef{{"item", id}}}
		body = map[string]any{"label": "item", "args": map[string]any{"id": str(id)}}
	case r < 0.40:
		g1, g2 := w.rng.IntN(keySpace["group"].size), w.rng.IntN(keySpace["group"].size)
		op = &writeOp{Kind: "match", Keys: []keyRef{{"group", g1}, {"group", g2}}}
		body = map[string]any{"label": "group", "match": map[string]any{"g": []string{str(g1), str(g2)}}}
	case r < 0.75:
		id := w.item()
		og, ng := w.itemGroup[id], w.itemGroup[id]
		if w.rng.IntN(2) == 0 {
			ng = w.rng.IntN(keySpace["group"].size)
		}
		op = &writeOp{Kind: "model", Keys: []keyRef{{"item", id}, {"group", og}, {"group", ng}, {"all", 0}, {"all", 1}}}
		body = map[string]any{"model": "Item", "changes": []map[string]any{{"op": "update",
			"old": map[string]any{"id": str(id), "g": str(og)}, "new": map[string]any{"id": str(id), "g": str(ng)}}}}
		defer func() {
			if op != nil {
				w.itemGroup[id] = ng
			}
		}()
	case r < 0.90:
		id := w.item()
		op = &writeOp{Kind: "key-delayed", Keys: []keyRef{{"item", id}}, Delayed: true}
		body = map[string]any{"label": "item", "args": map[string]any{"id": str(id)}, "delay": true, "countdown": countdown.String()}
	default:
		t := w.rng.IntN(keySpace["tag"].size)
		op = &writeOp{Kind: "model-delayed", Keys: []keyRef{{"tag", t}}, Delayed: true}
		body = map[string]any{"model": "Tag", "changes": []map[string]any{{"op": "update",
			"old": map[string]any{"t": str(t)}, "new": map[string]any{"t": str(t)}}}, "delay": true, "countdown": countdown.String()}
	}
	now := time.Now()
	for _, k := range op.Keys {
		if until, ok := w.pending[k.String()]; ok && now.Before(until) {
			op = nil
			return nil, nil
		}
	}
	return op, body
}

// send POSTs the invalidation to an available node until one accepts it:
// 200 for a synchronous one, 202 for a delayed one. A 504 (a member did
// not acknowledge) or a transport error is retried on another node, as an
// application would; every attempt may have been applied somewhere.
func (w *writer) send(op *writeOp, body map[string]any) {
	ctx := context.Background()
	b, _ := json.Marshal(body)
	want := http.StatusOK
	if op.Delayed {
		want = http.StatusAccepted
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		n := w.c.pick(w.rng, nil)
		if n == nil {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		op.Attempts++
		op.Via = append(op.Via, n.Name)
		code, msg := w.post(ctx, n, b)
		if code == want {
			op.Acked, op.AckAt = true, time.Now()
			return
		}
		op.LastErr = fmt.Sprintf("%s: %s", n.Name, msg)
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func (w *writer) post(ctx context.Context, n *node, body []byte) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.URL()+"/v1/invalidate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.hc.Do(req)
	if err != nil {
		return 0, shortErr(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
}
