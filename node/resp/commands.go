package resp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/node/httpapi"
	"github.com/cachenode/cachenode/worker"
)

// redisVersion is the Redis version whose protocol and commands the front
// speaks, as HELLO and INFO report it: clients gate features on it.
const redisVersion = "7.2.0"

// errWrite answers every command that would write a key.
const errWrite = "ERR cachenode keys are filled by their workers: they cannot be written, only read and invalidated (DEL, CN.INVALIDATE)"

// command is one entry of the command table (COMMAND lists it).
type command struct {
	name     string
	arity    int // as Redis's: negative for "at least"
	flags    []string
	first    int // first key argument, 0 if none
	last     int
	step     int
	group    string
	summary  string
	run      func(c *conn, args [][]byte) (quit bool)
	readKeys bool // its keys are tracked (GET, MGET, CN.ENTITY)
}

// writeCommands are refused with errWrite.
var writeCommands = []string{"SET", "SETNX", "SETEX", "PSETEX", "MSET", "MSETNX", "APPEND", "INCR", "INCRBY",
	"INCRBYFLOAT", "DECR", "DECRBY", "GETSET", "GETDEL", "GETEX", "SETRANGE", "EXPIRE", "PEXPIRE", "EXPIREAT",
	"PEXPIREAT", "PERSIST", "RENAME", "RENAMENX", "COPY", "MOVE", "FLUSHDB", "FLUSHALL", "HSET", "HSETNX", "HMSET",
	"HDEL", "HINCRBY", "LPUSH", "RPUSH", "LPOP", "RPOP", "LSET", "SADD", "SREM", "SPOP", "ZADD", "ZREM", "ZINCRBY",
	"XADD", "PUBLISH", "RESTORE", "SWAPDB"}

func commandTable() map[string]*command {
	t := map[string]*command{}
	add := func(c *command) { t[c.name] = c }
	add(&command{name: "GET", arity: 2, flags: []string{"readonly", "fast"}, first: 1, last: 1, step: 1, group: "string",
		summary: "The value of a read: the key is the HTTP read's label?query (items?id=1); a miss fills", run: (*conn).cmdGet, readKeys: true})
	add(&command{name: "MGET", arity: -2, flags: []string{"readonly", "fast"}, first: 1, last: -1, step: 1, group: "string",
		summary: "The values of several reads, their owners asked in parallel", run: (*conn).cmdMGet, readKeys: true})
	add(&command{name: "CN.ENTITY", arity: 2, flags: []string{"readonly"}, first: 1, last: 1, step: 1, group: "cachenode",
		summary: "The entity of a read: a map with label, key, args, owner, status, dates and the value", run: (*conn).cmdEntity, readKeys: true})
	add(&command{name: "DEL", arity: -2, flags: []string{"write"}, first: 1, last: -1, step: 1, group: "generic",
		summary: "Invalidate keys across the cluster (their workers refresh or drop them); needs AUTH when the node has an admin token", run: (*conn).cmdDel})
	add(&command{name: "UNLINK", arity: -2, flags: []string{"write", "fast"}, first: 1, last: -1, step: 1, group: "generic",
		summary: "As DEL", run: (*conn).cmdDel})
	add(&command{name: "CN.INVALIDATE", arity: 2, flags: []string{"write"}, group: "cachenode",
		summary: "Apply an invalidation: the JSON body of POST /v1/invalidate", run: (*conn).cmdInvalidate})
	add(&command{name: "CN.TRACEPARENT", arity: 2, flags: []string{"fast"}, group: "cachenode",
		summary: "The W3C traceparent of the next command: its reads are spanned under it (when the node traces)", run: (*conn).cmdTraceparent})
	add(&command{name: "PTTL", arity: 2, flags: []string{"readonly", "fast"}, first: 1, last: 1, step: 1, group: "generic",
		summary: "Milliseconds the value held here stays fresh; -1 when none is held", run: (*conn).cmdPTTL})
	add(&command{name: "TTL", arity: 2, flags: []string{"readonly", "fast"}, first: 1, last: 1, step: 1, group: "generic",
		summary: "Seconds the value held here stays fresh; -1 when none is held", run: (*conn).cmdPTTL})
	add(&command{name: "AUTH", arity: -2, flags: []string{"noscript", "loading", "stale", "fast", "no_auth"}, group: "connection",
		summary: "Authenticate with the admin token", run: (*conn).cmdAuth})
	add(&command{name: "HELLO", arity: -1, flags: []string{"noscript", "loading", "stale", "fast", "no_auth"}, group: "connection",
		summary: "Handshake: protocol 2 or 3, AUTH, SETNAME", run: (*conn).cmdHello})
	add(&command{name: "PING", arity: -1, flags: []string{"fast"}, group: "connection", summary: "PONG", run: (*conn).cmdPing})
	add(&command{name: "ECHO", arity: 2, flags: []string{"fast"}, group: "connection", summary: "The message back", run: (*conn).cmdEcho})
	add(&command{name: "QUIT", arity: -1, flags: []string{"fast", "no_auth"}, group: "connection", summary: "Close the connection", run: (*conn).cmdQuit})
	add(&command{name: "SELECT", arity: 2, flags: []string{"fast"}, group: "connection", summary: "Only database 0 exists", run: (*conn).cmdSelect})
	add(&command{name: "CLIENT", arity: -2, group: "connection", summary: "SETNAME, GETNAME, ID, INFO, LIST, TRACKING, CACHING, GETREDIR, SETINFO", run: (*conn).cmdClient})
	add(&command{name: "COMMAND", arity: -1, flags: []string{"loading", "stale"}, group: "server", summary: "The commands; COUNT, DOCS, INFO", run: (*conn).cmdCommand})
	add(&command{name: "INFO", arity: -1, flags: []string{"loading", "stale"}, group: "server", summary: "server, clients, stats and keyspace sections", run: (*conn).cmdInfo})
	add(&command{name: "SUBSCRIBE", arity: -2, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "pubsub",
		summary: "Subscribe (__redis__:invalidate: the invalidations of the connections that REDIRECT here)", run: (*conn).cmdSubscribe})
	add(&command{name: "UNSUBSCRIBE", arity: -1, flags: []string{"pubsub", "noscript", "loading", "stale"}, group: "pubsub",
		summary: "Unsubscribe", run: (*conn).cmdUnsubscribe})
	add(&command{name: "MULTI", arity: 1, flags: []string{"fast"}, group: "transactions", summary: "Queue the next commands", run: (*conn).cmdMulti})
	add(&command{name: "EXEC", arity: 1, group: "transactions", summary: "Run the queued commands", run: (*conn).cmdExec})
	add(&command{name: "DISCARD", arity: 1, flags: []string{"fast"}, group: "transactions", summary: "Forget the queued commands", run: (*conn).cmdDiscard})
	for _, name := range writeCommands {
		add(&command{name: name, arity: -1, flags: []string{"write"}, group: "refused", summary: "Refused: cachenode keys are filled by their workers",
			run: func(c *conn, args [][]byte) bool { c.out.err(errWrite); return false }})
	}
	return t
}

