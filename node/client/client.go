// Package client is the Go client of a dedicated cachenode cluster: it reads
// the ring from a node's /admin/ring and sends each read straight to the
// owner of its key, so that a read costs one HTTP round trip and no peer
// hop. It re-reads the ring when an answer shows another ring version, when
// a request fails, and every RefreshInterval.
//
// Keys are computed as the nodes compute them: arguments travel as query
// strings, so the client turns every argument into its text form (a list
// into repeated parameters) before worker.KeyOf, and the owner is found with
// ring.New over the alive members and the cluster's ring configuration.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cachenode/cachenode/invalidation"
	"github.com/cachenode/cachenode/ring"
	"github.com/cachenode/cachenode/worker"
)

// Config configures a Client. New copies it.
type Config struct {
	// Nodes are HTTP addresses of members of the cluster (HOST:PORT or
	// http(s) URLs): the ring is read from the first that answers, and they
	// are the fallback targets when no member is known. Required.
	Nodes []string
	// Token is the cluster's admin token: /admin/ring and POST
	// /v1/invalidate need it when the nodes run with --admin-token-file,
	// and so do the overrides IsConcurrent=false, DelayInvalidation and
	// DelayCountdown of GetWith (unless the worker has overrides: open);
	// reads send it too. Default "".
	Token string
	// HTTPClient sends the requests. Default: a client of its own with
	// keep-alive connections.
	HTTPClient *http.Client
	// RefreshInterval is how often the ring is re-read even when nothing
	// suggests it changed. Default 10s.
	RefreshInterval time.Duration
	// MinRefreshInterval bounds how often the ring is re-read when answers
	// carry another ring version (members may disagree for a moment while
	// the cluster converges). Default 200ms.
	MinRefreshInterval time.Duration
}

// Client reads from and invalidates a cachenode cluster. It is safe for
// concurrent use. Close waits for a ring refresh in flight.
type Client struct {
	cfg    Config
	http   *http.Client
	seeds  []string // base URLs
	scheme string

	mu struct {
		sync.Mutex
		view       *view     // the current ring; guarded by mu
		loadedAt   time.Time // guarded by mu
		refreshing bool      // a background refresh runs; guarded by mu
		closed     bool      // guarded by mu
	}
	wg sync.WaitGroup
}

// view is an immutable snapshot of the cluster as one node reported it.
type view struct {
	version uint64
	ring    *ring.Ring
	table   []string          // owner by partition, used when ring disagrees
	bases   map[string]string // alive member name → base URL
	names   []string          // alive members with an HTTP address, sorted
}

// Errors of the client.
var (
	// ErrNoNodes is returned when no node of the cluster could be reached.
	ErrNoNodes = errors.New("client: no node answered")
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("client: closed")
)

// Error is an error answer of the cluster, with the contract's code
// (unknown_worker, bad_request, origin_error, fill_timeout, ...).
type Error struct {
	StatusCode int
	Code       string
	Message    string
	Node       string
}

func (e *Error) Error() string {
	return fmt.Sprintf("cachenode %s: %d %s: %s", e.Node, e.StatusCode, e.Code, e.Message)
}

// New returns a client; it does not touch the network (the ring is read on
// first use, or by Refresh).
func New(cfg Config) (*Client, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("client: Nodes is required")
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient, scheme: "http"}
	for _, n := range cfg.Nodes {
		base := n
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
		u, err := url.Parse(base)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("client: node %q is not HOST:PORT or an http(s) URL", n)
		}
		c.scheme = u.Scheme
		c.seeds = append(c.seeds, u.Scheme+"://"+u.Host)
	}
	if c.cfg.RefreshInterval <= 0 {
		c.cfg.RefreshInterval = 10 * time.Second
	}
	if c.cfg.MinRefreshInterval <= 0 {
		c.cfg.MinRefreshInterval = 200 * time.Millisecond
	}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return c, nil
}

