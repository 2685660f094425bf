package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// keyRef names one cached value: a worker label and its single argument.
type keyRef struct {
	Label string // item, group, all, tag
	Val   int
}

// the workers of the chaos cluster and their argument names.
var argOf = map[string]string{"item": "id", "group": "g", "all": "page", "tag": "t"}

// originKey is the key's name at the origin and in the report: "item/7".
func (k keyRef) String() string { return k.Label + "/" + strconv.Itoa(k.Val) }

// value is what the origin answers for a key; cached values are these bytes.
type value struct {
	K string `json:"k"`
	V int    `json:"v"`
}

// fill is one request of a node to the origin.
type fill struct {
	At      time.Time
	Key     string // origin key
	Version int
	Node    string
}

// origin is the counting origin: it knows the current version of every
// value, answers it, and logs every fill with the node that asked.
type origin struct {
	srv *http.Server
	ln  net.Listener

	mu struct {
		sync.Mutex
		version map[string]int       // current version per origin key; absent = 1
		changed map[string]time.Time // when the current version became current
		history map[string][]verSpan // past versions, oldest first
		fills   []fill
		bad     []string                 // requests the origin could not answer
		slow    map[string]time.Duration // answers of these keys wait this long (probes)
	}
}

// verSpan is the life of one version of a key at the origin.
type verSpan struct {
	Version    int
	From, Upto time.Time // Upto zero: still current
}

func newOrigin(addr string) (*origin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	o := &origin{ln: ln}
	o.mu.version = map[string]int{}
	o.mu.changed = map[string]time.Time{}
	o.mu.history = map[string][]verSpan{}
	o.mu.slow = map[string]time.Duration{}
	mux := http.NewServeMux()
	for label, arg := range argOf {
		mux.HandleFunc("GET /"+label, func(w http.ResponseWriter, r *http.Request) { o.serve(w, r, label, arg) })
	}
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go o.srv.Serve(ln)
	return o, nil
}

// URL is the origin's base URL.
func (o *origin) URL() string { return "http://" + o.ln.Addr().String() }

func (o *origin) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	o.srv.Shutdown(ctx)
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request, label, arg string) {
	now := time.Now()
	q := r.URL.Query()
	v, err := strconv.Atoi(q.Get(arg))
	if err != nil || len(q) != 1 || len(q[arg]) != 1 {
		o.mu.Lock()
		o.mu.bad = append(o.mu.bad, r.URL.String())
		o.mu.Unlock()
		http.Error(w, "bad arguments", http.StatusBadRequest)
		return
	}
	k := keyRef{label, v}.String()
	node := nodeOfAgent(r.UserAgent())
	o.mu.Lock()
	ver := o.versionLocked(k)
	o.mu.fills = append(o.mu.fills, fill{At: now, Key: k, Version: ver, Node: node})
	delay := o.mu.slow[k]
	o.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
	}
	b, _ := json.Marshal(value{K: k, V: ver})
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// nodeOfAgent reads the node name from cachenode's User-Agent,
// "cachenode/VERSION (NAME)".
func nodeOfAgent(ua string) string {
	i, j := strings.LastIndexByte(ua, '('), strings.LastIndexByte(ua, ')')
	if i < 0 || j < i {
		return "?"
	}
	return ua[i+1 : j]
}

func (o *origin) versionLocked(k string) int {
	if v, ok := o.mu.version[k]; ok {
		return v
	}
	return 1
}

// bump makes a new version of each key current and returns the versions.
func (o *origin) bump(keys []keyRef) map[string]int {
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]int, len(keys))
	for _, k := range keys {
		s := k.String()
		if _, dup := out[s]; dup {
			continue
		}
		cur := o.versionLocked(s)
		o.mu.history[s] = append(o.mu.history[s], verSpan{Version: cur, From: o.mu.changed[s], Upto: now})
		o.mu.version[s] = cur + 1
		o.mu.changed[s] = now
		out[s] = cur + 1
	}
	return out
}

// slowDown makes the origin answer k only after d (0: at once again).
func (o *origin) slowDown(k keyRef, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mu.slow[k.String()] = d
}

// filled reports whether node asked for version v of k (the fill is logged
// when the request arrives, before a slowDown delays the answer).
func (o *origin) filled(k keyRef, v int, node string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, f := range o.mu.fills {
		if f.Key == k.String() && f.Version == v && f.Node == node {
			return true
		}
	}
	return false
}

// current returns the current version of k.
func (o *origin) current(k keyRef) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.versionLocked(k.String())
}

// snapshot returns the fills, the version spans of every key (the current
// one open), and the requests the origin refused.
func (o *origin) snapshot() ([]fill, map[string][]verSpan, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	spans := make(map[string][]verSpan, len(o.mu.history)+len(o.mu.version))
	for k, h := range o.mu.history {
		spans[k] = append([]verSpan(nil), h...)
	}
	for _, f := range o.mu.fills {
		if _, ok := spans[f.Key]; !ok {
			spans[f.Key] = nil
		}
	}
	for k := range spans {
		spans[k] = append(spans[k], verSpan{Version: o.versionLocked(k), From: o.mu.changed[k]})
	}
	return append([]fill(nil), o.mu.fills...), spans, append([]string(nil), o.mu.bad...)
}