// exec runs one command and writes its reply; quit: close the connection
// once the reply is out.
func (c *conn) exec(args [][]byte) (quit bool) {
	name := args[0]
	for i, b := range name {
		if 'a' <= b && b <= 'z' {
			name[i] = b - 'a' + 'A'
		}
	}
	cmd := c.s.cmds[string(name)]
	if cmd == nil {
		c.out.err(fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", printable(name), argsPreview(args[1:])))
		c.emit(nil)
		return false
	}
	c.lastCmd.Store(&cmd.name)
	if !arityOK(cmd.arity, len(args)) {
		c.out.err(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(cmd.name)))
		c.emit(nil)
		return false
	}
	if c.inMulti && cmd.name != "EXEC" && cmd.name != "DISCARD" && cmd.name != "MULTI" && cmd.name != "QUIT" {
		c.queued = append(c.queued, args)
		c.out.simple("QUEUED")
		c.emit(nil)
		return false
	}
	if c.proto.Load() < 3 && c.subs.Load() > 0 {
		switch cmd.name {
		case "SUBSCRIBE", "UNSUBSCRIBE", "PING", "QUIT":
		default:
			c.out.err(fmt.Sprintf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", strings.ToLower(cmd.name)))
			c.emit(nil)
			return false
		}
	}
	var tracked []string
	if cmd.readKeys && c.tracks() {
		tracked = c.markPending(args[1:])
	}
	quit = cmd.run(c, args)
	c.emit(tracked)
	if cmd.name != "MULTI" && cmd.name != "CLIENT" {
		c.caching = 0 // CLIENT CACHING is for the next command (or transaction)
	}
	if cmd.name != "MULTI" && cmd.name != "CN.TRACEPARENT" {
		c.traceparent = "" // as CLIENT CACHING: for the next command (or transaction)
	}
	return quit
}

func arityOK(arity, n int) bool {
	if arity >= 0 {
		return n == arity
	}
	return n >= -arity
}

func argsPreview(args [][]byte) string {
	var b strings.Builder
	for i, a := range args {
		if i == 4 || b.Len() > 128 {
			break
		}
		fmt.Fprintf(&b, "'%s' ", printable(a))
	}
	return b.String()
}

// tracks reports whether this command's keys are tracked: tracking is on
// and, in OPTIN mode, CLIENT CACHING YES came before it (OPTOUT: no
// CLIENT CACHING NO).
func (c *conn) tracks() bool {
	if !c.trackOn.Load() {
		return false // the common case, without the lock
	}
	c.wmu.Lock()
	on, optin, optout := c.tracking, c.optin, c.optout
	c.wmu.Unlock()
	switch {
	case !on:
		return false
	case optin:
		return c.caching > 0
	case optout:
		return c.caching >= 0
	}
	return true
}

// markPending marks the key strings of a read as being read, before the
// read: an invalidation that comes meanwhile is sent again after the reply.
func (c *conn) markPending(keys [][]byte) []string {
	out := make([]string, len(keys))
	c.wmu.Lock()
	if c.pending == nil {
		c.pending = make(map[string]int)
	}
	for i, k := range keys {
		out[i] = string(k)
		c.pending[out[i]]++
	}
	c.wmu.Unlock()
	return out
}

// admin reports whether the connection authenticated with the admin
// token (with no token configured nobody is the admin, as on HTTP).
func (c *conn) admin() bool { return c.s.cfg.Token != "" && c.authed }

// mayInvalidate answers -NOAUTH when the node has a token and the
// connection did not AUTH with it.
func (c *conn) mayInvalidate() bool {
	if c.s.cfg.Token != "" && !c.authed {
		c.out.err("NOAUTH Authentication required: invalidations need AUTH with the admin token")
		return false
	}
	return true
}

// result is one read.
type result struct {
	e     *worker.Entry
	st    worker.Status
	pol   worker.Policy
	q     httpapi.Query
	label string
	wkey  string
	err   string // the error reply, "" if none
}

// splitKey reads a key string: label?query, or /v1/cache/label?query.
func splitKey(key string) (label, query string) {
	key = strings.TrimPrefix(key, "/v1/cache/")
	label, query, _ = strings.Cut(key, "?")
	return label, query
}

// parsed is a key string read: its worker, arguments, policy and worker
// key.
type parsed struct {
	wk    *worker.Worker
	label string
	q     httpapi.Query
	pol   worker.Policy
	wkey  string // "" if the arguments make no key (the read says why)
}

// parseCache keeps the parsed form of the key strings read without
// overrides: parsing a query is a good part of a hit's cost, and clients
// read the same keys again and again. It is emptied when it is full.
type parseCache struct {
	mu sync.RWMutex
	m  map[string]*parsed // guarded by mu
}

const (
	parseCacheMax    = 8192
	parseCacheKeyMax = 1024 // longer key strings are parsed each time
)

func (pc *parseCache) get(key string) *parsed {
	pc.mu.RLock()
	p := pc.m[key]
	pc.mu.RUnlock()
	return p
}

func (pc *parseCache) put(key string, p *parsed) {
	pc.mu.Lock()
	if pc.m == nil || len(pc.m) >= parseCacheMax {
		pc.m = make(map[string]*parsed)
	}
	pc.m[key] = p
	pc.mu.Unlock()
}

// parse reads a key string; errs is the error reply, "" if none.
func (c *conn) parse(key string) (p *parsed, errs string) {
	label, raw := splitKey(key)
	wk, ok := c.s.node.Cache().Worker(label)
	if !ok {
		return nil, fmt.Sprintf("ERR unknown_worker no worker %q", label)
	}
	if p := c.s.parsed.get(key); p != nil && p.wk == wk {
		return p, ""
	}
	q, err := httpapi.ParseQuery(raw)
	if err != nil {
		return nil, "ERR bad_request " + err.Error()
	}
	pol, err := wk.PolicyFor(q.Overrides)
	if err != nil {
		return nil, "ERR bad_request " + err.Error()
	}
	if err := httpapi.CheckOverrides(wk, q.Overrides, pol, c.admin()); err != nil {
		return nil, "ERR override_not_allowed " + err.Error()
	}
	p = &parsed{wk: wk, label: label, q: q, pol: pol}
	p.wkey, _ = wk.Key(q.Args)
	// Only what does not depend on the connection (AUTH) is shared: reads
	// without overrides.
	if q.Overrides.IsZero() && q.Entity == nil && len(key) <= parseCacheKeyMax {
		c.s.parsed.put(key, p)
	}
	return p, ""
}

// read serves one read as GET /v1/cache/{label}?{query} does.
func (c *conn) read(key string, track bool) (r result) {
	p, errs := c.parse(key)
	if errs != "" {
		r.err = errs
		return r
	}
	wk, label, q, pol := p.wk, p.label, p.q, p.pol
	r.label, r.q, r.pol = label, q, pol
	if track && p.wkey != "" {
		r.wkey = p.wkey
		c.s.track.track(c.id, key, p.wkey, label, q.Args)
	}
	dctx := withDeadline(c.ctx, httpapi.ReadTimeout(wk, pol, c.s.cfg.Slack))
	defer dctx.release()
	var ctx context.Context = dctx
	if c.s.tracer != nil {
		if c.traceparent != "" {
			ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": c.traceparent})
		}
		var span trace.Span
		ctx, span = c.s.tracer.Start(ctx, "cachenode.resp.get", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("cachenode.label", label)))
		defer span.End()
	}
	e, st, err := c.s.node.Get(ctx, label, q.Args, q.Overrides)
	if err != nil {
		if c.s.tracer != nil {
			span := trace.SpanFromContext(ctx)
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		_, word := httpapi.StatusOf(err)
		msg := err.Error()
		if word == "origin_error" {
			msg = httpapi.FillMessage(label, err)
		}
		var busy *worker.OriginBusyError
		if errors.As(err, &busy) {
			msg += fmt.Sprintf(" (retry after %ds)", max(int64((busy.RetryAfter+time.Second-1)/time.Second), 1))
		}
		if word == "internal" || word == "origin_error" {
			c.s.log.Warn("read failed", "label", label, "err", err)
		}
		r.err = "ERR " + word + " " + msg
		return r
	}
	if st == worker.Hit || st == worker.Stale {
		c.s.stats.hits.Add(1)
	} else {
		c.s.stats.misses.Add(1)
	}
	r.e, r.st = e, st
	if r.wkey != "" {
		c.s.track.served(r.wkey, e, pol, c.s.node.Owner(e.Key))
	}
	return r
}

// writeValue writes a read's answer as GET does: the value, or the
// entity's JSON when the read asked for it (_entity=1, or the worker's
// cached_entity).
func (c *conn) writeValue(r result) {
	if r.err != "" {
		c.out.err(r.err)
		return
	}
	entity := r.pol.CachedEntity
	if r.q.Entity != nil {
		entity = *r.q.Entity
	}
	if entity {
		b, err := jsonMarshal(httpapi.EntityOf(r.e, c.ownerOf(r), r.st))
		if err != nil {
			c.out.err("ERR internal cannot encode the entity: " + err.Error())
			return
		}
		c.out.bulk(b)
		return
	}
	c.out.bulk(r.e.Value)
}

func (c *conn) ownerOf(r result) string {
	if r.st == worker.Fallback {
		return c.s.node.Owner(r.e.Key)
	}
	return r.e.Owner
}

func (c *conn) cmdGet(args [][]byte) bool {
	c.writeValue(c.read(string(args[1]), c.tracks()))
	return false
}

func (c *conn) cmdMGet(args [][]byte) bool {
	keys := args[1:]
	track := c.tracks()
	rs := make([]result, len(keys))
	if len(keys) == 1 {
		rs[0] = c.read(string(keys[0]), track)
	} else {
		var wg sync.WaitGroup
		for i, k := range keys {
			wg.Go(func() { rs[i] = c.read(string(k), track) })
		}
		wg.Wait()
	}
	total := 0
	for _, r := range rs {
		if r.e != nil {
			total += len(r.e.Value)
		}
	}
	if total > maxReply {
		c.out.err(fmt.Sprintf("ERR reply_too_large the %d values are %d bytes, over %d: ask for fewer keys at once", len(rs), total, maxReply))
		return false
	}
	c.out.array(len(rs))
	for _, r := range rs {
		c.writeValue(r)
	}
	return false
}

// maxReply bounds the values of one MGET reply, which is built in memory
// before it is written.
const maxReply = 64 << 20

func (c *conn) cmdEntity(args [][]byte) bool {
	r := c.read(string(args[1]), c.tracks())
	if r.err != "" {
		c.out.err(r.err)
		return false
	}
	ent := httpapi.EntityOf(r.e, c.ownerOf(r), r.st)
	if c.out.proto < 3 {
		b, err := jsonMarshal(ent)
		if err != nil {
			c.out.err("ERR internal cannot encode the entity: " + err.Error())
			return false
		}
		c.out.bulk(b)
		return false
	}
	m := kv{"label", ent.Label, "key", ent.Key, "owner", ent.Owner, "status", ent.Status,
		"created_at", ent.CreatedAt.Format(time.RFC3339Nano), "available_to", ent.AvailableTo.Format(time.RFC3339Nano)}
	if ent.RelevanceTo != nil {
		m = append(m, "relevance_to", ent.RelevanceTo.Format(time.RFC3339Nano))
	} else {
		m = append(m, "relevance_to", nil)
	}
	argsJSON, _ := jsonMarshal(ent.Args)
	m = append(m, "args", argsJSON, "content_type", ent.ContentType, "value", r.e.Value)
	c.out.value(m)
	return false
}

func (c *conn) cmdDel(args [][]byte) bool {
	if !c.mayInvalidate() {
		return false
	}
	n := 0
	for _, k := range args[1:] {
		label, raw := splitKey(string(k))
		if _, ok := c.s.node.Cache().Worker(label); !ok {
			c.out.err(fmt.Sprintf("ERR unknown_worker no worker %q", label))
			return false
		}
		q, err := httpapi.ParseQuery(raw)
		if err != nil {
			c.out.err("ERR bad_request " + err.Error())
			return false
		}
		req := invalidation.Request{Label: label, Args: q.Args}
		res, ok := c.applyInvalidation(req)
		if !ok {
			return false
		}
		if res.Keys > 0 || res.Queued != 0 {
			n++
		}
	}
	c.out.int(int64(n))
	return false
}

// applyInvalidation applies req; on an error it writes the error reply.
func (c *conn) applyInvalidation(req invalidation.Request) (invalidation.Result, bool) {
	if err := req.Validate(); err != nil {
		c.out.err("ERR bad_request " + err.Error())
		return invalidation.Result{}, false
	}
	res, err := c.s.inv.Invalidate(c.ctx, req)
	if err != nil {
		_, word := httpapi.StatusOf(err)
		if word == "internal" {
			c.s.log.Warn("invalidation failed", "err", err)
		}
		c.out.err("ERR " + word + " " + err.Error())
		return res, false
	}
	if len(res.Missing) > 0 {
		c.out.err(fmt.Sprintf("ERR invalidation_incomplete %s did not acknowledge in time; delivery goes on in the background (keys %d, nodes %d)",
			strings.Join(res.Missing, ", "), res.Keys, res.Nodes))
		return res, false
	}
	return res, true
}

func (c *conn) cmdInvalidate(args [][]byte) bool {
	if !c.mayInvalidate() {
		return false
	}
	req, err := httpapi.DecodeInvalidation(args[1])
	if err != nil {
		c.out.err("ERR bad_request " + err.Error())
		return false
	}
	res, ok := c.applyInvalidation(req)
	if !ok {
		return false
	}
	if res.Queued != 0 {
		c.out.value(kv{"queued", res.Queued})
		return false
	}
	c.out.value(kv{"keys", res.Keys, "nodes", res.Nodes})
	return false
}

func (c *conn) cmdPTTL(args [][]byte) bool {
	seconds := string(args[0]) == "TTL"
	label, raw := splitKey(string(args[1]))
	wk, ok := c.s.node.Cache().Worker(label)
	if !ok {
		c.out.err(fmt.Sprintf("ERR unknown_worker no worker %q", label))
		return false
	}
	q, err := httpapi.ParseQuery(raw)
	if err != nil {
		c.out.err("ERR bad_request " + err.Error())
		return false
	}
	pol, err := wk.PolicyFor(q.Overrides)
	if err != nil {
		c.out.err("ERR bad_request " + err.Error())
		return false
	}
	k, err := wk.Key(q.Args)
	if err != nil {
		c.out.err("ERR bad_request " + err.Error())
		return false
	}
	now := c.s.node.Cache().Clock().Now()
	e, ok := c.s.node.Cache().Lookup(k)
	if !ok || e.Expired(now) {
		c.out.int(-1) // none held: a read fills it
		return false
	}
	until := e.AvailableTo
	if r := e.CreatedAt.Add(pol.RelevanceExpires); pol.RelevanceInvalidation && r.Before(until) {
		until = r
	}
	d := max(until.Sub(now), 0)
	if seconds {
		c.out.int(int64(d / time.Second))
	} else {
		c.out.int(int64(d / time.Millisecond))
	}
	return false
}

func (c *conn) cmdAuth(args [][]byte) bool {
	token := args[len(args)-1]
	if len(args) > 3 {
		c.out.err("ERR syntax error")
		return false
	}
	if c.auth(token) {
		c.out.ok()
	}
	return false
}

// auth checks token, writes an error if it is not the admin token, and
// reports whether it was.
func (c *conn) auth(token []byte) bool {
	if c.s.cfg.Token == "" {
		c.out.err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		return false
	}
	if !c.s.authorized(token) {
		c.out.err("WRONGPASS invalid username-password pair or user is disabled.")
		return false
	}
	c.authed = true
	return true
}

func (c *conn) cmdHello(args [][]byte) bool {
	proto := int(c.proto.Load())
	i := 1
	if len(args) > 1 {
		v, err := strconv.Atoi(string(args[1]))
		if err != nil || (v != 2 && v != 3) {
			c.out.err("NOPROTO unsupported protocol version")
			return false
		}
		proto, i = v, 2
	}
	for ; i < len(args); i++ {
		switch strings.ToUpper(string(args[i])) {
		case "AUTH":
			if i+2 >= len(args) {
				c.out.err("ERR Syntax error in HELLO option 'auth'")
				return false
			}
			if !c.auth(args[i+2]) {
				return false
			}
			i += 2
		case "SETNAME":
			if i+1 >= len(args) {
				c.out.err("ERR Syntax error in HELLO option 'setname'")
				return false
			}
			if !validName(args[i+1]) {
				c.out.err("ERR Client names cannot contain spaces, newlines or special characters.")
				return false
			}
			c.setMeta(&c.name, string(args[i+1]))
			i++
		default:
			c.out.err(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", printable(args[i])))
			return false
		}
	}
	c.proto.Store(int32(proto))
	c.out.proto = proto
	c.out.value(kv{"server", "cachenode", "version", redisVersion, "proto", proto, "id", c.id,
		"mode", "standalone", "role", "master", "modules", []any{}, "node", c.s.node.Name()})
	return false
}

func validName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

func (c *conn) cmdPing(args [][]byte) bool {
	if c.out.proto < 3 && c.subs.Load() > 0 {
		msg := []byte{}
		if len(args) > 1 {
			msg = args[1]
		}
		c.out.array(2)
		c.out.bulkString("pong")
		c.out.bulk(msg)
		return false
	}
	switch len(args) {
	case 1:
		c.out.simple("PONG")
	case 2:
		c.out.bulk(args[1])
	default:
		c.out.err("ERR wrong number of arguments for 'ping' command")
	}
	return false
}

func (c *conn) cmdEcho(args [][]byte) bool { c.out.bulk(args[1]); return false }

func (c *conn) cmdTraceparent(args [][]byte) bool {
	tp := string(args[1])
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		c.out.err("ERR bad_request not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")
		return false
	}
	c.traceparent = tp
	c.out.ok()
	return false
}

func (c *conn) cmdQuit(args [][]byte) bool { c.out.ok(); return true }

func (c *conn) cmdSelect(args [][]byte) bool {
	if string(args[1]) != "0" {
		c.out.err("ERR DB index is out of range (cachenode has database 0 only)")
		return false
	}
	c.out.ok()
	return false
}

func (c *conn) cmdClient(args [][]byte) bool {
	sub := strings.ToUpper(string(args[1]))
	switch {
	case sub == "ID" && len(args) == 2:
		c.out.int(c.id)
	case sub == "GETNAME" && len(args) == 2:
		if c.name == "" {
			c.out.null()
		} else {
			c.out.bulkString(c.name)
		}
	case sub == "SETNAME" && len(args) == 3:
		if !validName(args[2]) {
			c.out.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return false
		}
		c.setMeta(&c.name, string(args[2]))
		c.out.ok()
	case sub == "SETINFO" && len(args) == 4:
		switch strings.ToUpper(string(args[2])) {
		case "LIB-NAME":
			c.setMeta(&c.libName, string(args[3]))
		case "LIB-VER":
			c.setMeta(&c.libVer, string(args[3]))
		default:
			c.out.err("ERR Unrecognized option '" + printable(args[2]) + "'")
			return false
		}
		c.out.ok()
	case sub == "INFO" && len(args) == 2:
		c.out.verbatim(c.info(true) + "\n")
	case sub == "LIST" && len(args) == 2:
		// Other clients' addresses and names are the admin's to see.
		if c.s.cfg.Token != "" && !c.authed {
			c.out.err("NOAUTH Authentication required: CLIENT LIST needs AUTH with the admin token")
			return false
		}
		var b strings.Builder
		for _, cc := range c.s.conns() {
			b.WriteString(cc.info(cc == c))
			b.WriteByte('\n')
		}
		c.out.verbatim(b.String())
	case sub == "TRACKING" && len(args) >= 3:
		c.cmdTracking(args[2:])
	case sub == "CACHING" && len(args) == 3:
		c.wmu.Lock()
		on, optin, optout := c.tracking, c.optin, c.optout
		c.wmu.Unlock()
		v := strings.ToUpper(string(args[2]))
		switch {
		case !on || (!optin && !optout):
			c.out.err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
		case v == "YES" && optin:
			c.caching = 1
			c.out.ok()
		case v == "NO" && optout:
			c.caching = -1
			c.out.ok()
		case v == "YES" || v == "NO":
			c.out.err("ERR CLIENT CACHING " + v + " is only valid when tracking is enabled in " + map[bool]string{true: "OPTIN", false: "OPTOUT"}[v == "YES"] + " mode.")
		default:
			c.out.err("ERR syntax error")
		}
	case sub == "GETREDIR" && len(args) == 2:
		c.wmu.Lock()
		on, r := c.tracking, c.redirect
		c.wmu.Unlock()
		if !on {
			c.out.int(-1)
		} else {
			c.out.int(r)
		}
	case (sub == "NO-EVICT" || sub == "NO-TOUCH") && len(args) == 3:
		c.out.ok() // nothing a client does evicts or touches here
	default:
		c.out.err(fmt.Sprintf("ERR unknown subcommand or wrong number of arguments for '%s'. Try CLIENT HELP.", printable(args[1])))
	}
	return false
}

// setMeta sets the name or a library field of the connection, which
// other connections' CLIENT LIST read under wmu.
func (c *conn) setMeta(field *string, v string) {
	c.wmu.Lock()
	*field = v
	c.wmu.Unlock()
}

// info is the CLIENT INFO line of c; self: c is the caller's connection
// (the transaction's state is only known to its own goroutine).
func (c *conn) info(self bool) string {
	c.wmu.Lock()
	name, libName, libVer := c.name, c.libName, c.libVer
	flags := "N"
	if c.tracking {
		flags = "t"
		if c.redirect != 0 {
			flags += "R"
		}
	}
	if len(c.subscribed) > 0 {
		flags += "P"
	}
	sub, redir := len(c.subscribed), int64(-1)
	if c.tracking {
		redir = c.redirect
	}
	c.wmu.Unlock()
	multi := -1
	if self {
		multi = c.multiCount()
	}
	cmd := "NULL"
	if p := c.lastCmd.Load(); p != nil {
		cmd = strings.ToLower(*p)
	}
	now := time.Now()
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=-1 name=%s age=%d idle=%d flags=%s db=0 sub=%d psub=0 ssub=0 multi=%d watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s user=default redir=%d resp=%d lib-name=%s lib-ver=%s",
		c.id, c.nc.RemoteAddr(), c.nc.LocalAddr(), name, int(now.Sub(c.created)/time.Second),
		int(now.Sub(time.Unix(0, c.lastActive.Load()))/time.Second), flags, sub, multi, cmd, redir, c.proto.Load(), libName, libVer)
}

