package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/golang/groupcache"

	"github.com/cachenode/cachenode/bench/internal/load"
	"github.com/cachenode/cachenode/bench/internal/scenario"
)

// groupcache keeps its pool and groups in package variables (NewHTTPPool
// panics when called twice in a process), so each peer is its own process:
// peer 0 in this one, the others children running this program with
// envGroupcachePeer set (see groupcachePeerMain).
const (
	envGroupcachePeer = "CACHENODE_COMPARE_GROUPCACHE_PEER"
	envValueSize      = "CACHENODE_COMPARE_VALUE_SIZE"
	envFillDelay      = "CACHENODE_COMPARE_FILL_DELAY"

	// groupRemote serves the remote hits: peer 0 creates it with no cache
	// bytes, so it keeps nothing (groupcache's hot cache off) and every Get
	// of another peer's key goes to that peer.
	groupRemote = "rh"
	// groupStampede serves the stampedes, with a cache on every peer.
	groupStampede = "st"
	cacheBytes    = 256 << 20
)

// groupcachePeer is one groupcache process's state: its pool, groups and
// load counter.
type groupcachePeer struct {
	pool   *groupcache.HTTPPool
	groups map[string]*groupcache.Group
	fills  *fillCounter
	mux    *http.ServeMux
}

// keepAliveTransport replaces http.DefaultTransport, which keeps two idle
// connections per host: with 50 callers most requests would open a new
// connection, which measures TCP setup and runs out of ports, not
// groupcache.
func keepAliveTransport() *http.Transport {
	return &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, DisableCompression: true}
}

// newGroupcachePeer creates the pool and groups of this process. remoteBytes
// is the cache size of the remote-hit group.
func newGroupcachePeer(self string, remoteBytes int64, size int, delay time.Duration) *groupcachePeer {
	p := &groupcachePeer{fills: newFillCounter(), groups: map[string]*groupcache.Group{}}
	p.pool = groupcache.NewHTTPPoolOpts(self, nil)
	tr := keepAliveTransport()
	p.pool.Transport = func(context.Context) http.RoundTripper { return tr }
	getter := func(counted bool) groupcache.GetterFunc {
		return func(ctx context.Context, key string, dest groupcache.Sink) error {
			if counted {
				p.fills.add(key)
				if delay > 0 {
					time.Sleep(delay)
				}
			}
			return dest.SetBytes(scenario.Value(key, size))
		}
	}
	p.groups[groupRemote] = groupcache.NewGroup(groupRemote, remoteBytes, getter(false))
	p.groups[groupStampede] = groupcache.NewGroup(groupStampede, cacheBytes, getter(true))
	p.mux = http.NewServeMux()
	p.mux.Handle("/_groupcache/", p.pool)
	p.mux.HandleFunc("POST /ctl/peers", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		p.pool.Set(r.Form["p"]...)
	})
	p.mux.HandleFunc("GET /ctl/stampede", p.serveStampede)
	p.mux.HandleFunc("GET /ctl/fills", func(w http.ResponseWriter, r *http.Request) {
		ids := strings.Split(r.URL.Query().Get("ids"), ",")
		json.NewEncoder(w).Encode(p.fills.of(ids))
	})
	return p
}

func (p *groupcachePeer) get(ctx context.Context, group, id string) error {
	var b []byte
	if err := p.groups[group].Get(ctx, id, groupcache.AllocatingByteSliceSink(&b)); err != nil {
		return err
	}
	if len(b) == 0 {
		return errors.New("groupcache: empty value")
	}
	return nil
}

// serveStampede runs this peer's share of a stampede round and answers
// what it measured.
func (p *groupcachePeer) serveStampede(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	atoi := func(k string) int { n, _ := strconv.Atoi(q.Get(k)); return n }
	start, _ := strconv.ParseInt(q.Get("start"), 10, 64)
	ids := strings.Split(q.Get("ids"), ",")
	run := runStampede(r.Context(), func(ctx context.Context, _ int, id string) error { return p.get(ctx, groupStampede, id) },
		ids, atoi("round"), atoi("first"), atoi("stride"), atoi("total"), time.Unix(0, start))
	json.NewEncoder(w).Encode(run)
}

// groupcachePeerMain runs a child peer: it serves on a loopback port,
// prints its URL, and runs until its stdin closes.
func groupcachePeerMain() int {
	size, _ := strconv.Atoi(os.Getenv(envValueSize))
	delay, _ := time.ParseDuration(os.Getenv(envFillDelay))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "groupcache peer:", err)
		return 1
	}
	self := "http://" + ln.Addr().String()
	p := newGroupcachePeer(self, cacheBytes, size, delay)
	srv := &http.Server{Handler: p.mux}
	go srv.Serve(ln)
	fmt.Println(self)
	io.Copy(io.Discard, os.Stdin)
	srv.Close()
	return 0
}

// groupcacheSystem is peer 0 in this process and the child peers.
type groupcacheSystem struct {
	opts     scenario.Options
	self     *groupcachePeer
	srv      *http.Server
	urls     []string // every peer, 0 first
	children []*exec.Cmd
	stdins   []io.Closer
	ctl      *http.Client
	remote   []string
	round    int
}