// Close stops the client: it waits for a background ring refresh and makes
// later calls return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.mu.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Refresh reads the ring now, from the members known or the configured
// nodes, whichever answers first.
func (c *Client) Refresh(ctx context.Context) error {
	c.mu.Lock()
	closed := c.mu.closed
	v := c.mu.view
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	var targets []string
	if v != nil {
		for _, n := range v.names {
			targets = append(targets, v.bases[n])
		}
	}
	targets = append(targets, c.seeds...)
	var errs []error
	seen := map[string]bool{}
	for _, t := range targets {
		if seen[t] {
			continue
		}
		seen[t] = true
		nv, err := c.fetchView(ctx, t)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c.mu.Lock()
		c.mu.view, c.mu.loadedAt = nv, time.Now()
		c.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNoNodes, errors.Join(errs...))
}

func (c *Client) fetchView(ctx context.Context, base string) (*view, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/ring", nil)
	if err != nil {
		return nil, err
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorOf(resp, body, base)
	}
	var info RingInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("client: %s/admin/ring: %w", base, err)
	}
	if !info.Ready || info.PartitionCount == 0 {
		return nil, fmt.Errorf("client: %s is not ready", base)
	}
	v := &view{version: info.Version, table: info.Partitions, bases: map[string]string{}}
	var alive []string
	for _, m := range info.Members {
		if m.State != "alive" {
			continue
		}
		alive = append(alive, m.Name)
		if m.HTTP != "" {
			v.bases[m.Name] = c.scheme + "://" + m.HTTP
			v.names = append(v.names, m.Name)
		}
	}
	slices.Sort(v.names)
	r, err := ring.New(info.Ring.Config(), alive)
	if err != nil {
		return nil, fmt.Errorf("client: ring of %s: %w", base, err)
	}
	if r.Version() == info.Version {
		v.ring = r
	}
	// Otherwise this client was built with another version of the ring
	// package than the node: the node's partition table is the truth.
	if v.ring == nil && len(v.table) != r.PartitionCount() {
		return nil, fmt.Errorf("client: %s sent %d partitions for a ring of %d", base, len(v.table), r.PartitionCount())
	}
	if v.ring == nil {
		v.ring = r // used for Partition only
	}
	return v, nil
}

func (c *Client) authorize(req *http.Request) {
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
}

// current returns the view, reading it first if there is none, and starts
// a background refresh when it is old.
func (c *Client) current(ctx context.Context) (*view, error) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	v, age := c.mu.view, time.Since(c.mu.loadedAt)
	c.mu.Unlock()
	if v == nil {
		if err := c.Refresh(ctx); err != nil {
			return nil, err
		}
		c.mu.Lock()
		v = c.mu.view
		c.mu.Unlock()
		return v, nil
	}
	if age > c.cfg.RefreshInterval {
		c.refreshSoon()
	}
	return v, nil
}

// refreshSoon re-reads the ring in the background, at most once at a time
// and at most every MinRefreshInterval.
func (c *Client) refreshSoon() {
	c.mu.Lock()
	if c.mu.closed || c.mu.refreshing || time.Since(c.mu.loadedAt) < c.cfg.MinRefreshInterval {
		c.mu.Unlock()
		return
	}
	c.mu.refreshing = true
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Refresh(ctx) // a failure leaves the old view; the next call tries again
		c.mu.Lock()
		c.mu.refreshing = false
		c.mu.Unlock()
	}()
}

// owner returns the owner of key in v.
func (v *view) owner(key string) string {
	if v.ring.Version() == v.version {
		o, _ := v.ring.Owner(key)
		return o
	}
	return v.table[v.ring.Partition(key)]
}

// Response is a value read from the cluster.
type Response struct {
	// Value is the value's bytes, as the origin sent them.
	Value       []byte
	ContentType string
	// Status is hit, miss, stale or fallback (X-Cache).
	Status string
	// Key is the canonical key (X-Cache-Key); Owner the node that owns it.
	Key, Owner string
	// Node is the node that answered.
	Node string
	// Age is how long ago the value was built.
	Age time.Duration
}

// Args are the arguments of a read: strings, booleans, integers, floats,
// nil, or slices of these for lists. They travel as query parameters, so a
// worker's origin receives them as text; a list of one element is the same
// argument as that element alone.
type Args map[string]any