func (c *conn) multiCount() int {
	if !c.inMulti {
		return -1
	}
	return len(c.queued)
}

// cmdTracking is CLIENT TRACKING ON|OFF [REDIRECT id] [OPTIN] [OPTOUT]
// [NOLOOP]. BCAST and PREFIX are not supported: a node does not see the
// keys of the others as they change.
func (c *conn) cmdTracking(args [][]byte) {
	mode := strings.ToUpper(string(args[0]))
	if mode != "ON" && mode != "OFF" {
		c.out.err("ERR syntax error")
		return
	}
	var redirect int64
	optin, optout := false, false
	for i := 1; i < len(args); i++ {
		switch strings.ToUpper(string(args[i])) {
		case "REDIRECT":
			if i+1 >= len(args) {
				c.out.err("ERR syntax error")
				return
			}
			id, err := strconv.ParseInt(string(args[i+1]), 10, 64)
			if err != nil {
				c.out.err("ERR value is not an integer or out of range")
				return
			}
			if id != c.id && c.s.conn(id) == nil {
				c.out.err("ERR The client ID you want redirect to does not exist")
				return
			}
			if id == c.id {
				id = 0
			}
			redirect = id
			i++
		case "OPTIN":
			optin = true
		case "OPTOUT":
			optout = true
		case "NOLOOP":
			// Accepted: no command of a client writes a key, so there is no
			// loop of its own writes to leave out.
		case "BCAST", "PREFIX":
			c.out.err("ERR cachenode supports the default tracking mode (optionally OPTIN or OPTOUT), not BCAST or PREFIX")
			return
		default:
			c.out.err("ERR syntax error")
			return
		}
	}
	if optin && optout {
		c.out.err("ERR You can't use both OPTIN and OPTOUT")
		return
	}
	if mode == "OFF" {
		c.wmu.Lock()
		c.tracking, c.optin, c.optout, c.redirect = false, false, false, 0
		c.trackOn.Store(false)
		c.wmu.Unlock()
		c.s.track.forget(c.id)
		c.out.ok()
		return
	}
	if redirect == 0 && c.proto.Load() < 3 {
		c.out.err("ERR CLIENT TRACKING in RESP2 needs REDIRECT to a connection subscribed to __redis__:invalidate (or HELLO 3 first)")
		return
	}
	c.wmu.Lock()
	c.tracking, c.optin, c.optout, c.redirect = true, optin, optout, redirect
	c.trackOn.Store(true)
	c.wmu.Unlock()
	c.out.ok()
}