func newGroupcache(ctx context.Context, opts scenario.Options) (*groupcacheSystem, error) {
	s := &groupcacheSystem{opts: opts, ctl: &http.Client{Transport: keepAliveTransport()}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.urls = []string{"http://" + ln.Addr().String()}
	s.self = newGroupcachePeer(s.urls[0], 0, opts.ValueSize, opts.FillDelay)
	s.srv = &http.Server{Handler: s.self.mux}
	go s.srv.Serve(ln)
	exe, err := os.Executable()
	if err != nil {
		s.close()
		return nil, err
	}
	for range opts.Nodes - 1 {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), envGroupcachePeer+"=1", envValueSize+"="+strconv.Itoa(opts.ValueSize),
			envFillDelay+"="+opts.FillDelay.String())
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			s.close()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			s.close()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			s.close()
			return nil, err
		}
		s.children = append(s.children, cmd)
		s.stdins = append(s.stdins, stdin)
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			s.close()
			return nil, fmt.Errorf("groupcache peer: %w", err)
		}
		s.urls = append(s.urls, strings.TrimSpace(line))
	}
	s.self.pool.Set(s.urls...)
	for _, u := range s.urls[1:] {
		resp, err := s.ctl.PostForm(u+"/ctl/peers", url.Values{"p": s.urls})
		if err != nil {
			s.close()
			return nil, err
		}
		resp.Body.Close()
	}
	for i := 0; len(s.remote) < opts.Keys; i++ {
		id := "k" + strconv.Itoa(i)
		if _, remote := s.self.pool.PickPeer(id); remote {
			s.remote = append(s.remote, id)
		}
	}
	for _, id := range s.remote {
		if err := s.self.get(ctx, groupRemote, id); err != nil {
			s.close()
			return nil, fmt.Errorf("groupcache: fill %s: %w", id, err)
		}
	}
	return s, nil
}

func (s *groupcacheSystem) name() string { return "groupcache" }

func (s *groupcacheSystem) remoteHit(ctx context.Context) *load.Result {
	r := load.Run(ctx, load.Config{
		Name: "groupcache remote-hit", Callers: s.opts.Callers, Duration: s.opts.Duration,
		Warmup: s.opts.Warmup, Progress: s.opts.Progress,
	}, getLoop(s.remote, func(ctx context.Context, id string) error { return s.self.get(ctx, groupRemote, id) }))
	r.Scenario, r.System, r.Nodes, r.Keys = scenario.RemoteHit.Name(), s.name(), len(s.urls), int64(len(s.remote))
	return r
}

// stampede runs caller c on peer c mod peers: peer 0's callers here, the
// others' in the children, all starting at the same instant.
func (s *groupcacheSystem) stampede(ctx context.Context, keys, callers int) *load.Result {
	s.round++
	ids := make([]string, keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("g%d-%d", s.round, i)
	}
	joined := strings.Join(ids, ",")
	start := time.Now().Add(100 * time.Millisecond)
	runs := make([]stampedeRun, len(s.urls))
	errs := make([]error, len(s.urls))
	var wg sync.WaitGroup
	for i, u := range s.urls {
		wg.Go(func() {
			if i == 0 {
				runs[0] = runStampede(ctx, func(ctx context.Context, _ int, id string) error { return s.self.get(ctx, groupStampede, id) },
					ids, s.round, 0, len(s.urls), callers, start)
				return
			}
			q := url.Values{"ids": {joined}, "round": {strconv.Itoa(s.round)}, "first": {strconv.Itoa(i)},
				"stride": {strconv.Itoa(len(s.urls))}, "total": {strconv.Itoa(callers)}, "start": {strconv.FormatInt(start.UnixNano(), 10)}}
			errs[i] = s.getJSON(ctx, u+"/ctl/stampede?"+q.Encode(), &runs[i])
		})
	}
	wg.Wait()
	h := load.NewHistogram()
	var ops, failed int64
	end := start
	for i, run := range runs {
		if errs[i] != nil {
			failed += int64(callers / len(s.urls) * keys)
			continue
		}
		if run.hist == nil && run.Hist != nil {
			run.hist = hdrhistogram.Import(run.Hist)
		}
		if run.hist != nil {
			h.Merge(run.hist)
		}
		ops += run.Ops
		failed += run.Errors
		if e := time.Unix(0, run.End); e.After(end) {
			end = e
		}
	}
	r := load.NewResult(h, ops, end.Sub(start))
	r.Scenario, r.System, r.Nodes, r.Callers, r.Errors = scenario.StampedeName(keys), s.name(), len(s.urls), callers, failed
	byKey := s.self.fills.of(ids)
	for _, u := range s.urls[1:] {
		var m map[string]int
		if err := s.getJSON(ctx, u+"/ctl/fills?"+url.Values{"ids": {joined}}.Encode(), &m); err != nil {
			r.Note("fills of %s unknown: %v", u, err)
			continue
		}
		for k, v := range m {
			byKey[k] += v
		}
	}
	fillFigures(r, ids, byKey)
	r.Figure("round_ms", float64(end.Sub(start).Microseconds())/1e3)
	for _, err := range errs {
		if err != nil {
			r.Note("a peer's share failed: %v", err)
		}
	}
	return r
}

func (s *groupcacheSystem) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := s.ctl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (s *groupcacheSystem) close() error {
	for _, in := range s.stdins {
		in.Close()
	}
	for _, c := range s.children {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Process.Kill()
			<-done
		}
	}
	if s.srv != nil {
		return s.srv.Close()
	}
	return nil
}
