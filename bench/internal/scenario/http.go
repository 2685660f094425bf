package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/node/httpapi"
)

// HTTPHits measures cached reads through the HTTP API (GET /v1/cache) over
// keep-alive connections: against an embedded node whose API this process
// serves on loopback, or against running cachenode processes.
type HTTPHits struct {
	opts    Options
	system  string
	urls    []string   // one per node, each ending in /v1/cache/LABEL?id=
	ids     [][]string // per node: the ids it owns
	client  *http.Client
	c       *Cluster       // embedded only
	servers []*http.Server // embedded only
}

// NewHTTPHitsEmbedded starts a cluster, serves node 0's HTTP API on a
// loopback port and fills opts.Keys keys that node 0 owns, so that every
// read is a hit on the owner through HTTP.
func NewHTTPHitsEmbedded(ctx context.Context, opts Options) (*HTTPHits, error) {
	opts = opts.withDefaults()
	c, err := StartCluster(ctx, ClusterConfig{Size: opts.Nodes, Membership: SteadyMembership(), ValueSize: opts.ValueSize, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	h := &HTTPHits{opts: opts, system: "cachenode", c: c}
	api, err := httpapi.New(httpapi.Config{Node: c.Nodes[0], Logger: opts.Logger})
	if err != nil {
		c.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.Close()
		return nil, err
	}
	srv := api.HTTPServer(ln.Addr().String())
	h.servers = append(h.servers, srv)
	go srv.Serve(ln)
	self := c.Nodes[0].Name()
	args, err := KeysOwnedBy(c.Nodes[0], "k", opts.Keys, func(owner string) bool { return owner == self })
	if err != nil {
		h.Close()
		return nil, err
	}
	h.urls = []string{"http://" + ln.Addr().String() + "/v1/cache/" + Label + "?id="}
	h.ids = make([][]string, 1)
	for _, a := range args {
		h.ids[0] = append(h.ids[0], a["id"].(string))
	}
	h.client = keepAliveClient(opts.Callers)
	if err := h.fill(ctx); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// NewHTTPHits reads keys of the worker label (argument "id") from running
// nodes at addrs (HOST:PORT of their HTTP API), caller c from
// addrs[c mod len(addrs)]. Keys k0, k1, ... are read once on the first
// node, which fills them, and each node is then asked only the keys it owns
// (X-Cache-Owner), so that every measured read is a hit on the owner, as in
// the embedded HTTP scenario.
func NewHTTPHits(ctx context.Context, opts Options, addrs []string, label string) (*HTTPHits, error) {
	opts = opts.withDefaults()
	if len(addrs) == 0 {
		return nil, errors.New("scenario: no HTTP address")
	}
	h := &HTTPHits{opts: opts, system: "cachenode-http"}
	for _, a := range addrs {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		h.urls = append(h.urls, strings.TrimSuffix(a, "/")+"/v1/cache/"+url.PathEscape(label)+"?id=")
	}
	h.client = keepAliveClient(opts.Callers)
	names := make(map[string]int) // node name → index in urls
	for i, u := range h.urls {
		a, err := h.get(ctx, u+"k0")
		if err != nil {
			return nil, fmt.Errorf("scenario: %w", err)
		}
		names[a.node] = i
	}
	h.ids = make([][]string, len(h.urls))
	for i := range opts.Keys {
		id := fmt.Sprintf("k%d", i)
		a, err := h.get(ctx, h.urls[0]+id)
		if err != nil {
			return nil, fmt.Errorf("scenario: fill: %w", err)
		}
		j, ok := names[a.owner]
		if !ok {
			return nil, fmt.Errorf("scenario: %s is owned by %q, not one of the nodes given", id, a.owner)
		}
		h.ids[j] = append(h.ids[j], id)
	}
	for i, ids := range h.ids {
		if len(ids) == 0 {
			return nil, fmt.Errorf("scenario: %s owns none of %d keys", addrs[i], opts.Keys)
		}
	}
	if err := h.fill(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

func keepAliveClient(callers int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        4 * callers,
			MaxIdleConnsPerHost: 2 * callers,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// fill reads every node's keys on it once.
func (h *HTTPHits) fill(ctx context.Context) error {
	for i, u := range h.urls {
		for _, id := range h.ids[i] {
			if _, err := h.get(ctx, u+url.QueryEscape(id)); err != nil {
				return fmt.Errorf("scenario: fill: %w", err)
			}
		}
	}
	return nil
}

// answer is what the bench reads of a GET /v1/cache answer's headers.
type answer struct{ xcache, owner, node string }

// get reads one URL to the end (so that the connection is reused).
func (h *HTTPHits) get(ctx context.Context, u string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return answer{resp.Header.Get("X-Cache"), resp.Header.Get("X-Cache-Owner"), resp.Header.Get("X-Cache-Node")}, nil
}

// Run reads the keys with opts.Callers callers for opts.Duration.
func (h *HTTPHits) Run(ctx context.Context) *load.Result {
	paths := make([][]string, len(h.urls))
	for i, u := range h.urls {
		for _, id := range h.ids[i] {
			paths[i] = append(paths[i], u+url.QueryEscape(id))
		}
	}
	seen := map[string]int64{}
	counts := make([]map[string]int64, h.opts.Callers)
	for i := range counts {
		counts[i] = map[string]int64{}
	}
	r := load.Run(ctx, load.Config{
		Name: h.system + " http-hit", Callers: h.opts.Callers, Duration: h.opts.Duration,
		Warmup: h.opts.Warmup, Progress: h.opts.Progress,
	}, func(ctx context.Context, caller, i int) error {
		ps := paths[caller%len(paths)]
		a, err := h.get(ctx, ps[(caller*7919+i)%len(ps)])
		if err == nil {
			counts[caller][a.xcache]++
		}
		return err
	})
	for _, c := range counts {
		for k, v := range c {
			seen[k] += v
		}
	}
	r.Scenario, r.System, r.Nodes = "http-hit", h.system, len(h.urls)
	if h.c != nil {
		r.Nodes = len(h.c.Nodes)
		r.Note("HTTP API of one embedded node served in this process; keys it owns")
	}
	for _, ids := range h.ids {
		r.Keys += int64(len(ids))
	}
	var kinds []string
	for k := range seen {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if k != "hit" {
			r.Note("%d answers X-Cache: %s", seen[k], k)
		}
	}
	return r
}

// Close stops the servers and the embedded cluster, if any.
func (h *HTTPHits) Close() error {
	var errs []error
	for _, s := range h.servers {
		errs = append(errs, s.Close())
	}
	if h.c != nil {
		errs = append(errs, h.c.Close())
	}
	h.client.CloseIdleConnections()
	return errors.Join(errs...)
}