func (c *conn) cmdSubscribe(args [][]byte) bool {
	for _, ch := range args[1:] {
		c.setSubscribed(ch, true)
	}
	return false
}

// setSubscribed subscribes the connection to ch or unsubscribes it, and
// answers as Redis does: the kind, the channel and the count left.
func (c *conn) setSubscribed(ch []byte, on bool) {
	kind := "unsubscribe"
	c.wmu.Lock()
	if on {
		kind = "subscribe"
		if c.subscribed == nil {
			c.subscribed = make(map[string]struct{})
		}
		c.subscribed[string(ch)] = struct{}{}
	} else {
		delete(c.subscribed, string(ch))
	}
	n := len(c.subscribed)
	c.subs.Store(int32(n))
	c.wmu.Unlock()
	c.out.push(3)
	c.out.bulkString(kind)
	c.out.bulk(ch)
	c.out.int(int64(n))
}

func (c *conn) cmdUnsubscribe(args [][]byte) bool {
	chans := args[1:]
	c.wmu.Lock()
	if len(chans) == 0 {
		for ch := range c.subscribed {
			chans = append(chans, []byte(ch))
		}
	}
	c.wmu.Unlock()
	if len(chans) == 0 {
		c.out.push(3)
		c.out.bulkString("unsubscribe")
		c.out.null()
		c.out.int(0)
		return false
	}
	for _, ch := range chans {
		c.setSubscribed(ch, false)
	}
	return false
}

