package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cachenode/cachenode/node"
	"github.com/cachenode/cachenode/worker"
)

// demo runs three nodes and a small origin in this process on loopback,
// with two workers and an invalidation rule, and prints what to try.
func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	port := fs.Int("port", 8081, "HTTP port of the first node; the others take the next ones, the origin takes 9000 (any free port when taken; 0: free ports for all)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "cachenode: demo: log-level: %v\n", err)
		return 2
	}
	log := newLogger(stderr, lvl)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	origin := newDemoOrigin()
	originAddr := "127.0.0.1:9000"
	if *port == 0 {
		originAddr = "127.0.0.1:0"
	}
	oln, err := listenPreferred(originAddr)
	if err != nil {
		fmt.Fprintf(stderr, "cachenode: demo: origin: %v\n", err)
		return 1
	}
	originURL := "http://" + oln.Addr().String()
	osrv := &http.Server{Handler: origin, ReadHeaderTimeout: 5 * time.Second}
	go osrv.Serve(oln)
	defer osrv.Close()

	var nodes []*running
	stopAll := func() {
		for _, r := range slices.Backward(nodes) {
			r.stop(5 * time.Second)
		}
	}
	stopping := false // set once the graceful stop below has begun
	defer func() {
		if !stopping {
			stopAll()
		}
	}()
	client := newOriginClient()
	for i := range 3 {
		name := "n" + strconv.Itoa(i+1)
		httpAddr := "127.0.0.1:0"
		if *port != 0 {
			httpAddr = "127.0.0.1:" + strconv.Itoa(*port+i)
			if ln, err := net.Listen("tcp", httpAddr); err == nil {
				ln.Close()
			} else {
				httpAddr = "127.0.0.1:0"
			}
		}
		rc := demoConfig(name, httpAddr, originURL)
		if len(nodes) > 0 {
			rc.Node.Join = []string{nodes[0].node.GossipAddr()}
		}
		r, err := startNode(rc, log.With("node", name), client)
		if err != nil {
			fmt.Fprintf(stderr, "cachenode: demo: %s: %v\n", name, err)
			return 1
		}
		nodes = append(nodes, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range nodes {
		if err := waitAgreed(ctx, r.node, len(nodes)); err != nil {
			fmt.Fprintf(stderr, "cachenode: demo: %s did not join: %v\n", r.node.Name(), err)
			return 1
		}
	}
	origin.setNotify(nodes[0].httpURL)
	printDemo(stdout, originURL, nodes)
	select {
	case <-sigs:
	case err := <-nodes[0].served:
		fmt.Fprintf(stderr, "cachenode: demo: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "\nstopping the demo cluster…")
	stopping = true
	done := make(chan struct{})
	go func() {
		stopAll()
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-sigs:
		return 1
	}
}

// waitAgreed waits until n is ready and its ring has size members.
func waitAgreed(ctx context.Context, n *node.Node, size int) error {
	for {
		if r := n.Ring(); n.Ready() && r != nil && r.Len() == size {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func listenPreferred(addr string) (net.Listener, error) {
	if ln, err := net.Listen("tcp", addr); err == nil {
		return ln, nil
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

func demoConfig(name, httpAddr, origin string) *runConfig {
	t := true
	rel := worker.ConfigDuration(30 * time.Second)
	defaults := worker.DefaultPolicy()
	// A first read on a slow machine (a race-built binary on a busy CI
	// runner) may need more than the default second to start everything up.
	defaults.TickAmount = 30
	return &runConfig{
		Node: node.Config{
			Name: name, Gossip: "127.0.0.1:0", Peer: "127.0.0.1:0", Memory: 64 << 20,
			Membership: node.LocalMembership(), Defaults: defaults,
		},
		HTTP: httpAddr,
		Workers: map[string]workerConfig{
			"all_foos": {Origin: origin + "/foos",
				policyConfig: policyConfig{Expires: ptr(worker.ConfigDuration(time.Hour)), RelevanceInvalidation: &t, RelevanceExpires: &rel}},
			"filtered_foos": {Origin: origin + "/foos/filter",
				policyConfig: policyConfig{Expires: ptr(worker.ConfigDuration(time.Hour))}},
		},
		Rules: map[string]map[string]ruleConfig{
			"Foo": {"all_foos": {IsEmpty: true}, "filtered_foos": {Args: []string{"attr1", "attr2"}}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func printDemo(w io.Writer, origin string, nodes []*running) {
	n1 := nodes[0].httpURL
	fmt.Fprintf(w, "cachenode demo: %d nodes and a demo origin on loopback (Ctrl-C stops them)\n\n", len(nodes))
	fmt.Fprintf(w, "  origin   %-26s the \"database\" of Foo records: /foos, /foos/filter?attr1=&attr2=\n", origin)
	for _, r := range nodes {
		fmt.Fprintf(w, "  node %-3s %-26s admin page: %s/admin/\n", r.node.Name(), r.httpURL, r.httpURL)
	}
	fmt.Fprintf(w, `
Workers: all_foos (every Foo; soft TTL 30s) and filtered_foos (Foos by attr1 and attr2).
Rule: a change of a Foo refreshes all_foos and the filtered_foos variants of its old and new attributes.

Try:
  # a cached read: run it twice (X-Cache: miss, then hit); X-Cache-Owner is the node that filled it
  curl -i '%[1]s/v1/cache/filtered_foos?attr1=red&attr2=small'
  # the same key through another node: same X-Cache-Key, same owner, no new origin request
  curl -i '%[2]s/v1/cache/filtered_foos?attr1=red&attr2=small'
  # lists are repeated parameters; _entity=1 returns the entry with its metadata
  curl -s '%[1]s/v1/cache/filtered_foos?attr1=red&attr1=blue&_entity=1'
  # change a Foo in the origin: it sends the change event to the cluster, which
  # refreshes exactly the affected variants on every node (watch the values change)
  curl -s -X POST '%[3]s/foos/1?attr1=blue'
  curl -s '%[2]s/v1/cache/filtered_foos?attr1=blue&attr2=small'
  # or send an invalidation yourself
  curl -s -X POST %[1]s/v1/invalidate -H 'Content-Type: application/json' -d '{"label": "all_foos"}'
  curl -s -X POST %[1]s/v1/invalidate -H 'Content-Type: application/json' -d '{"model": "Foo", "changes": [{"op": "update", "old": {"attr1": "green", "attr2": "large"}, "new": {"attr1": "red", "attr2": "large"}}]}'
  # the ring, the members, the workers and the records: open %[1]s/admin/ in a browser, or
  go run ./cmd/cachenode ring --http %[4]s
  curl -s %[1]s/admin/records
  # the origin's request count: one per key and per refresh, however many reads
  curl -s %[3]s/stats
`, n1, nodes[len(nodes)-1].httpURL, origin, strings.TrimPrefix(n1, "http://"))
}

// demoOrigin is the demo's "database": Foo records with a name and two
// attributes, served as JSON, and changed by POST /foos/{id}, which then
// sends the change event to the cluster as an application would.
type demoOrigin struct {
	mux      *http.ServeMux
	requests atomic.Int64
	mu       struct {
		sync.Mutex
		foos   []demoFoo // guarded by mu
		notify string    // a node's HTTP URL; guarded by mu
	}
}

type demoFoo struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Attr1 string `json:"attr1"`
	Attr2 string `json:"attr2"`
}

func newDemoOrigin() *demoOrigin {
	o := &demoOrigin{mux: http.NewServeMux()}
	o.mu.foos = []demoFoo{
		{1, "anchor", "red", "small"}, {2, "bolt", "red", "large"}, {3, "cog", "blue", "small"},
		{4, "dowel", "green", "large"}, {5, "eyelet", "blue", "large"}, {6, "flange", "green", "small"},
	}
	o.mux.HandleFunc("GET /foos", o.all)
	o.mux.HandleFunc("GET /foos/filter", o.filter)
	o.mux.HandleFunc("POST /foos/{id}", o.update)
	o.mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSONTo(w, http.StatusOK, map[string]any{"origin_requests": o.requests.Load()})
	})
	return o
}

func (o *demoOrigin) setNotify(url string) {
	o.mu.Lock()
	o.mu.notify = url
	o.mu.Unlock()
}

func (o *demoOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) { o.mux.ServeHTTP(w, r) }

func (o *demoOrigin) all(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	time.Sleep(50 * time.Millisecond) // a database takes a moment
	o.mu.Lock()
	foos := slices.Clone(o.mu.foos)
	o.mu.Unlock()
	writeJSONTo(w, http.StatusOK, map[string]any{"foos": foos, "built_at": time.Now().Format(time.RFC3339Nano)})
}

func (o *demoOrigin) filter(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	time.Sleep(50 * time.Millisecond)
	q := r.URL.Query()
	o.mu.Lock()
	var out []demoFoo
	for _, f := range o.mu.foos {
		if matches(q["attr1"], f.Attr1) && matches(q["attr2"], f.Attr2) {
			out = append(out, f)
		}
	}
	o.mu.Unlock()
	if out == nil {
		out = []demoFoo{}
	}
	writeJSONTo(w, http.StatusOK, map[string]any{"foos": out, "built_at": time.Now().Format(time.RFC3339Nano)})
}

// matches: an absent argument does not constrain the attribute.
func matches(want []string, v string) bool {
	return len(want) == 0 || slices.Contains(want, v)
}

func (o *demoOrigin) update(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSONTo(w, http.StatusBadRequest, map[string]string{"error": "bad id", "code": "bad_request"})
		return
	}
	q := r.URL.Query()
	o.mu.Lock()
	i := slices.IndexFunc(o.mu.foos, func(f demoFoo) bool { return f.ID == id })
	if i < 0 {
		o.mu.Unlock()
		writeJSONTo(w, http.StatusNotFound, map[string]string{"error": "no such foo", "code": "not_found"})
		return
	}
	old := o.mu.foos[i]
	nf := old
	if v := q.Get("attr1"); v != "" {
		nf.Attr1 = v
	}
	if v := q.Get("attr2"); v != "" {
		nf.Attr2 = v
	}
	if v := q.Get("name"); v != "" {
		nf.Name = v
	}
	o.mu.foos[i] = nf
	notify := o.mu.notify
	o.mu.Unlock()
	// The change is committed: tell the cache, as a model signal would.
	ev := map[string]any{"model": "Foo", "changes": []map[string]any{{"op": "update",
		"old": map[string]any{"id": old.ID, "attr1": old.Attr1, "attr2": old.Attr2},
		"new": map[string]any{"id": nf.ID, "attr1": nf.Attr1, "attr2": nf.Attr2}}}}
	body, _ := json.Marshal(ev)
	resp, err := http.Post(notify+"/v1/invalidate", "application/json", bytes.NewReader(body))
	if err != nil {
		writeJSONTo(w, http.StatusBadGateway, map[string]any{"foo": nf, "invalidation_error": err.Error()})
		return
	}
	defer resp.Body.Close()
	var res any
	json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res)
	writeJSONTo(w, http.StatusOK, map[string]any{"old": old, "new": nf, "event": ev, "invalidation": res})
}

func writeJSONTo(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