// Key returns the key the cluster uses for label and args.
func Key(label string, args Args) (string, error) {
	norm, _, err := normalize(args)
	if err != nil {
		return "", err
	}
	return worker.KeyOf(label, norm)
}

// normalize turns args into what a node parses from the query string:
// strings, and lists (two or more values) of strings.
func normalize(args Args) (worker.Args, url.Values, error) {
	norm := worker.Args{}
	q := url.Values{}
	for name, v := range args {
		if name == "" || strings.HasPrefix(name, "_") {
			return nil, nil, fmt.Errorf("%w: argument name %q (names starting with _ are overrides)", worker.ErrBadArgs, name)
		}
		vals, err := texts(v)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", worker.ErrBadArgs, name, err)
		}
		switch len(vals) {
		case 0:
			continue
		case 1:
			norm[name] = vals[0]
		default:
			l := make([]any, len(vals))
			for i, s := range vals {
				l[i] = s
			}
			norm[name] = l
		}
		q[name] = vals
	}
	return norm, q, nil
}

func texts(v any) ([]string, error) {
	switch x := v.(type) {
	case []string:
		return slices.Clone(x), nil
	case []any:
		var out []string
		for _, e := range x {
			s, err := texts(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case []int:
		out := make([]string, len(x))
		for i, n := range x {
			out[i] = strconv.Itoa(n)
		}
		return out, nil
	case string:
		return []string{x}, nil
	case nil:
		return []string{""}, nil
	case bool:
		return []string{strconv.FormatBool(x)}, nil
	case int:
		return []string{strconv.Itoa(x)}, nil
	case int64:
		return []string{strconv.FormatInt(x, 10)}, nil
	case int32:
		return []string{strconv.FormatInt(int64(x), 10)}, nil
	case uint:
		return []string{strconv.FormatUint(uint64(x), 10)}, nil
	case uint64:
		return []string{strconv.FormatUint(x, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(x, 'g', -1, 64)}, nil
	case float32:
		return []string{strconv.FormatFloat(float64(x), 'g', -1, 32)}, nil
	}
	return nil, fmt.Errorf("type %T cannot be a query parameter", v)
}

// overrides writes per-call settings as the _ parameters.
func overrides(q url.Values, ov worker.Settings) {
	dur := func(name string, d time.Duration) {
		if d > 0 {
			q.Set(name, d.String())
		}
	}
	boolean := func(name string, b *bool) {
		if b != nil {
			q.Set(name, strconv.FormatBool(*b))
		}
	}
	dur("_expires", ov.Expires)
	dur("_tick", ov.Tick)
	dur("_relevance_expires", ov.RelevanceExpires)
	if ov.DelayCountdown != nil {
		q.Set("_delay_countdown", ov.DelayCountdown.String())
	}
	if ov.TickAmount != nil {
		q.Set("_tick_amount", strconv.Itoa(*ov.TickAmount))
	}
	boolean("_is_concurrent", ov.IsConcurrent)
	boolean("_relevance_invalidation", ov.RelevanceInvalidation)
	boolean("_delay_invalidation", ov.DelayInvalidation)
}

// Get reads the value of label for args from the key's owner.
func (c *Client) Get(ctx context.Context, label string, args Args) (*Response, error) {
	return c.GetWith(ctx, label, args, worker.Settings{})
}

// GetWith is Get with per-call overrides (expires, tick, tick_amount,
// is_concurrent, relevance_*, delay_*). Errors: *Error for an error answer
// of the cluster, ErrNoNodes when no node could be reached, the context's
// error, or worker.ErrBadArgs for an argument that cannot be sent.
func (c *Client) GetWith(ctx context.Context, label string, args Args, ov worker.Settings) (*Response, error) {
	if err := worker.ValidLabel(label); err != nil {
		return nil, fmt.Errorf("%w: %v", worker.ErrBadArgs, err)
	}
	norm, q, err := normalize(args)
	if err != nil {
		return nil, err
	}
	key, err := worker.KeyOf(label, norm)
	if err != nil {
		return nil, err
	}
	overrides(q, ov)
	path := "/v1/cache/" + url.PathEscape(label) + "?" + q.Encode()
	v, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	// The owner first, then the other members (any of them asks the
	// owner), then the configured nodes.
	var targets []string
	if b, ok := v.bases[v.owner(key)]; ok {
		targets = append(targets, b)
	}
	for _, n := range v.names {
		targets = append(targets, v.bases[n])
	}
	targets = append(targets, c.seeds...)
	seen := map[string]bool{}
	var errs []error
	for _, base := range targets {
		if seen[base] {
			continue
		}
		seen[base] = true
		resp, err := c.get(ctx, base, path, v.version)
		if err == nil {
			return resp, nil
		}
		var ae *Error
		if errors.As(err, &ae) && ae.StatusCode != http.StatusServiceUnavailable {
			return nil, err // a real answer: unknown worker, origin error, ...
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// That node is gone or shutting down: the ring is stale.
		errs = append(errs, err)
		c.refreshSoon()
		if len(seen) >= 3 {
			break
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrNoNodes, errors.Join(errs...))
}

func (c *Client) get(ctx context.Context, base, path string, version uint64) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	c.authorize(req) // the overrides reserved to the admin need it
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if rv := resp.Header.Get("X-Cache-Ring"); rv != "" && rv != strconv.FormatUint(version, 10) {
		c.refreshSoon()
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorOf(resp, body, base)
	}
	age, _ := strconv.Atoi(resp.Header.Get("Age"))
	return &Response{Value: body, ContentType: resp.Header.Get("Content-Type"), Status: resp.Header.Get("X-Cache"),
		Key: resp.Header.Get("X-Cache-Key"), Owner: resp.Header.Get("X-Cache-Owner"), Node: resp.Header.Get("X-Cache-Node"),
		Age: time.Duration(age) * time.Second}, nil
}

func errorOf(resp *http.Response, body []byte, base string) error {
	e := &Error{StatusCode: resp.StatusCode, Node: base}
	var he struct{ Error, Code string }
	if json.Unmarshal(body, &he) == nil && he.Code != "" {
		e.Code, e.Message = he.Code, he.Error
	} else {
		e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), resp.Status
	}
	return e
}

// Result is the answer of an invalidation.
type Result struct {
	// Keys and Nodes: how many keys were refreshed or dropped, on how many
	// members (for an invalidation applied at once).
	Keys  int `json:"keys"`
	Nodes int `json:"nodes"`
	// Queued is the ID of a delayed invalidation, 0 otherwise.
	Queued uint64 `json:"queued"`
}

// Invalidate sends an invalidation to the cluster (to any member: it
// reaches every live member). Errors: *Error for an error answer (400,
// 404, 504 invalidation_incomplete), ErrNoNodes, the context's error.
func (c *Client) Invalidate(ctx context.Context, req invalidation.Request) (Result, error) {
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Result{}, err
	}
	v, err := c.current(ctx)
	if err != nil {
		return Result{}, err
	}
	targets := append([]string{}, c.seeds...)
	for _, n := range v.names {
		targets = append([]string{v.bases[n]}, targets...)
	}
	var errs []error
	for i, base := range targets {
		if i == 3 {
			break
		}
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/invalidate", strings.NewReader(string(body)))
		if err != nil {
			return Result{}, err
		}
		hreq.Header.Set("Content-Type", "application/json")
		c.authorize(hreq)
		resp, err := c.http.Do(hreq)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			errs = append(errs, err)
			c.refreshSoon()
			continue
		}
		rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return Result{}, err
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
			return Result{}, errorOf(resp, rb, base)
		}
		var res Result
		if err := json.Unmarshal(rb, &res); err != nil {
			return Result{}, fmt.Errorf("client: bad answer from %s: %w", base, err)
		}
		return res, nil
	}
	return Result{}, fmt.Errorf("%w: %w", ErrNoNodes, errors.Join(errs...))
}

// Owner returns the name of the member that owns the key of label and
// args in the client's view of the ring.
func (c *Client) Owner(ctx context.Context, label string, args Args) (string, error) {
	key, err := Key(label, args)
	if err != nil {
		return "", err
	}
	v, err := c.current(ctx)
	if err != nil {
		return "", err
	}
	return v.owner(key), nil
}