func (c *conn) cmdMulti(args [][]byte) bool {
	if c.inMulti {
		c.out.err("ERR MULTI calls can not be nested")
		return false
	}
	c.inMulti, c.queued = true, nil
	c.out.ok()
	return false
}

// cmdExec runs the queued commands; their replies are one array, written
// at once (no invalidation message can come between them).
func (c *conn) cmdExec(args [][]byte) bool {
	if !c.inMulti {
		c.out.err("ERR EXEC without MULTI")
		return false
	}
	queued := c.queued
	c.inMulti, c.queued = false, nil
	c.out.array(len(queued))
	var tracked []string
	for _, q := range queued {
		cmd := c.s.cmds[string(q[0])]
		if cmd.readKeys && c.tracks() {
			tracked = append(tracked, c.markPending(q[1:])...)
		}
		if cmd.name == "EXEC" || cmd.name == "MULTI" {
			c.out.err("ERR " + cmd.name + " inside a transaction")
			continue
		}
		cmd.run(c, q)
	}
	// exec's emit (its caller) gets no keys for EXEC: release them here,
	// after the array is out.
	c.emitTracked(tracked)
	return false
}

// emitTracked is emit for the tracked keys of a transaction: the
// transaction's reply is moved out first.
func (c *conn) emitTracked(tracked []string) {
	c.emit(tracked)
	c.out.buf = c.out.buf[:0]
}

