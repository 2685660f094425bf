package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:9000/foos":                           "http://127.0.0.1:9000/foos",
		"https://user:pass@api.example/v1?api_key=abc&x=1&x=2": "https://xxxxx@api.example/v1?api_key=xxxxx&x=xxxxx&x=xxxxx",
		"https://TOKEN@api.example/v1":                         "https://xxxxx@api.example/v1",
		"http://h/p?k=v#frag":                                  "http://h/p?k=xxxxx",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := redactURL(u); got != want {
			t.Errorf("redactURL(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestOriginErrorsHoldNoURL: whatever goes wrong with an origin, the
// getter's error says what kind of failure it was and holds no part of the
// request's URL (the origin's secrets, the read's arguments).
func TestOriginErrorsHoldNoURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/503":
			w.WriteHeader(503)
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		case "/hangup":
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close()
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	slowClient := newOriginClient()
	slowClient.Transport.(*http.Transport).ResponseHeaderTimeout = 50 * time.Millisecond
	for _, tc := range []struct {
		base   string
		client *http.Client
		want   string
	}{
		{srv.URL + "/503", nil, "origin answered 503: asked to slow down, retry after 0s"}, // back-pressure (issue 21): origin_busy
		{"http://" + dead + "/x", nil, "origin unreachable: connection refused"},
		{srv.URL + "/slow", slowClient, "origin unreachable: timeout"},
		{srv.URL + "/hangup", nil, "origin unreachable: connection closed"},
		{srv.URL + "/loop", nil, "origin unreachable: redirected more than 3 times"},
	} {
		c := tc.client
		if c == nil {
			c = newOriginClient()
		}
		g, err := newOriginGetter(tc.base+"?api_key=SECRETKEY", c, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.Get(context.Background(), worker.Args{"who": "ARGVALUE"})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.base, err, tc.want)
		}
		for _, s := range []string{"SECRETKEY", "ARGVALUE", strings.TrimPrefix(srv.URL, "http://"), dead} {
			if err != nil && strings.Contains(err.Error(), s) {
				t.Errorf("%s: the error %q holds %q", tc.base, err, s)
			}
		}
	}
	// A fill past its deadline keeps its context error: the HTTP API answers
	// 504 fill_timeout for it.
	g, _ := newOriginGetter(srv.URL+"/slow?api_key=SECRETKEY", newOriginClient(), 0, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.Get(ctx, worker.Args{}); !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "SECRETKEY") {
		t.Errorf("past the deadline: %v", err)
	}
}

// FuzzLimitsConfig: the limits block of the config file, as the YAML
// decoder and build read it: an error, never a panic; accepted bounds are
// usable.
func FuzzLimitsConfig(f *testing.F) {
	for _, s := range [][2]string{{"64", "8KiB"}, {"0", "1"}, {"-1", "1GiB"}, {"1e9", "2GiB"}, {"x", "8 KiB"}, {"99999999999999999999", "9223372036854775807"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, maxArgs, maxBytes string) {
		var fc fileConfig
		doc := "limits:\n  max_args: " + maxArgs + "\n  max_arg_bytes: " + maxBytes + "\n"
		if err := decodeYAML(strings.NewReader(doc), &fc); err != nil {
			return
		}
		l, err := fc.Limits.build()
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "limits.") {
				t.Fatalf("error %q: not one line naming the field", err)
			}
			return
		}
		if l.MaxArgs < 1 || l.MaxArgBytes < 1 || l.MaxArgBytes > 1<<30 || l.Validate() != nil {
			t.Fatalf("%q, %q accepted as %+v", maxArgs, maxBytes, l)
		}
	})
}

// hostOrigin is an HTTP origin that records the most requests it had in
// flight at once, over all its paths, and answers 503 with Retry-After to
// ?mode=busy.
type hostOrigin struct {
	mu       sync.Mutex
	inFlight int
	peak     int
	calls    int
}

func (o *hostOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.inFlight++
	o.calls++
	o.peak = max(o.peak, o.inFlight)
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.inFlight--
		o.mu.Unlock()
	}()
	if r.URL.Query().Get("mode") == "busy" {
		w.Header().Set("Retry-After", "3")
		http.Error(w, "too busy", http.StatusServiceUnavailable)
		return
	}
	time.Sleep(20 * time.Millisecond)
	fmt.Fprintf(w, "%s %s", r.URL.Path, r.URL.RawQuery)
}

// startFromYAML starts a node from a config file's text.
func startFromYAML(t *testing.T, yaml string) *running {
	t.Helper()
	var fc fileConfig
	if err := decodeYAML(strings.NewReader(yaml), &fc); err != nil {
		t.Fatal(err)
	}
	rc, err := resolve(fc, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := startNode(rc, slog.New(slog.DiscardHandler), newOriginClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.stop(time.Second) })
	return r
}