func (c *conn) cmdDiscard(args [][]byte) bool {
	if !c.inMulti {
		c.out.err("ERR DISCARD without MULTI")
		return false
	}
	c.inMulti, c.queued = false, nil
	c.out.ok()
	return false
}

func (c *conn) cmdCommand(args [][]byte) bool {
	sub := ""
	if len(args) > 1 {
		sub = strings.ToUpper(string(args[1]))
	}
	names := c.s.cmdNames
	switch sub {
	case "":
		c.out.array(len(names))
		for _, n := range names {
			c.commandInfo(c.s.cmds[n])
		}
	case "COUNT":
		c.out.int(int64(len(names)))
	case "INFO":
		if len(args) > 2 {
			names = nil
			for _, a := range args[2:] {
				names = append(names, strings.ToUpper(string(a)))
			}
		}
		c.out.array(len(names))
		for _, n := range names {
			if cmd := c.s.cmds[n]; cmd != nil {
				c.commandInfo(cmd)
			} else {
				c.out.nullArray()
			}
		}
	case "DOCS":
		if len(args) > 2 {
			names = nil
			for _, a := range args[2:] {
				if c.s.cmds[strings.ToUpper(string(a))] != nil {
					names = append(names, strings.ToUpper(string(a)))
				}
			}
		}
		c.out.mapHeader(len(names))
		for _, n := range names {
			cmd := c.s.cmds[n]
			c.out.bulkString(strings.ToLower(n))
			c.out.value(kv{"summary", cmd.summary, "since", "1.0.0", "group", cmd.group, "complexity", "O(1)"})
		}
	default:
		c.out.err(fmt.Sprintf("ERR unknown subcommand '%s'. Try COMMAND HELP.", printable(args[1])))
	}
	return false
}

func (c *conn) commandInfo(cmd *command) {
	c.out.array(10)
	c.out.bulkString(strings.ToLower(cmd.name))
	c.out.int(int64(cmd.arity))
	c.out.array(len(cmd.flags))
	for _, f := range cmd.flags {
		c.out.simple(f)
	}
	c.out.int(int64(cmd.first))
	c.out.int(int64(cmd.last))
	c.out.int(int64(cmd.step))
	c.out.array(0) // ACL categories
	c.out.array(0) // tips
	c.out.array(0) // key specs
	c.out.array(0) // subcommands
}

func (c *conn) cmdInfo(args [][]byte) bool {
	want := map[string]bool{}
	for _, a := range args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	s := c.s
	if all || want["server"] {
		up := time.Since(s.started)
		port := ""
		if a, ok := c.nc.LocalAddr().(interface{ String() string }); ok {
			_, port, _ = strings.Cut(a.String(), "]:")
			if port == "" {
				if i := strings.LastIndexByte(a.String(), ':'); i >= 0 {
					port = a.String()[i+1:]
				}
			}
		}
		fmt.Fprintf(&b, "# Server\r\nredis_version:%s\r\nserver_name:cachenode\r\ncachenode_node:%s\r\nredis_mode:standalone\r\narch_bits:64\r\nprocess_id:%d\r\ntcp_port:%s\r\nuptime_in_seconds:%d\r\nuptime_in_days:%d\r\n\r\n",
			redisVersion, s.node.Name(), os.Getpid(), port, int(up/time.Second), int(up/(24*time.Hour)))
	}
	conns := s.conns()
	tracking, pubsub := 0, 0
	for _, cc := range conns {
		cc.wmu.Lock()
		if cc.tracking {
			tracking++
		}
		if len(cc.subscribed) > 0 {
			pubsub++
		}
		cc.wmu.Unlock()
	}
	if all || want["clients"] {
		fmt.Fprintf(&b, "# Clients\r\nconnected_clients:%d\r\nmaxclients:%d\r\ntracking_clients:%d\r\npubsub_clients:%d\r\n\r\n",
			len(conns), s.cfg.MaxConns, tracking, pubsub)
	}
	var ws worker.Stats
	for _, w := range s.node.Cache().Workers() {
		st := w.Stats()
		ws.Hits += st.Hits + st.StaleHits
		ws.Misses += st.Misses
		ws.Fills += st.Fills
		ws.FillErrors += st.FillErrors
		ws.PeerFetches += st.PeerFetches
		ws.Invalidations += st.Invalidations
	}
	if all || want["stats"] {
		fmt.Fprintf(&b, "# Stats\r\ntotal_connections_received:%d\r\ntotal_commands_processed:%d\r\nrejected_connections:%d\r\nkeyspace_hits:%d\r\nkeyspace_misses:%d\r\ntotal_error_replies:%d\r\ntracking_total_keys:%d\r\ntracking_invalidated_keys:%d\r\ncachenode_node_hits:%d\r\ncachenode_node_misses:%d\r\ncachenode_fills:%d\r\ncachenode_fill_errors:%d\r\ncachenode_peer_fetches:%d\r\ncachenode_invalidations:%d\r\n\r\n",
			s.stats.connections.Load(), s.stats.commands.Load(), s.stats.rejected.Load(), s.stats.hits.Load(), s.stats.misses.Load(),
			s.stats.errors.Load(), s.track.len(), s.stats.trackingPushes.Load(),
			ws.Hits, ws.Misses, ws.Fills, ws.FillErrors, ws.PeerFetches, ws.Invalidations)
	}
	if all || want["keyspace"] {
		n := s.node.Cache().Len()
		fmt.Fprintf(&b, "# Keyspace\r\n")
		if n > 0 {
			fmt.Fprintf(&b, "db0:keys=%d,expires=%d,avg_ttl=0\r\n", n, n)
		}
		b.WriteString("\r\n")
	}
	c.out.verbatim(strings.TrimSuffix(b.String(), "\r\n"))
	return false
}