// TestOriginLimitIsPerHost: two workers whose origins are on one host
// share its max_concurrent_fills; an origin's 503 with Retry-After is
// answered 503 origin_busy with that Retry-After and not cached.
func TestOriginLimitIsPerHost(t *testing.T) {
	o := &hostOrigin{}
	srv := httptest.NewServer(o)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	r := startFromYAML(t, fmt.Sprintf(`
name: lim
gossip: 127.0.0.1:0
peer: 127.0.0.1:0
http: 127.0.0.1:0
data: ""
membership: local
origin_limits:
  max_concurrent_fills: 64
  hosts:
    %q: {max_concurrent_fills: 3}
workers:
  a: {origin: %s/a, expires: 1h, tick: 1s}
  b: {origin: %s/b, expires: 1h, tick: 1s}
  c: {origin: %s/c}
`, host, srv.URL, srv.URL, srv.URL))
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			label := []string{"a", "b"}[i%2]
			resp, err := http.Get(fmt.Sprintf("%s/v1/cache/%s?id=%d", r.httpURL, label, i))
			if err != nil {
				errs <- err.Error()
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- resp.Status
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("a read failed: %s", e)
	}
	o.mu.Lock()
	peak := o.peak
	o.mu.Unlock()
	t.Logf("origin peak %d over two workers", peak)
	if peak > 3 {
		t.Errorf("the origin host saw %d requests at once; its limit is 3 for both workers", peak)
	}

	// The origin's 503 pauses the host for 3 s: a read of another worker
	// of the host, whose budget (1 s) ends within the pause, is answered
	// origin_busy without reaching the origin.
	for i, want := range []string{"3", "1 2 3"} { // the second: what is left of the pause
		resp, err := http.Get(fmt.Sprintf("%s/v1/cache/c?mode=busy&n=%d", r.httpURL, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), `"origin_busy"`) || !slices.Contains(strings.Fields(want), resp.Header.Get("Retry-After")) {
			t.Errorf("read %d answered %d %s, Retry-After %q; want 503 origin_busy, Retry-After %s", i, resp.StatusCode, b, resp.Header.Get("Retry-After"), want)
		}
	}
	o.mu.Lock()
	calls := o.calls
	o.mu.Unlock()
	if calls != 201 {
		t.Errorf("%d origin calls, want 201 (200 reads and one 503)", calls)
	}
}

// TestOriginConfigFields: the issue-21 fields of the file reach the
// workers and their limiters.
func TestOriginConfigFields(t *testing.T) {
	var fc fileConfig
	err := decodeYAML(strings.NewReader(`
insecure: true
origin_limits:
  max_concurrent_fills: 10
  refresh_spread: 0s
  hosts:
    "db:8000": {max_concurrent_fills: 2, max_queued_fills: 5}
max_concurrent_requests: 100
workers:
  a: {origin: "http://db:8000/a", refresh_if_read_within: 10m}
  b: {origin: "http://db:8000/b", refresh_unread: true}
  c: {origin: "https://other/c"}
`), &fc)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := resolve(fc, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Limiters) != 2 || rc.MaxConcurrentRequests != 100 {
		t.Fatalf("limiters %v, max_concurrent_requests %d", rc.Limiters, rc.MaxConcurrentRequests)
	}
	db, other := rc.Limiters["db:8000"], rc.Limiters["other:443"]
	if c := db.Config(); c.MaxConcurrent != 2 || c.MaxQueue != 5 || c.RefreshSpread >= 0 {
		t.Errorf("db:8000 limiter %+v, want 2 in flight, 5 queued, no spreading", c)
	}
	if c := other.Config(); c.MaxConcurrent != 10 || c.RefreshSpread >= 0 {
		t.Errorf("other:443 limiter %+v, want the defaults of origin_limits", c)
	}
	d := rc.Node.Defaults
	a := rc.Workers["a"].workerDef("a", d, nil, db)
	b := rc.Workers["b"].workerDef("b", d, nil, db)
	c := rc.Workers["c"].workerDef("c", d, nil, other)
	if a.RefreshIfReadWithin != 10*time.Minute || b.RefreshIfReadWithin >= 0 || c.RefreshIfReadWithin != 0 || a.Limiter != db {
		t.Errorf("refresh_if_read_within: a %v, b %v, c %v", a.RefreshIfReadWithin, b.RefreshIfReadWithin, c.RefreshIfReadWithin)
	}
}
